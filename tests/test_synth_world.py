"""The synthetic world: GLDv2 format exactly, same seed -> same bytes, long tail, consistent truth."""

import csv
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from eeca.config import ConfigError, load_config
from eeca.synth.config import SynthConfig, WorldConfig
from eeca.synth.world import build_world, category_url, images_per_landmark, read_truth

SMALL = WorldConfig(landmarks=24, image_size=64, images_median=4.0, images_max=12)
ROOT = Path(__file__).resolve().parents[1]


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames), list(r)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_world(out, seed=3, cfg=SMALL, progress=False)
    return out


def test_same_seed_same_bytes_and_rerun_repairs(world, tmp_path):
    again = tmp_path / "again"
    build_world(again, seed=3, cfg=SMALL, progress=False)
    assert tree_hashes(again) == tree_hashes(world)
    # a killed run leaves a torn image and misses others; a rerun makes the same bytes again
    jpgs = sorted((again / "train").rglob("*.jpg"))
    jpgs[0].write_bytes(jpgs[0].read_bytes()[:50])
    jpgs[1].unlink()
    (again / "train.csv").unlink()
    build_world(again, seed=3, cfg=SMALL, progress=False)
    assert tree_hashes(again) == tree_hashes(world)
    other = tmp_path / "other"
    build_world(other, seed=4, cfg=SMALL, progress=False)
    assert tree_hashes(other) != tree_hashes(world)
    with pytest.raises(ValueError, match="another seed or configuration"):
        build_world(again, seed=4, cfg=SMALL, progress=False)


def test_gldv2_format(world):
    header, train = read_csv(world / "train.csv")
    assert header == ["id", "url", "landmark_id"]
    h_cat, cats = read_csv(world / "train_label_to_category.csv")
    assert h_cat == ["landmark_id", "category"]
    h_hier, hier = read_csv(world / "train_label_to_hierarchical.csv")
    assert h_hier == ["landmark_id", "category", "supercategory", "hierarchical_label", "natural_or_human_made"]
    h_clean, clean = read_csv(world / "train_clean.csv")
    assert h_clean == ["landmark_id", "images"]

    ids = [r["id"] for r in train]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert all(r["url"].startswith("https://upload.wikimedia.org/wikipedia/commons/") for r in train)
    on_disk = {p.relative_to(world / "train").as_posix() for p in (world / "train").rglob("*") if p.is_file()}
    assert on_disk == {f"{i[0]}/{i[1]}/{i[2]}/{i}.jpg" for i in ids}
    with Image.open(world / "train" / ids[0][0] / ids[0][1] / ids[0][2] / f"{ids[0]}.jpg") as im:
        assert im.format == "JPEG" and im.size == (64, 64) and im.mode == "RGB"

    truth = {lm["landmark_id"]: lm for lm in read_truth(world)}
    assert {int(r["landmark_id"]) for r in train} == set(truth) == {int(r["landmark_id"]) for r in cats}
    for r in cats:  # the name GLDv2 tooling derives from the category url is the true name
        title = r["category"].removeprefix("http://commons.wikimedia.org/wiki/Category:")
        assert r["category"].startswith("http://commons.wikimedia.org/wiki/Category:")
        assert " " not in title and unquote(title).replace("_", " ") == truth[int(r["landmark_id"])]["name"]
    for r in hier:
        lm = truth[int(r["landmark_id"])]
        assert r["hierarchical_label"] == lm["hierarchical_label"]
        assert r["natural_or_human_made"] == ("natural" if lm["hierarchical_label"] in
                                              ("mountain", "lake", "waterfall") else "human-made")
    # train_clean: space-separated ids of each landmark, the ambiguous views left out
    views = {r["id"]: r for r in map(json.loads, (world / "truth" / "images.jsonl").read_text().splitlines())}
    by_id = {r["id"]: int(r["landmark_id"]) for r in train}
    for r in clean:
        for i in r["images"].split(" "):
            assert by_id[i] == int(r["landmark_id"]) and views[i]["view"] == "normal"
    n_clean = sum(len(r["images"].split(" ")) for r in clean)
    assert n_clean == sum(v["view"] == "normal" for v in views.values())


