"""The one-run GPU check (benchmarks/gpu/check.py) at toy size on the CPU, so the script never rots."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "check.py"
PARTS = {"clip_encode", "streaming_rank", "train_8b_lora", "train_1b_full", "generate_k5"}


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_smoke_run_writes_every_part_ok(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["parts"]) == PARTS
    for name, part in report["parts"].items():
        assert part["status"] == "ok", (name, part.get("error"), part.get("traceback"))
    p = report["parts"]
    assert p["clip_encode"]["metrics"]["eeca_encode_images"]["images_per_s"] > 0
    assert p["streaming_rank"]["metrics"]["rows_run"] == p["streaming_rank"]["metrics"]["rows_target"]
    assert p["streaming_rank"]["metrics"]["scores_rows_run"] == p["streaming_rank"]["metrics"]["rows_target"]
    assert p["streaming_rank"]["metrics"]["spot_check_ranks_outside_float64_band"] == 0  # ranks match the definition
    for name in ("train_8b_lora", "train_1b_full"):
        m = p[name]["metrics"]
        assert {"loss_lm", "loss_hc", "loss_eac"} <= set(m["loss_terms_logged"])  # all three losses trained
        assert m["tokens_per_s"] > 0 and m["seq_len"] > m["visual_tokens"]
    # LoRA trains adapters, not the LLM's own weights; the full fine-tune trains every LLM weight
    assert p["train_8b_lora"]["metrics"]["trainable_params"] != p["train_8b_lora"]["metrics"]["trainable_by_group_before_lora"]["llm"]
    assert p["generate_k5"]["metrics"]["batched_tokens_per_s"] > 0 and p["generate_k5"]["metrics"]["naive_tokens_per_s"] > 0
    # the table names every part
    for name in PARTS:
        assert name in proc.stdout


def test_clip_l_336_forward_flops_match_hand_count(check):
    """ViT-L/14-336: 577 tokens, width 1024, MLP 4096, 24 layers, counted by hand = 381.9 GFLOPs."""
    v = check.CLIPVisionConfig(**check.FULL["vision"])
    n, d, f, layers = 577, 1024, 4096, 24
    by_hand = layers * (2 * n * (3 * d * d + d * d + 2 * d * f) + 2 * 2 * n * n * d) + 2 * 576 * (3 * 14 * 14) * d
    assert check.vit_image_flops(v) == by_hand
    assert abs(by_hand / 1e9 - 381.9) < 0.1


def test_peaks_are_looked_up_by_device_name(check):
    peak = lambda name: next((p[1:] for p in check.PEAKS if p[0] in name), None)  # noqa: E731
    assert peak("NVIDIA H100 80GB HBM3") == (989e12, 67e12, 3.35e12)
    assert peak("NVIDIA H200") == (989e12, 67e12, 4.8e12)
    assert peak("NVIDIA H100 PCIe")[0] == 756e12
    assert peak("NVIDIA GeForce RTX 4090") is None


@pytest.mark.parametrize("raise_, status", [(ValueError("bad shape"), "error"),
                                             (torch.OutOfMemoryError("CUDA out of memory"), "oom")])
def test_a_failing_part_is_recorded_not_fatal(check, raise_, status):
    env = check.Env({}, torch.device("cpu"), torch.float32, None, None, None, [], Path("."))

    def broken(out):
        out["measured_before_failing"] = 1.0
        raise raise_

    record = check.run_part("broken", broken, env, cap=30)
    assert record["status"] == status and str(raise_).split()[0] in record["error"]
    assert record["metrics"] == {"measured_before_failing": 1.0}  # what was measured survives
    fine = check.run_part("fine", lambda out: out.update(x=1), env, cap=30)
    assert fine["status"] == "ok" and fine["metrics"] == {"x": 1}


def test_a_part_past_its_cap_times_out(check):
    env = check.Env({}, torch.device("cpu"), torch.float32, None, None, None, [], Path("."))
    t0 = time.monotonic()
    record = check.run_part("slow", lambda out: time.sleep(10), env, cap=1)
    # the part itself stops at its cap; the whole call (with its two gc passes, slow in a big loaded
    # process) still returns before the 10 s sleep would have ended
    assert record["status"] == "timeout" and record["wall_s"] < 5 and time.monotonic() - t0 < 10
