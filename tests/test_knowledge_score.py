"""eeca score: CLIP S / rank / RSR files, skips, kill -9 resume, several processes (paper section 3.1)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from cli_env import eeca_env
from eeca.config import ConfigError, from_dict
from eeca.knowledge.score import ScoreConfig, run_score
from knowledge_helpers import make_landmarks, make_tiny_clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture
def world(tmp_path):
    images, landmarks = make_landmarks(tmp_path / "data", n_landmarks=7, per_landmark=5,
                                       names=["tower a", "tower b", "old bridge", "old bridge", "lake x",
                                              "a very long landmark name over the limit", "mill"])
    return images, landmarks, tmp_path / "data"


def cfg(clip_dir, **kw):
    return from_dict(ScoreConfig, {"model": str(clip_dir), "num_workers": 0, "shard_size": 8, **kw})


def read_emb(out: Path, kind: str):
    files = sorted((out / "emb").glob(f"{kind}-*.npy"))
    emb = np.concatenate([np.load(f) for f in files])
    meta = [pq.read_table(f.with_suffix(".parquet")) for f in files]
    return emb, meta


def test_scores_match_hf_clip_and_the_definition(clip_dir, world, tmp_path):
    images, landmarks, root = world
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="1 of 7 names are longer"):
        summary = run_score(cfg(clip_dir, image_batch_size=3, dtype="float32"), images, landmarks, root, out)
    scores = pq.read_table(out / "scores.parquet").to_pylist()
    img = pq.read_table(images).to_pylist()
    lms = pq.read_table(landmarks).to_pylist()
    assert [r["id"] for r in scores] == [r["id"] for r in img]  # input order, every image
    assert summary["scored"] == 35 and summary["skipped"] == 0 and summary["names_truncated"] == 1

    # independent reference: HF CLIPModel one image at a time, names in one batch
    model, proc = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)
    with torch.no_grad():
        ref_img = torch.cat([model.get_image_features(**proc(images=Image.open(root / r["path"]).convert("RGB"),
                                                             return_tensors="pt")).pooler_output for r in img])
        tok = proc.tokenizer([r["name"] for r in lms], padding=True, truncation=True, max_length=16,
                             return_tensors="pt")
        ref_txt = model.get_text_features(**tok).pooler_output
    ref_img = torch.nn.functional.normalize(ref_img, dim=-1).numpy()
    ref_txt = torch.nn.functional.normalize(ref_txt, dim=-1).numpy()
    img_emb, _ = read_emb(out, "image")
    name_emb, _ = read_emb(out, "name")
    assert img_emb.dtype == np.float16 and name_emb.dtype == np.float16
    np.testing.assert_allclose(img_emb, ref_img, atol=2e-3)
    np.testing.assert_allclose(name_emb, ref_txt, atol=2e-3)
    assert (name_emb[2] == name_emb[3]).all()  # duplicate names: identical embeddings

    # rank by the definition on the stored embeddings, full matrix
    gt = np.array([[r["landmark_id"] for r in lms].index(r["landmark_id"]) for r in img])
    sims = img_emb.astype(np.float32) @ name_emb.astype(np.float32).T
    s_gt = sims[np.arange(len(gt)), gt]
    np.testing.assert_array_equal([r["rank"] for r in scores], 1 + (sims > s_gt[:, None]).sum(1))
    np.testing.assert_allclose([r["s_gt"] for r in scores], s_gt, rtol=1e-6)
    np.testing.assert_allclose([r["rsr"] for r in scores], 1 - (1 + (sims > s_gt[:, None]).sum(1) - 1) / 6)
    assert [r["top1_landmark_id"] for r in scores] == [lms[i]["landmark_id"] for i in sims.argmax(1)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_bf16_on_gpu_agrees_with_float32(clip_dir, world, tmp_path):
    images, landmarks, root = world
    run_score(cfg(clip_dir, dtype="float32"), images, landmarks, root, tmp_path / "fp32")
    run_score(cfg(clip_dir), images, landmarks, root, tmp_path / "auto")  # auto = bf16 on a GPU
    a, _ = read_emb(tmp_path / "fp32", "image")
    b, _ = read_emb(tmp_path / "auto", "image")
    assert np.abs(a.astype(np.float32) - b.astype(np.float32)).max() < 0.05
    s32 = pq.read_table(tmp_path / "fp32" / "scores.parquet").column("s_gt").to_numpy()
    s16 = pq.read_table(tmp_path / "auto" / "scores.parquet").column("s_gt").to_numpy()
    assert np.abs(s32 - s16).max() < 0.05


def test_bad_files_are_skipped_with_reasons(clip_dir, world, tmp_path):
    images, landmarks, root = world
    rows = pq.read_table(images).to_pylist()
    (root / rows[0]["path"]).write_bytes(b"")  # zero bytes
    (root / rows[1]["path"]).write_text("this is not an image")  # non-image
    data = (root / rows[2]["path"]).read_bytes()
    (root / rows[2]["path"]).write_bytes(data[: len(data) // 2])  # truncated JPEG
    corrupt = bytearray((root / rows[3]["path"]).read_bytes())
    corrupt[200:] = bytes(len(corrupt) - 200)  # header intact, entropy-coded data zeroed
    (root / rows[3]["path"]).write_bytes(bytes(corrupt))
    (root / rows[4]["path"]).unlink()  # missing
    rows[5]["path"] = "../outside.jpg"
    rows[6]["landmark_id"] = 999
    rows[7]["status"] = "failed"  # not downloaded: not scored, not a skip
    pq.write_table(pa.Table.from_pylist(rows), images)
    out = tmp_path / "out"
    summary = run_score(cfg(clip_dir), images, landmarks, root, out)
    skipped = pacsv.read_csv(out / "skipped.csv").to_pylist()
    reasons = {r["id"]: r["reason"] for r in skipped}
    assert reasons[rows[0]["id"]] == "empty file (0 bytes)"
    assert reasons[rows[1]["id"]].startswith("not an image")
    assert reasons[rows[2]["id"]].startswith("corrupt or truncated image")
    assert reasons[rows[4]["id"]] == "missing file"
    assert reasons[rows[5]["id"]].startswith("path escapes the image root")
    assert reasons[rows[6]["id"]] == "landmark_id not in landmarks.parquet (999)"
    assert summary["not_ok_status"] == 1 and rows[7]["id"] not in reasons
    scored = [r["id"] for r in pq.read_table(out / "scores.parquet").to_pylist()]
    # a zeroed-out scan decodes to grey in some decoders: it is either skipped or scored, never lost
    assert (rows[3]["id"] in reasons) != (rows[3]["id"] in scored)
    assert set(scored) | set(reasons) == {r["id"] for r in rows} - {rows[7]["id"]}
    assert not set(scored) & set(reasons)
    assert summary["skipped"] == len(skipped) >= 6
    assert summary["skipped_by_reason"]["missing file"] == 1


def test_bad_configs_and_reuse_of_another_runs_shards(clip_dir, world, tmp_path):
    images, landmarks, root = world
    with pytest.raises(ConfigError, match="name_template"):
        cfg(clip_dir, name_template="a photo of {landmark}")
    with pytest.raises(ConfigError, match="model"):
        from_dict(ScoreConfig, {})
    out = tmp_path / "out"
    run_score(cfg(clip_dir), images, landmarks, root, out)
    with pytest.raises(ValueError, match="different run"):
        run_score(cfg(clip_dir, name_template="a photo of {name}"), images, landmarks, root, out)


def _scores_bytes(out: Path) -> bytes:
    return (out / "scores.parquet").read_bytes()


def kill_and_resume(clip_dir, world, tmp_path, run_eeca, kill_points):
    """Kill ``eeca score`` with SIGKILL once ``k`` image shards exist, rerun, compare to an
    uninterrupted run; returns how many runs were really killed before finishing."""
    images, landmarks, root = world
    args = ["score", images, landmarks, root, None, "--model", clip_dir, "--overrides",
            "shard_size=2", "num_workers=0", "image_batch_size=1"]
    ref = tmp_path / "ref"
    run_eeca(*[ref if a is None else a for a in args], env={"OMP_NUM_THREADS": "1"})
    killed = 0
    for wait_for in kill_points:
        out = tmp_path / f"killed{wait_for}"
        cmd = [sys.executable, "-m", "eeca", *map(str, [out if a is None else a for a in args])]
        proc = subprocess.Popen(cmd, env=eeca_env(OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while len(list((out / "emb").glob("image-*.parquet"))) < wait_for and proc.poll() is None \
                and time.time() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if (out / "scores.parquet").exists():
            continue  # it finished before the kill landed: not a resume test
        killed += 1
        res = run_eeca(*[out if a is None else a for a in args], env={"OMP_NUM_THREADS": "1"})
        assert "reused" in res.stdout
        assert _scores_bytes(out) == _scores_bytes(ref)
        assert (out / "skipped.csv").read_bytes() == (ref / "skipped.csv").read_bytes()
    return killed


def test_kill_9_then_rerun_gives_identical_scores(clip_dir, world, tmp_path, run_eeca):
    assert kill_and_resume(clip_dir, world, tmp_path, run_eeca, kill_points=[4]) == 1, "finished before the kill"


@pytest.mark.slow
def test_kill_9_early_mid_and_late(clip_dir, world, tmp_path, run_eeca):
    assert kill_and_resume(clip_dir, world, tmp_path, run_eeca, kill_points=[1, 9, 16]) >= 2


@pytest.mark.slow  # two accelerate-launched processes take about a minute on a loaded 2-core machine
def test_two_processes_write_the_same_file_as_one(clip_dir, world, tmp_path, run_eeca):
    images, landmarks, root = world
    one, two = tmp_path / "one", tmp_path / "two"
    common = [images, landmarks, root, "--model", clip_dir, "--overrides", "shard_size=4",
              "num_workers=0"]
    run_eeca("score", *common[:3], one, *common[3:], env={"OMP_NUM_THREADS": "1"})
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    proc = subprocess.run([launcher, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "eeca", "score",
                           *map(str, common[:3]), str(two), *map(str, common[3:])],
                          env=eeca_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("eeca score:") == 1  # the main process alone merges and reports
    assert _scores_bytes(two) == _scores_bytes(one)
    summary = json.loads((two / "score_summary.json").read_text())
    assert summary["scored"] == 35


@pytest.mark.parametrize("model, message", [
    ("{tmp}/no-such-clip", "model: no model folder {tmp}/no-such-clip"),
    ("nobody-here/no-such-clip", "model: nobody-here/no-such-clip is neither a local folder nor in the Hugging Face "
                                 "cache, and downloads are off (HF_HUB_OFFLINE / local_files_only); fetch it first: "
                                 "hf download nobody-here/no-such-clip --local-dir checkpoints/no-such-clip"),
])
def test_a_missing_model_is_one_line_and_leaves_no_output_behind(tmp_path, monkeypatch, capsys, model, message):
    from eeca.cli import main
    from knowledge_helpers import make_landmarks

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    images, landmarks = make_landmarks(tmp_path / "gl", n_landmarks=2, per_landmark=1)
    out = tmp_path / "score"
    model = model.format(tmp=tmp_path)
    assert main(["score", str(images), str(landmarks), str(tmp_path / "gl"), str(out), "--model", model]) == 2
    err = capsys.readouterr().err
    assert err == f"eeca score: error: {message.format(tmp=tmp_path)}\n"
    assert not out.exists()  # no empty emb/ left behind



def test_hostile_images_are_counted_skips(clip_dir, world, tmp_path):
    from image_cases import write_16bit_png, write_png_bomb

    images, landmarks, root = world
    rows = pq.read_table(images).to_pylist()
    write_png_bomb(root / rows[0]["path"])  # a 30000 x 30000 PNG under a .jpg name
    (tmp_path / "outside.jpg").write_bytes((root / rows[2]["path"]).read_bytes())
    (root / rows[1]["path"]).unlink()
    os.symlink(tmp_path / "outside.jpg", root / rows[1]["path"])  # a link out of the image root
    write_16bit_png(root / rows[2]["path"], value=20000)
    summary = run_score(cfg(clip_dir), images, landmarks, root, tmp_path / "out")
    reasons = {r["id"]: r["reason"] for r in pacsv.read_csv(tmp_path / "out" / "skipped.csv").to_pylist()}
    assert reasons.pop(rows[0]["id"]).startswith("too many pixels")
    assert reasons.pop(rows[1]["id"]).startswith("path escapes the image root")
    assert not reasons and summary["scored"] == len(rows) - 2  # the 16-bit PNG is scored


def test_sixteen_bit_png_is_scored_as_the_grey_it_is(clip_dir, world, tmp_path):
    from image_cases import write_16bit_png

    images, landmarks, root = world
    rows = pq.read_table(images).to_pylist()
    write_16bit_png(root / rows[0]["path"], value=20000)  # 78 of 255
    Image.new("RGB", (8, 8), (78, 78, 78)).save(root / rows[1]["path"], format="PNG")  # the same grey, 8-bit
    run_score(cfg(clip_dir, fast_images=False), images, landmarks, root, tmp_path / "out")
    emb, meta = read_emb(tmp_path / "out", "image")
    ids = [i for m in meta for i in m.column("id").to_pylist()]
    a, b = emb[ids.index(rows[0]["id"])], emb[ids.index(rows[1]["id"])]
    assert np.abs(a.astype(np.float32) - b.astype(np.float32)).max() < 1e-3  # old code: all white


def test_a_wrong_image_root_is_an_error_and_the_rerun_scores_everything(clip_dir, world, tmp_path):
    from eeca.io import InputError

    images, landmarks, root = world
    out = tmp_path / "out"
    with pytest.raises(InputError, match="no image was scored .*missing file"):
        run_score(cfg(clip_dir), images, landmarks, tmp_path / "wrong", out)
    summary = run_score(cfg(clip_dir), images, landmarks, root, out)  # same folder, right root
    assert summary["scored"] == 35 and summary["skipped"] == 0
    ref = run_score(cfg(clip_dir), images, landmarks, root, tmp_path / "ref")
    assert _scores_bytes(out) == _scores_bytes(tmp_path / "ref") and ref["scored"] == 35
    # a file that stays missing is not retried forever: the shards are reused
    rows = pq.read_table(images).to_pylist()
    (root / rows[0]["path"]).unlink()
    again = run_score(cfg(clip_dir), images, landmarks, root, tmp_path / "ref2")
    assert run_score(cfg(clip_dir), images, landmarks, root, tmp_path / "ref2")["shards_encoded"] == 0
    assert again["skipped_by_reason"] == {"missing file": 1}


def test_fast_path_agrees_with_the_exact_one(clip_dir, tmp_path):
    images, landmarks = make_landmarks(tmp_path / "data", n_landmarks=3, per_landmark=2, size=120)
    root = tmp_path / "data"
    run_score(cfg(clip_dir, fast_images=False), images, landmarks, root, tmp_path / "exact")
    run_score(cfg(clip_dir, fast_images=True), images, landmarks, root, tmp_path / "fast")
    s_exact = pq.read_table(tmp_path / "exact" / "scores.parquet").column("s_gt").to_numpy()
    s_fast = pq.read_table(tmp_path / "fast" / "scores.parquet").column("s_gt").to_numpy()
    assert np.abs(s_exact - s_fast).max() < 0.05 and not np.array_equal(s_exact, s_fast)  # 120 px -> 1/2 scale
    with pytest.raises(ValueError, match="different run"):  # the image path is part of the fingerprint
        run_score(cfg(clip_dir, fast_images=False), images, landmarks, root, tmp_path / "fast")
