"""MGLD stages 2-3 with the template annotator: complete output, exact schema, split, kill -9 resume."""

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from mgld_world import make_world, write_config

from eeca.cli import main
from eeca.config import from_dict
from eeca.mgld.stages import MgldConfig, run_stage2, run_stage3
from eeca.mgld.validate import validate_records

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")
MGLD_KEYS = {"id", "image", "conversations", "landmark_id", "landmark_name", "entities", "hierarchical_label",
             "s_gt", "rsr"}
OUTPUTS = ["train.json", "test.json", "llava_train.json", "llava_test.json", "split.parquet", "test_ids.txt",
           "stage2_failures.jsonl", "stage3_failures.jsonl"]


def test_template_stages_write_complete_mgld_with_split(world, capsys):
    cfg_path = write_config(world["root"] / "mgld.yaml", world["config"])
    assert main(["mgld", "stage2", str(cfg_path)]) == 0
    assert "mgld stage2: 12/12 ok (12 new, 0 resumed, 0 from cache), 0 failed" in capsys.readouterr().out
    assert main(["mgld", "stage3", str(cfg_path)]) == 0
    line = capsys.readouterr().out
    assert "mgld stage3: 12/12 ok" in line and "MGLD train 9, test 3" in line
    out = world["root"] / "out"
    train, test = (json.loads((out / f).read_text()) for f in ("train.json", "test.json"))
    assert len(train) == 9 and len(test) == 3
    assert json.loads((out / "test_eval.json").read_text()) == test  # 3 test records < eval_count 2,500: all
    by_id = {r["id"]: r for r in world["rows"]}
    lms = {m["landmark_id"]: m for m in world["landmarks"]}
    truth = {json.loads(x)["landmark_id"]: json.loads(x)
             for x in (world["root"] / "world/truth/landmarks.jsonl").read_text().splitlines()}
    for rec in train + test:
        assert set(rec) == MGLD_KEYS
        row = by_id[rec["id"]]
        assert (rec["landmark_id"], rec["s_gt"], rec["rsr"]) == (row["landmark_id"], row["s_gt"], row["rsr"])
        assert rec["image"] == f"train/{rec['id'][0]}/{rec['id'][1]}/{rec['id'][2]}/{rec['id']}.jpg"
        assert (world["root"] / "world" / rec["image"]).is_file()
        human, gpt = rec["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n") and gpt["from"] == "gpt"
        t = truth[rec["landmark_id"]]
        assert rec["landmark_name"] == lms[rec["landmark_id"]]["name"]
        assert rec["landmark_name"] in gpt["value"] and t["place"] in gpt["value"]
        assert rec["entities"] == t["entities"] and rec["hierarchical_label"] == t["hierarchical_label"]
    assert validate_records(train + test) == []
    # test landmarks are disjoint from train landmarks; the id file and split.parquet agree
    assert not {r["landmark_id"] for r in test} & {r["landmark_id"] for r in train}
    ids = (out / "test_ids.txt").read_text().split()
    assert ids == sorted(r["id"] for r in test)
    split = pq.read_table(out / "split.parquet").to_pylist()
    assert {r["id"] for r in split if r["split"] == "test"} == set(ids) and len(split) == 12
    for name in ("train", "test"):
        llava = json.loads((out / f"llava_{name}.json").read_text())
        mgld = json.loads((out / f"{name}.json").read_text())
        assert llava == [{"id": r["id"], "image": r["image"], "conversations": r["conversations"]} for r in mgld]
        assert main(["mgld", "validate", str(out / f"llava_{name}.json")]) == 0
    assert (out / "stage2_failures.jsonl").read_text() == ""
    # the questions come from the set, one per sample, and more than one is used
    assert len({r["conversations"][0]["value"] for r in train + test}) > 3