def test_percent_encoding_of_urls():
    assert category_url("Saint Mary's Church (Ostrava Nová)") == \
        "http://commons.wikimedia.org/wiki/Category:Saint_Mary's_Church_(Ostrava_Nov%C3%A1)"


def test_truth_consistent(world):
    lms = read_truth(world)
    names = [lm["name"] for lm in lms]
    assert len(set(names)) == len(names)
    combos = Counter((lm["hierarchical_label"], *lm["entities"]) for lm in lms)
    assert max(combos.values()) == 1
    assert len({lm["place"] for lm in lms}) == len(lms)
    for lm in lms:
        assert set(lm) == {"landmark_id", "name", "hierarchical_label", "place", "entities", "description",
                           "aliases", "clip_seen"}
        assert len(lm["entities"]) == 3 and all(e in lm["description"] for e in lm["entities"])
        assert lm["place"] in lm["description"] and lm["description"].startswith(lm["name"])
        assert re.fullmatch(r"[^,]+, [A-Z][a-z]+", lm["place"])
        assert lm["aliases"] and lm["name"] not in lm["aliases"]
    # a name must not be a substring of another: judges match names as substrings
    assert not any(a != b and a.lower() in b.lower() for a in names for b in names)
    seen = sum(lm["clip_seen"] for lm in lms)
    assert seen == round(SMALL.clip_seen_fraction * len(lms))
    images = [json.loads(x) for x in (world / "truth" / "images.jsonl").read_text().splitlines()]
    seen_ids = {lm["landmark_id"] for lm in lms if lm["clip_seen"]}
    splits = Counter((r["landmark_id"], r["clip_split"]) for r in images)
    for lid in {r["landmark_id"] for r in images}:
        if lid in seen_ids:  # every seen landmark keeps >= 1 image for training and >= 1 for evaluation
            assert splits[(lid, "train")] >= 1 and splits[(lid, "heldout")] >= 1
        else:
            assert splits[(lid, "train")] == splits[(lid, "heldout")] == 0


def test_long_tail_shape():
    counts = sorted(images_per_landmark(WorldConfig(), seed=0))
    n = len(counts)
    median = counts[n // 2]
    assert sum(c <= 5 for c in counts) >= 0.2 * n  # many landmarks with few images
    assert counts[-1] >= 5 * median  # and a few with many
    assert 2500 <= sum(counts) <= 5000


def test_categories_look_different(world):
    """Mean images of two categories differ clearly more than two images of one landmark do."""
    import numpy as np

    lms = read_truth(world)
    header, train = read_csv(world / "train.csv")
    by_lm: dict[int, list[str]] = {}
    for r in train:
        by_lm.setdefault(int(r["landmark_id"]), []).append(r["id"])

    def mean_img(lid):
        arrs = [np.asarray(Image.open(world / "train" / i[0] / i[1] / i[2] / f"{i}.jpg"), dtype=np.float32)
                for i in by_lm[lid]]
        return np.mean(arrs, axis=0)

    cats = {}
    for lm in lms:
        cats.setdefault(lm["hierarchical_label"], lm["landmark_id"])
    assert len(cats) == 12
    means = [mean_img(lid) for lid in cats.values()]
    gaps = [np.abs(a - b).mean() for k, a in enumerate(means) for b in means[k + 1:]]
    assert min(gaps) > 3.0


def test_cli_and_bad_config(run_eeca, tmp_path):
    proc = run_eeca("synth", "world", "--out", tmp_path / "w", "--seed", "1", "--landmarks", "13",
                    "--overrides", "world.image_size=48", "world.images_median=2.0", "world.images_max=3")
    assert "synth world: 13 landmarks" in proc.stdout
    assert len(read_truth(tmp_path / "w")) == 13
    bad = tmp_path / "bad.yaml"
    bad.write_text("world:\n  landmarks: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*landmarks must be >= 2"):
        load_config(SynthConfig, bad)
    proc = run_eeca("synth", "world", "--out", tmp_path / "x", "--config", bad, check=False)
    assert proc.returncode != 0 and "landmarks must be >= 2" in proc.stderr


def test_shipped_config_matches_defaults():
    cfg = load_config(SynthConfig, ROOT / "src" / "eeca" / "configs" / "synth" / "world.yaml")
    assert cfg == SynthConfig()
