"""The paper-scale commands of docs/paper-scale.md, run as written with configs/paper/*.yaml unchanged.

The commands are read from the page's command block and run in a scratch folder laid out as the page
says (``data/``, ``checkpoints/``, ``configs/`` beside ``runs/paper/``), so that every path a config
names is the path an earlier command wrote. The rebase onto a CPU is the only change, and it is all
in ``REBASE`` below (appended to a command's own arguments) and ``SIZES`` (the size argument of
``eeca select``):

* sizes: a GLDv2 world of 16 landmarks (2 images each), an MGLD test split of 4 with 3 evaluated,
  selections of 8, each grid as written with its sizes mapped by ``GRID_SIZES`` onto 12 train records
  (LCS below the 0.9-quantiles, so that a pool of 12 holds some);
* models: a tiny CLIP (tests/knowledge_helpers.py) for scoring; the tiny EECA model
  (src/eeca/model/tiny.py) saved as ``runs/paper/stage2`` in place of stages 1-2 for the fast chain,
  a tiny CLIP tower and Llama (tests/train_helpers.py) for the slow one; the template annotator and
  the rule judge in place of GPT-4o; float32, no DeepSpeed, a few steps, short answers.

``test_representative_chain`` (ingest -> score -> MGLD -> select -> stage 3 -> generate -> judge ->
experiment -> report) is part of ``make test``; ``test_every_paper_config`` also runs stages 1-2 on
LLaVA-style data and every grid (slow: ``make test-slow``).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from eeca.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "paper-scale.md"
N_LANDMARKS, PER_LANDMARK = 16, 2

_TRAIN = ["optim.per_device_train_batch_size=2", "optim.max_steps=2", "optim.bf16=false", "optim.deepspeed=null",
          "optim.gradient_checkpointing=false", "optim.dataloader_num_workers=0", "optim.save_steps=100",
          "optim.eval_steps=null", "data.eval_path=null", "data.max_length=512", "data.chat_template=tokenizer"]
_GENERATE = ["k=2", "max_new_tokens=4", "batch_size=4", "dtype=float32"]
_JUDGE = ["judge=rule", "truth=data/truth.jsonl", "bootstrap_samples=100"]
# a grid's sizes onto the 12 MGLD train records (LCS: both below the 0.9-quantile, so that some exist)
GRID_SIZES = {25000: 4, 50000: 8, 75000: 9, 100000: 10, 125000: 12}
_MGLD = ["annotator.backend=template", "truth=data/truth.jsonl", "split.test_count=4", "split.eval_count=3"]


def _flow(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"




def _experiment(name: str) -> list[str]:
    grid = yaml.safe_load((ROOT / "src" / "eeca" / "configs" / "paper" / f"{name}.yaml").read_text())["grid"]
    for block in grid:
        block["sizes"] = [GRID_SIZES[n] for n in block["sizes"]]
    return ["--overrides", "grid=" + json.dumps(grid), "lcs_quantile=0.9", f"train_overrides={_flow(_TRAIN)}",
            f"generate_overrides={_flow(_GENERATE)}", f"judge_overrides={_flow(_JUDGE)}"]


# (verb, its first argument) -> arguments appended to the command of the page
REBASE: dict[tuple[str, str], list[str]] = {
    ("score", "runs/paper/gldv2/images.parquet"): [
        "--overrides", "model=checkpoints/clip", "image_batch_size=8", "text_batch_size=16", "num_workers=0",
        "dtype=float32", "block_size=64", "shard_size=1000"],
    ("mgld stage2", "configs/paper/mgld.yaml"): ["--overrides", *_MGLD],
    ("mgld stage3", "configs/paper/mgld.yaml"): ["--overrides", *_MGLD],
    ("train", "configs/paper/stage1.yaml"): [
        "--overrides", "model.vision_path=checkpoints/clip-tower", "model.llm_path=checkpoints/llm", "data.path=data/llava/stage1.json",
        "data.image_root=data/llava", *_TRAIN[:-1]],
    ("train", "configs/paper/stage2.yaml"): [
        "--overrides", "data.path=data/llava/stage2.json", "data.image_root=data/llava", *_TRAIN[:-1]],
    ("train", "configs/paper/stage3.yaml"): ["--overrides", *_TRAIN],
    ("generate", "configs/paper/generate.yaml"): ["--overrides", *_GENERATE],
    ("judge", "configs/paper/judge.yaml"): ["--overrides", *_JUDGE],
    **{("experiment", f"configs/paper/{t}.yaml"): _experiment(t) for t in ("table1", "table2", "table3", "table4", "fig5",
                                                                            "fig7")},
}
SIZES = {"50000": "8"}  # eeca select's size argument
# the commands of the fast chain: everything but stages 1-2 and the grids other than Table 3
SKIPPED_FAST = ("configs/paper/stage1.yaml", "configs/paper/stage2.yaml", "configs/paper/table1.yaml",
                "configs/paper/table2.yaml", "configs/paper/table4.yaml", "configs/paper/fig5.yaml", "configs/paper/fig7.yaml")


def page_commands() -> list[list[str]]:
    """The eeca commands of the page's command block, as argv lists (``accelerate launch ... -m`` dropped)."""
    text = PAGE.read_text(encoding="utf-8")
    block = text.split("## 3. Every command, in order", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        argv = shlex.split(re.sub(r"^accelerate launch .*? -m eeca ", "eeca ", line))
        assert argv[0] == "eeca", line
        commands.append([SIZES.get(a, a) for a in argv[1:]])
    return commands


def rebased(argv: list[str]) -> list[str]:
    for n in (2, 1):
        key = (" ".join(argv[:n]), argv[n] if len(argv) > n else "")
        if key in REBASE:
            return argv + REBASE[key]
    return argv


def build_world(root: Path, with_llava: bool = False) -> None:
    """The inputs of the page's layout, tiny: data/gldv2 (csvs + JPEGs), checkpoints/, a truth file, the base model."""
    from gldv2_fixtures import make_root
    from knowledge_helpers import make_tiny_clip
    from train_helpers import save_tiny_eeca

    rng = np.random.default_rng(0)
    kinds = ["tower", "church", "bridge", "lake"]
    images, titles, hierarchy, truth = [], {}, {}, []
    for lm in range(N_LANDMARKS):
        kind = kinds[lm % 4]
        titles[lm] = f"Karvel_{kind.title()}_{lm}"
        hierarchy[lm] = ("place", kind, "natural" if kind == "lake" else "human-made")
        truth.append({"landmark_id": lm, "name": f"Karvel {kind.title()} {lm}", "hierarchical_label": kind,
                      "place": f"Town{lm}, Nordland", "entities": [f"red brick facade {lm}", "twin spires"],
                      "description": f"A {kind} of red brick.", "aliases": [], "clip_seen": bool(lm % 2)})
        images += [(f"{rng.integers(0, 2**63):016x}", lm) for _ in range(PER_LANDMARK)]
    gl = make_root(root / "data" / "gldv2", images, titles, hierarchy)
    for image_id, lm in images:  # real pixels, one colour family per landmark
        pixels = rng.integers(0, 64, size=(40, 48, 3), dtype=np.uint8) + np.uint8(12 * lm)
        Image.fromarray(pixels).save(gl / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg")
    (root / "data" / "truth.jsonl").write_text("".join(json.dumps(t) + "\n" for t in truth))
    make_tiny_clip(root / "checkpoints" / "clip")
    (root / "configs").symlink_to(ROOT / "src" / "eeca" / "configs")  # the paper configs, unchanged
    if with_llava:
        from train_helpers import save_clip_and_llm, write_llava_json

        tower, llm = save_clip_and_llm(root / "checkpoints" / "parts")  # its clip/ is a vision tower only
        tower.rename(root / "checkpoints" / "clip-tower")
        llm.rename(root / "checkpoints" / "llm")
        for stage in (1, 2):
            path = write_llava_json(root / "data" / "llava", n=6, text_only=2 * (stage - 1), seed=stage)
            path.rename(root / "data" / "llava" / f"stage{stage}.json")
    else:
        save_tiny_eeca(root / "runs" / "paper" / "stage2")  # stands for stages 1-2 in the fast chain


def run_page(root: Path, monkeypatch, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """Run the page's commands under ``root``; returns seconds per command."""
    monkeypatch.chdir(root)
    times = {}
    for argv in page_commands():
        if any(a in skip for a in argv):
            continue
        t0 = time.perf_counter()
        assert main(rebased(argv)) == 0, " ".join(argv)
        times[" ".join(argv[:2])] = time.perf_counter() - t0
    return times


def test_every_page_command_has_its_rebase_and_every_paper_config_is_run():
    commands = page_commands()
    used = {a for argv in commands for a in argv if a.startswith("configs/paper/")}
    ran = {f"configs/paper/{p.name}" for p in (ROOT / "src" / "eeca" / "configs" / "paper").glob("*.yaml")} - {"configs/paper/model.yaml"}
    assert used == ran  # model.yaml is `eeca model summary`'s, which reads no run folder
    for argv in commands:
        if any(a.startswith("configs/paper/") for a in argv):
            assert rebased(argv) != argv, argv
    for path in (ROOT / "src" / "eeca" / "configs" / "paper").glob("*.yaml"):  # every output lies in the one run root
        for key, value in _paths(yaml.safe_load(path.read_text())):
            if key in ("out", "output_dir", "cache"):
                assert value.startswith("runs/paper/"), (path.name, key, value)


def _paths(node, key=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, k)
    elif isinstance(node, str) and "/" in node:
        yield key, node


def test_representative_chain(tmp_path, monkeypatch):
    """score -> select -> stage 3 -> generate -> judge -> report, with the paper configs (~30 s)."""
    build_world(tmp_path)
    times = run_page(tmp_path, monkeypatch, skip=SKIPPED_FAST)
    run = tmp_path / "runs" / "paper"
    chosen = __import__("pyarrow.parquet", fromlist=["x"]).read_table(run / "select" / "HSS-50k.parquet")
    assert chosen.num_rows == 8
    summary = json.loads((run / "stage3" / "train_summary.json").read_text())
    assert summary["steps"] == 2
    trained_on = yaml.safe_load((run / "stage3" / "train_config.yaml").read_text())["data"]
    assert trained_on["selection"] == "runs/paper/select/HSS-50k.parquet"
    assert len(json.loads((run / "mgld" / "test_eval.json").read_text())) == 3
    metrics = json.loads((run / "judge" / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["n_failed"] == 0
    table3 = run / "experiment" / "table3"
    assert (table3 / "report" / "report.html").is_file()
    rows = __import__("pyarrow.parquet", fromlist=["x"]).read_table(table3 / "results.parquet").to_pylist()
    assert sorted((r["selection"], r["size"], r["ablation"], r["n"]) for r in rows) == [
        ("HSS", 8, a, 3) for a in ("data", "eac", "hc", "hr")] + [("none", 0, "baseline", 3)]
    print("chain seconds:", {k: round(v, 1) for k, v in times.items()}, "total", round(sum(times.values()), 1))


@pytest.mark.slow
def test_every_paper_config(tmp_path, monkeypatch):
    """Every command of the page, stages 1-2 and every grid included (minutes)."""
    build_world(tmp_path, with_llava=True)
    times = run_page(tmp_path, monkeypatch)
    run = tmp_path / "runs" / "paper"
    assert not json.loads((run / "stage2" / "config.json").read_text())["use_hr_branch"]
    for table in ("table1", "table2", "table3", "table4", "fig5"):
        assert (run / "experiment" / table / "results.parquet").is_file(), table
    print("page seconds:", {k: round(v, 1) for k, v in times.items()}, "total", round(sum(times.values()), 1))