def test_template_from_gldv2_metadata_and_missing_images(tmp_path):
    w = make_world(tmp_path, n=6, truth=False)
    missing = w["rows"][1]["id"]
    (tmp_path / "world" / "train" / missing[0] / missing[1] / missing[2] / f"{missing}.jpg").unlink()
    cfg = from_dict(MgldConfig, w["config"], overrides=["split.test_count=1"])
    s2 = run_stage2(cfg)
    assert (s2["ok"], s2["failed"]) == (5, 1)
    failures = [json.loads(x) for x in (tmp_path / "out/stage2_failures.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failures] == [missing] and failures[0]["reason"].startswith("image missing: ")
    s3 = run_stage3(cfg)
    assert (s3["ok"], s3["failed"], s3["train"] + s3["test"]) == (5, 1, 5)
    f3 = [json.loads(x) for x in (tmp_path / "out/stage3_failures.jsonl").read_text().splitlines()]
    assert [f["id"] for f in f3] == [missing] and f3[0]["reason"].startswith("stage 2 not done: image missing")
    recs = {r["landmark_id"]: r for f in ("train.json", "test.json")
            for r in json.loads((tmp_path / "out" / f).read_text())}
    # landmark 0 is "Karvel Tower 0 (Ostrava)": its place comes from the name's parenthesis
    assert "in Ostrava" in recs[100]["conversations"][1]["value"]
    assert recs[100]["hierarchical_label"] == "place"  # GLDv2 label missing: supercategory stands in
    assert recs[102]["hierarchical_label"] == "bridge"
    assert "human-made structure" in recs[102]["entities"]


def test_bad_inputs_are_errors_naming_file_row_and_field(world):
    import pyarrow as pa

    root = world["root"]
    rows = world["rows"] + [dict(world["rows"][0])]
    pq.write_table(pa.Table.from_pylist(rows), root / "dup.parquet")
    with pytest.raises(ValueError, match=r"dup.parquet: row 12: field 'id': duplicate id .* \(first at row 0\)"):
        run_stage2(from_dict(MgldConfig, world["config"], overrides=[f"stage1={root / 'dup.parquet'}"]))
    rows = [dict(world["rows"][0], landmark_id=999)]
    pq.write_table(pa.Table.from_pylist(rows), root / "lm.parquet")
    with pytest.raises(ValueError, match=r"lm.parquet: row 0: field 'landmark_id': 999 is not in"):
        run_stage2(from_dict(MgldConfig, world["config"], overrides=[f"stage1={root / 'lm.parquet'}"]))
    rows = [dict(world["rows"][0], id="../../etc/passwd")]
    pq.write_table(pa.Table.from_pylist(rows), root / "id.parquet")
    with pytest.raises(ValueError, match=r"field 'id': '../../etc/passwd' is not a GLDv2 id"):
        run_stage2(from_dict(MgldConfig, world["config"], overrides=[f"stage1={root / 'id.parquet'}"]))
    lms = [dict(m) for m in world["landmarks"]]
    lms[2]["name"] = ""
    pq.write_table(pa.Table.from_pylist(lms), root / "names.parquet")
    with pytest.raises(ValueError, match=r"names.parquet: row 2: field 'name' is empty"):
        run_stage2(from_dict(MgldConfig, world["config"], overrides=[f"landmarks={root / 'names.parquet'}"]))
    pq.write_table(pa.table({"landmark_id": [1]}), root / "cols.parquet")
    with pytest.raises(ValueError, match=r"cols.parquet: missing column\(s\) \['id', 's_gt', 'rsr'\]"):
        run_stage2(from_dict(MgldConfig, world["config"], overrides=[f"stage1={root / 'cols.parquet'}"]))
    with pytest.raises(ValueError, match="set exactly one of test_count and test_fraction"):
        # a deep copy: from_dict's overrides write into nested mappings of the dict they are given
        from_dict(MgldConfig, copy.deepcopy(world["config"]), overrides=["split.test_fraction=0.1"])
    with pytest.raises(ValueError, match="stage2.jsonl does not exist: run `eeca mgld stage2`"):
        run_stage3(from_dict(MgldConfig, world["config"]))


def _run(cfg_path, stage, **kw):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(SRC))
    return subprocess.Popen([sys.executable, "-m", "eeca", "mgld", stage, str(cfg_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_kill_9_during_stage2_then_rerun_gives_identical_output(tmp_path):
    w = make_world(tmp_path, n=30)
    ref_cfg = from_dict(MgldConfig, w["config"], overrides=[f"out={tmp_path / 'ref'}"])
    run_stage2(ref_cfg)
    run_stage3(ref_cfg)
    cfg = dict(w["config"], out=str(tmp_path / "killed"))
    cfg["annotator"] = {"backend": "template", "delay_s": 0.05}  # ~1.5 s of stage 2: time to kill it
    cfg_path = write_config(tmp_path / "killed.yaml", cfg)
    store = tmp_path / "killed" / "stage2.jsonl"
    proc = _run(cfg_path, "stage2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists() and store.read_text().count("\n") >= 8:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"stage 2 finished before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = store.read_text().count("\n")
    assert 8 <= done_before < 30
    outs = []
    for stage in ("stage2", "stage3"):
        p = _run(cfg_path, stage)
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out)
    assert f"30/30 ok ({30 - done_before} new, {done_before} resumed" in outs[0]
    for name in OUTPUTS:
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    lines = [json.loads(x) for x in store.read_text().splitlines()]
    assert len(lines) == len({x["id"] for x in lines}) == 30  # no duplicate, no lost row


def test_float32_scores_are_written_as_their_shortest_decimal(tmp_path):
    import pyarrow as pa

    w = make_world(tmp_path, n=4)
    t = pq.read_table(tmp_path / "stage1.parquet")
    t = t.set_column(2, "s_gt", t.column("s_gt").cast(pa.float32()))
    pq.write_table(t, tmp_path / "stage1.parquet")
    cfg = from_dict(MgldConfig, w["config"], overrides=["split.test_count=1"])
    run_stage2(cfg)
    run_stage3(cfg)
    recs = json.loads((tmp_path / "out/train.json").read_text()) + json.loads((tmp_path / "out/test.json").read_text())
    assert sorted(r["s_gt"] for r in recs) == [0.2, 0.21, 0.22, 0.23]


def test_dry_run_prices_the_requests_and_sends_nothing(world, capsys):
    from eeca.mgld.estimate import image_tokens

    cfg = {**world["config"], "annotator": {"backend": "openai", "model": "gpt-4o", "base_url": "http://127.0.0.1:9",
                                            "max_tokens": 100, "image_detail": "high"}}
    cfg_path = write_config(world["root"] / "mgld-openai.yaml", cfg)
    assert main(["mgld", "stage2", str(cfg_path), "--dry-run"]) == 0
    line = capsys.readouterr().out
    per_image = image_tokens(24, 16, "high")  # the world's 24 x 16 images: one tile
    assert "mgld stage2 dry run: 12 requests to gpt-4o (0 of 12 samples already done)" in line
    assert f"({12 * per_image} of them images at detail high), at most 1200 output tokens" in line
    assert not (world["root"] / "out").exists()
