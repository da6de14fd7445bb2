"""``eeca gldv2 ingest``: contract tables, long-tail summary, malformed csvs, streaming dedupe."""

import csv
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from cli_env import eeca_env
from eeca.gldv2 import ingest as ingest_mod
from eeca.gldv2.csvfiles import CsvFormatError
from eeca.gldv2.ingest import SeenIds, ingest, landmark_resolver
from gldv2_fixtures import category_url, make_root, write_csv

TITLES = {7: "Eiffel_Tower", 12: "St._Mary%27s_Church_(Dublin)", 30: "%E6%B8%85%E6%B0%B4%E5%AF%BA",
          41: "Lake_Bled"}
HIER = {7: ("tower", "tower", "human-made"), 30: ("temple", "temple", "human-made")}


def _ids(n, seed=0):
    rng = random.Random(seed)
    return [f"{rng.getrandbits(64):016x}" for _ in range(n)]


@pytest.fixture
def world(tmp_path):
    ids = _ids(18)
    # landmark 7: 11 images, 12: 6, 30: 1, 41: none
    images = [(i, 7) for i in ids[:11]] + [(i, 12) for i in ids[11:17]] + [(ids[17], 30)]
    present = set(ids) - {ids[2], ids[12]}
    root = make_root(tmp_path / "gldv2", images, TITLES, HIER, present, clean={7: ids[:3], 12: [ids[11]]})
    return root, images, present


def _skips(out):
    with open(out / "skipped.csv", encoding="utf-8", newline="") as f:
        return [(r["file"], int(r["line"]), r["field"]) for r in csv.DictReader(f)]


def test_ingest_writes_the_contract_tables(world, tmp_path, run_eeca):
    root, images, present = world
    out = tmp_path / "out"
    proc = run_eeca("gldv2", "ingest", root, out)
    lms = pq.read_table(out / "landmarks.parquet")
    assert lms.schema.names == ["landmark_id", "name", "category_url", "supercategory", "hierarchical_label",
                                "natural_or_human_made", "n_images"]
    assert str(lms.schema.field("landmark_id").type) == "int64" and str(lms.schema.field("n_images").type) == "int64"
    assert lms.to_pylist() == [
        {"landmark_id": 7, "name": "Eiffel Tower", "category_url": category_url("Eiffel_Tower"),
         "supercategory": "tower", "hierarchical_label": "tower", "natural_or_human_made": "human-made", "n_images": 11},
        {"landmark_id": 12, "name": "St. Mary's Church (Dublin)", "category_url": category_url(TITLES[12]),
         "supercategory": None, "hierarchical_label": None, "natural_or_human_made": None, "n_images": 6},
        {"landmark_id": 30, "name": "清水寺", "category_url": category_url(TITLES[30]),
         "supercategory": "temple", "hierarchical_label": "temple", "natural_or_human_made": "human-made", "n_images": 1},
        {"landmark_id": 41, "name": "Lake Bled", "category_url": category_url("Lake_Bled"),
         "supercategory": None, "hierarchical_label": None, "natural_or_human_made": None, "n_images": 0},
    ]
    imgs = pq.read_table(out / "images.parquet")
    assert imgs.schema.names == ["id", "landmark_id", "url", "path", "status"]
    assert imgs.to_pylist() == [
        {"id": i, "landmark_id": lm, "url": f"https://upload.wikimedia.org/x/{i}.jpg",
         "path": f"train/{i[0]}/{i[1]}/{i[2]}/{i}.jpg", "status": "ok" if i in present else "missing"}
        for i, lm in images]
    assert pq.read_table(out / "clean.parquet").to_pylist() == (
        [{"id": i, "landmark_id": 7} for i, _ in images[:3]] + [{"id": images[11][0], "landmark_id": 12}])
    assert _skips(out) == []
    # long tail over 4 landmarks with 11, 6, 1, 0 images: two have <= 5, three have <= 10
    assert proc.stdout.strip().splitlines()[-1] == (
        f"gldv2 ingest: 4 landmarks, 18 images (2 missing); landmarks with <= 5 images: 50.0%, <= 10: 75.0%; "
        f"4 clean images; skipped rows: none (see {out / 'skipped.csv'})")


def test_rerun_gives_identical_tables(world, tmp_path):
    root, _, _ = world
    ingest(root, tmp_path / "a")
    ingest(root, tmp_path / "b")
    for name in ("landmarks.parquet", "images.parquet", "clean.parquet", "skipped.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_duplicates_are_found_across_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_mod, "BATCH_ROWS", 5)
    ids = _ids(12, seed=3)
    rows = [(i, 7) for i in ids] + [(ids[0], 7), (ids[11], 7), (ids[4], 7)]
    random.Random(1).shuffle(rows)
    root = make_root(tmp_path / "r", rows, TITLES)
    out = tmp_path / "out"
    ingest(root, out)
    first = list(dict.fromkeys(i for i, _ in rows))
    assert pq.read_table(out / "images.parquet").column("id").to_pylist() == first
    dup_lines = sorted(k + 2 for k, (i, _) in enumerate(rows) if i in {r[0] for r in rows[:k]})
    assert sorted(line for _, line, _ in _skips(out)) == dup_lines
    assert {(f, fld) for f, _, fld in _skips(out)} == {("train.csv", "id")}


def test_seen_ids_matches_a_python_set():
    rng = np.random.default_rng(0)
    seen, naive = SeenIds(), set()
    for _ in range(20):
        keys = rng.integers(0, 300, size=50, dtype=np.uint64) * np.uint64(2**54)  # many repeats, high bits used
        keep = seen.add_new(keys)
        expected = []
        for k in keys.tolist():
            expected.append(k not in naive)
            naive.add(k)
        assert keep.tolist() == expected
    assert all(seen.contains(k) for k in naive) and not seen.contains(2**54 * 301)


HEADER = "id,url,landmark_id\n"
GOOD = "0123456789abcdef,https://x/a.jpg,7\n"


def _train(text):
    return lambda root: (root / "train.csv").write_text(text, encoding="utf-8")


def _file(name, text):
    return lambda root: (root / name).write_text(text, encoding="utf-8")


def _bytes(name, data):
    return lambda root: (root / name).write_bytes(data)


CAT = "train_label_to_category.csv"
HIE = "train_label_to_hierarchical.csv"
CLEAN = "train_clean.csv"

# (case, how to break the root, expected (file, line, field) of the error, or None when it is a skip)
ERRORS = [
    ("train.csv missing", lambda root: (root / "train.csv").unlink(), ("train.csv", None, None)),
    ("train.csv empty", _train(""), ("train.csv", 1, None)),
    ("header lacks url", _train("id,landmark_id\n0123456789abcdef,7\n"), ("train.csv", 1, "url")),
    ("header repeats a column", _train("id,url,id,landmark_id\n"), ("train.csv", 1, "id")),
    ("unclosed quote", _train(HEADER + GOOD + '1123456789abcdef,"https://x/b.jpg,7\n'), ("train.csv", 3, None)),
    ("not UTF-8", _bytes("train.csv", (HEADER + GOOD).encode() + b"1123456789abcdef,https://x/\xff.jpg,7\n"),
     ("train.csv", 3, None)),
    ("hierarchical header lacks a column", _file(HIE, "landmark_id,category,supercategory,natural_or_human_made\n"),
     (HIE, 1, "hierarchical_label")),
    ("category header wrong", _file(CAT, "landmark,category\n7,x\n"), (CAT, 1, "landmark_id")),
    ("hierarchical file missing", lambda root: (root / HIE).unlink(), (HIE, None, None)),
    ("clean header wrong", _file(CLEAN, "landmark_id,ids\n7,0123456789abcdef\n"), (CLEAN, 1, "images")),
]

SKIPS = [
    ("too many fields", _train(HEADER + GOOD + "1123456789abcdef,https://x/b.jpg,7,extra\n"), ("train.csv", 3, "<row>")),
    ("too few fields", _train(HEADER + GOOD + "1123456789abcdef,7\n"), ("train.csv", 3, "<row>")),
    ("id too short", _train(HEADER + GOOD + "123456789abcdef,https://x/b.jpg,7\n"), ("train.csv", 3, "id")),
    ("id upper case", _train(HEADER + GOOD + "1123456789ABCDEF,https://x/b.jpg,7\n"), ("train.csv", 3, "id")),
    ("id escapes the root", _train(HEADER + GOOD + "../../../../etc/x,https://x/b.jpg,7\n"), ("train.csv", 3, "id")),
    ("landmark_id not a number", _train(HEADER + GOOD + "1123456789abcdef,https://x/b.jpg,7a\n"),
     ("train.csv", 3, "landmark_id")),
    ("landmark_id negative", _train(HEADER + GOOD + "1123456789abcdef,https://x/b.jpg,-7\n"),
     ("train.csv", 3, "landmark_id")),
    ("landmark_id without category", _train(HEADER + GOOD + "1123456789abcdef,https://x/b.jpg,99\n"),
     ("train.csv", 3, "landmark_id")),
    ("duplicate id", _train(HEADER + GOOD + GOOD), ("train.csv", 3, "id")),
    ("category url without a name", _file(CAT, f"landmark_id,category\n7,{category_url('Eiffel_Tower')}\n"
                                              "12,https://commons.wikimedia.org/wiki/Dublin\n"), (CAT, 3, "category")),
    ("category landmark repeated", _file(CAT, f"landmark_id,category\n7,{category_url('A')}\n7,{category_url('B')}\n"),
     (CAT, 3, "landmark_id")),
    ("hierarchical row for unknown landmark",
     _file(HIE, "landmark_id,category,supercategory,hierarchical_label,natural_or_human_made\n99,x,a,b,c\n"),
     (HIE, 2, "landmark_id")),
    ("clean id not in train.csv", _file(CLEAN, "landmark_id,images\n7,0123456789abcdef ffffffffffffffff\n"),
     (CLEAN, 2, "images")),
    ("clean id malformed", _file(CLEAN, "landmark_id,images\n7,0123456789abcdef xyz\n"), (CLEAN, 2, "images")),
]


@pytest.fixture
def small_root(tmp_path):
    return make_root(tmp_path / "r", [("0123456789abcdef", 7)], {7: "Eiffel_Tower", 12: "Dublin"})


@pytest.mark.parametrize("case, breaker, where", ERRORS, ids=[c[0] for c in ERRORS])
def test_malformed_file_is_an_error_naming_file_line_and_field(case, breaker, where, small_root, tmp_path):
    breaker(small_root)
    out = tmp_path / "out"
    with pytest.raises(CsvFormatError) as info:
        ingest(small_root, out)
    err = info.value
    assert (err.path.name, err.line, err.field) == where
    assert str(err).startswith(str(small_root / where[0]))
    if where[1]:
        assert f"line {where[1]}" in str(err)
    if where[2]:
        assert f"field '{where[2]}'" in str(err)
    assert not (out / "images.parquet").exists() and not (out / "skipped.csv").exists()


@pytest.mark.parametrize("case, breaker, where", SKIPS, ids=[c[0] for c in SKIPS])
def test_bad_row_is_a_counted_skip(case, breaker, where, small_root, tmp_path):
    breaker(small_root)
    summary = ingest(small_root, tmp_path / "out")
    assert _skips(tmp_path / "out") == [where]
    assert summary.skipped == {where[0]: 1}
    ids = pq.read_table(tmp_path / "out" / "images.parquet").column("id").to_pylist()
    assert "0123456789abcdef" in ids or where[0] == CAT  # the good row survives its neighbour


def test_cli_reports_a_bad_file_without_a_traceback(small_root, tmp_path, run_eeca):
    write_csv(small_root / "train.csv", ("id", "landmark_id"), [("0123456789abcdef", 7)])
    proc = run_eeca("gldv2", "ingest", small_root, tmp_path / "out", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{small_root / 'train.csv'}: line 1: field 'url': required column missing" in proc.stderr


def test_bom_crlf_and_quoted_fields_are_read(small_root, tmp_path):
    url = category_url("Church_of_St._Nicholas,_Kyiv")
    (small_root / CAT).write_bytes(f'\ufefflandmark_id,category\r\n7,"{url}"\r\n'.encode())
    (small_root / "train.csv").write_bytes(b'\xef\xbb\xbfid,url,landmark_id\r\n0123456789abcdef,"https://x/a,b.jpg",7\r\n')
    ingest(small_root, tmp_path / "out")
    assert pq.read_table(tmp_path / "out" / "landmarks.parquet").column("name").to_pylist() == [
        "Church of St. Nicholas, Kyiv"]
    assert pq.read_table(tmp_path / "out" / "images.parquet").column("url").to_pylist() == ["https://x/a,b.jpg"]


def test_a_failed_run_keeps_the_previous_outputs(small_root, tmp_path):
    out = tmp_path / "out"
    ingest(small_root, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (small_root / HIE).write_text("landmark_id\n", encoding="utf-8")
    with pytest.raises(CsvFormatError):
        ingest(small_root, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_kill_9_mid_ingest_then_rerun_gives_the_uninterrupted_output(tmp_path):
    ids = _ids(60_000, seed=5)
    root = make_root(tmp_path / "r", [(i, 7 + (k % 3) * 5) for k, i in enumerate(ids)], TITLES, present=set())
    ingest(root, tmp_path / "reference")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "eeca", "gldv2", "ingest", str(root), str(out)], env=eeca_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(out.glob("images.parquet.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "images.parquet").exists() and list(out.glob("*.tmp-*"))  # killed mid-way
    ingest(root, out)
    assert sorted(p.name for p in out.iterdir()) == ["images.parquet", "landmarks.parquet", "skipped.csv"]
    for name in ("images.parquet", "landmarks.parquet", "skipped.csv"):
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes()


def test_landmark_resolver_matches_parsing():
    resolve = landmark_resolver({7: ("u", "n"), 120: ("u", "n")})
    assert resolve("7") == 7 and resolve("007") == 7 and resolve("120") == 120
    for bad, reason in [("8", "no usable row"), ("x", "non-negative integer"), ("-7", "non-negative integer"),
                        ("", "non-negative integer"), ("٧", "non-negative integer"), (str(2**63), "non-negative")]:
        with pytest.raises(ValueError, match=reason):
            resolve(bad)
