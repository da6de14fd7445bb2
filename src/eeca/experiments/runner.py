"""``eeca experiment``: run a grid of cells end to end into one results table (Tables 1-4, Fig. 5).

Each cell (see :mod:`eeca.experiments.grid`) runs, in its own folder ``<out>/cells/<cell_id>/``:

1. select  -- the cell's subset of the MGLD train pool (``eeca select``; the test split excluded),
2. train   -- the stage-3 recipe from the base model with the cell's ablation switches,
3. generate -- k answers per test question,
4. judge   -- the four-level verdicts and metrics,
5. controls -- degenerate answers, judge chance, skyline and latent knowledge
   (:mod:`eeca.experiments.controls`), written to ``controls.json``.

A cell that finished (``cell.json`` written last, atomically) is skipped on a rerun; a cell that was
killed resumes inside whichever step it was in (training from its latest checkpoint, generation and
judging from their JSONL files). ``results.parquet`` is rewritten from every finished cell at the end.

A cell's id hashes its switches together with everything that decides its result: the contents of
the three recipe files and of the train pool, their overrides, and the base checkpoint (its JSON files
and its weight files' sizes). Editing a recipe or rebuilding the data therefore creates new cells
instead of silently reusing results computed with the old ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import torch
from accelerate import PartialState

from eeca.config import config_path, load_config
from eeca.evaluate.generate import GenerateConfig, run_generate
from eeca.evaluate.judge import JudgeConfig, run_judge
from eeca.evaluate.levels import LEVELS
from eeca.experiments import controls as ctl
from eeca.experiments.grid import UNTRAINED, GridSpec, cell_id, expand
from eeca.io import atomic_write, read_json, write_json, write_parquet
from eeca.knowledge.select import select_table
from eeca.train.recipes import TrainConfig
from eeca.train.recipes import run as run_train


@dataclass(frozen=True)
class ExperimentConfig:
    """A grid of cells and the recipes every cell shares."""

    out: Path  # run folder: cells/, results.parquet
    table: str  # which of the paper's tables this grid reproduces (table1..table4, fig5, or any name)
    base_model: Path  # the starting checkpoint (the paper's LLaVA-1.5 initialisation); baseline cells evaluate it
    train_records: Path  # MGLD train.json (the test split already removed): the pool subsets are drawn from
    train_recipe: Path  # stage-3 TrainConfig YAML
    generate: Path  # GenerateConfig YAML
    judge: Path  # JudgeConfig YAML
    grid: list[GridSpec]
    hc_weight: float = 1.0  # l2 of the paper's total loss when a cell turns L_HC on
    eac_weight: float = 1.0  # l3 when a cell turns L_EAC on
    seed: int = 0
    controls: ctl.ControlsConfig = field(default_factory=ctl.ControlsConfig)
    train_overrides: list[str] = field(default_factory=list)
    generate_overrides: list[str] = field(default_factory=list)
    judge_overrides: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.grid:
            raise ValueError("grid must list at least one block")
        if self.hc_weight < 0 or self.eac_weight < 0:
            raise ValueError("hc_weight and eac_weight must be >= 0")


def context_hash(cfg: ExperimentConfig) -> str:
    """sha256 over everything besides the switches that decides a cell's result."""
    h = hashlib.sha256()
    for path in (cfg.train_recipe, cfg.generate, cfg.judge, cfg.train_records):
        h.update(config_path(path).read_bytes())
    h.update(model_fingerprint(Path(cfg.base_model)).encode())
    for part in (cfg.train_overrides, cfg.generate_overrides, cfg.judge_overrides):
        h.update(json.dumps(part).encode())
    return h.hexdigest()[:16]


def model_fingerprint(folder: Path) -> str:
    """A checkpoint folder's identity without reading its weights (gigabytes at 8B): the JSON files'
    contents and every other file's name and size. A base model retrained in place gets new cells."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(path.name.encode())
        h.update(path.read_bytes() if path.suffix == ".json" else str(path.stat().st_size).encode())
    return h.hexdigest()


def cells_of(cfg: ExperimentConfig) -> list[dict]:
    context = context_hash(cfg)
    return [{**c, "context": context} for c in expand(cfg.grid, cfg.table, cfg.hc_weight, cfg.eac_weight, cfg.seed)]


def run_experiment(cfg: ExperimentConfig, only: list[str] | None = None) -> dict:
    """Run every unfinished cell of the grid (or those whose id starts with one of ``only``)."""
    out = Path(cfg.out)
    cells = cells_of(cfg)
    todo = [c for c in cells if not only or any(cell_id(c).startswith(p) for p in only)]
    ran, skipped = [], []
    for i, cell in enumerate(todo, 1):
        cid = cell_id(cell)
        if (out / "cells" / cid / "cell.json").exists():
            skipped.append(cid)
            continue
        print(f"[{i}/{len(todo)}] cell {cid}", flush=True)
        run_cell(cfg, cell, out / "cells" / cid)
        ran.append(cid)
    state = PartialState(cpu=not torch.accelerator.is_available())
    rows = collect_results(out, cells) if state.is_main_process else []
    state.wait_for_everyone()
    return {"cells": len(cells), "ran": ran, "skipped": skipped, "results": len(rows)}


def run_cell(cfg: ExperimentConfig, cell: dict, folder: Path) -> dict:
    """Select, train, generate and judge one cell; ``cell.json`` is written last, marking it finished."""
    t0 = time.time()
    # under `accelerate launch` every process runs the cell: training and generation share the work,
    # the files of the cell and the judge's requests are made once, by the main process
    state = PartialState(cpu=not torch.accelerator.is_available())
    folder.mkdir(parents=True, exist_ok=True)
    model = Path(cfg.base_model)
    if cell["ablation"] not in UNTRAINED:
        if state.is_main_process:
            write_subset(cfg, cell, folder)
        state.wait_for_everyone()
        subset = folder / "train.json"
        model = folder / "train"
        if not (model / "train_summary.json").exists():
            overrides = [
                f"output_dir={model}",
                f"data.path={subset}",
                f"model.checkpoint={cfg.base_model}",
                f"model.config_overrides.use_hr_branch={str(cell['use_hr_branch']).lower()}",
                f"model.config_overrides.hc_loss_weight={cell['hc_loss_weight']}",
                f"model.config_overrides.eac_loss_weight={cell['eac_loss_weight']}",
                f"data.entity_prompt={cell['entity_prompt']}",
                f"optim.seed={cell['seed']}",
                *cfg.train_overrides,
            ]
            run_train(load_config(TrainConfig, cfg.train_recipe, overrides))
    gen_cfg = load_config(GenerateConfig, cfg.generate, [
        f"model={model}", f"entity_prompt={str(cell['entity_prompt_at_inference']).lower()}",
        f"seed={cell['seed']}", *cfg.generate_overrides])
    run_generate(gen_cfg, folder / "generate")
    skyline = skyline_test(cfg, cell, folder, state.is_main_process)
    if skyline is not None:
        state.wait_for_everyone()
        run_generate(dataclasses.replace(gen_cfg, test_json=skyline), folder / "skyline" / "generate")
    if state.is_main_process:
        judge_and_finish(cfg, cell, folder, model, gen_cfg, started=t0, skyline=skyline)
    state.wait_for_everyone()
    return read_json(folder / "metrics.json")


def skyline_test(cfg: ExperimentConfig, cell: dict, folder: Path, write: bool) -> Path | None:
    """The skyline records of a trained data cell of a chosen selection (None for other cells)."""
    c = cfg.controls
    if c.skyline_test_json is None or cell["ablation"] != "data" or cell["selection"] not in c.skyline_selections:
        return None
    path = folder / "skyline" / "test.json"
    if write:
        ctl.write_skyline_test(ctl.skyline_records(c, folder / "train.json"), folder)
    return path


def judge_and_finish(cfg: ExperimentConfig, cell: dict, folder: Path, model: Path, gen_cfg: GenerateConfig,
                     started: float, skyline: Path | None = None) -> dict:
    """Judge the cell's generations, run its controls and write its metrics; ``cell.json`` last."""
    judge_cfg = load_config(JudgeConfig, cfg.judge, [
        f"generations={folder / 'generate' / 'generations.jsonl'}", f"test_json={gen_cfg.test_json}",
        *cfg.judge_overrides])
    judged = run_judge(judge_cfg, folder / "judge")
    metrics = judged["metrics"]
    if metrics["n_failed"]:
        raise RuntimeError(f"cell {cell_id(cell)}: {metrics['n_failed']} judgments failed; rerun to retry them "
                           f"(the cell stays unfinished)")
    c = cfg.controls
    controls: dict = {"degenerate": ctl.degenerate_control(folder / "generate" / "generations.jsonl",
                                                          ctl.closed_vocabulary(c.vocabulary))}
    if c.chance:
        controls["chance"] = ctl.chance_control(judge_cfg, folder)
    if skyline is not None:
        sky = run_judge(dataclasses.replace(judge_cfg, generations=folder / "skyline" / "generate" / "generations.jsonl",
                                            test_json=skyline), folder / "skyline" / "judge")
        controls["skyline"] = ctl.skyline_summary(read_json(skyline), folder / "skyline" / "judge" / "judgments.jsonl",
                                                  c.scores)
        controls["skyline"]["n_failed"] = sky["metrics"]["n_failed"]
    if cell["ablation"] == "baseline" and c.truth is not None and c.naming is not None:
        controls["latent"] = ctl.latent_knowledge(folder / "judge" / "judgments.jsonl", gen_cfg.test_json,
                                                  c.truth, c.naming)
    write_json(folder / "controls.json", controls)
    write_json(folder / "metrics.json", metrics)
    write_json(folder / "cell.json", {"cell": cell, "cell_id": cell_id(cell), "model": str(model),
                                      "judge": judged["summary"]["judge"], "wall_s": round(time.time() - started, 1)})
    return metrics


def write_subset(cfg: ExperimentConfig, cell: dict, folder: Path) -> Path:
    """The cell's training records, chosen from the MGLD train pool by S and RSR (paper 3.1), best first."""
    path = folder / "train.json"
    if path.exists():
        return path
    records = read_json(cfg.train_records)
    pool = pa.table({k: [r[k] for r in records] for k in ("id", "landmark_id", "s_gt", "rsr")})
    manifest = select_table(pool, cell["selection"].lower(), cell["size"], seed=cell["seed"],
                            source=str(cfg.train_records))
    write_parquet(folder / "selection.parquet", manifest)
    by_id = {str(r["id"]): r for r in records}
    atomic_write(path, json.dumps([by_id[str(i)] for i in manifest.column("id").to_pylist()], ensure_ascii=False))
    return path


def collect_results(out: Path, cells: list[dict]) -> list[dict]:
    """Write ``results.parquet`` (one row per finished cell of this grid) and return its rows."""
    rows = []
    for cell in cells:
        folder = out / "cells" / cell_id(cell)
        if not (folder / "cell.json").exists():
            continue
        done, m = read_json(folder / "cell.json"), read_json(folder / "metrics.json")
        c = read_json(folder / "controls.json") if (folder / "controls.json").exists() else {}
        sky = c.get("skyline", {})
        rows.append({"cell_id": cell_id(cell), "table": cell["table"], "selection": cell["selection"],
                     "size": cell["size"], "ablation": cell["ablation"], "judge": done["judge"],
                     "n": m["n"], "n_failed": m["n_failed"],
                     **{lv: float(m[lv]) for lv in LEVELS}, "accuracy": float(m["accuracy"]),
                     "acc_ci_low": m["acc_ci_low"], "acc_ci_high": m["acc_ci_high"],
                     **{f"count_{lv}": int(m[f"count_{lv}"]) for lv in LEVELS},
                     "degenerate_pct": c.get("degenerate", {}).get("percent"),
                     "chance_accuracy": c.get("chance", {}).get("accuracy"),
                     "chance_weakly_unknown": c.get("chance", {}).get("weakly_unknown"),
                     **{f"skyline_{k}_{f}": sky.get(k, {}).get(f) for k in ("clip_seen", "clip_unseen")
                        for f in ("accuracy", "clip_top1", "n")},
                     "cell_dir": str(folder.relative_to(out))})
    if rows:
        write_parquet(out / "results.parquet", pa.Table.from_pylist(rows))
    return rows


def experiment_command(config: Path, overrides: list[str] = (), only: list[str] = ()) -> int:
    """Run an experiment grid (selection x size x ablation) end to end into results.parquet; resumable.

    Args:
        config: experiment YAML, e.g. configs/synth/table1.yaml or configs/paper/table3.yaml
        overrides: field=value settings applied on top, e.g. out=runs/x eac_weight=0.5
        only: run only the cells whose id starts with one of these prefixes (e.g. HDS-25000)
    """
    cfg = load_config(ExperimentConfig, config, list(overrides))
    s = run_experiment(cfg, list(only) or None)
    print(f"experiment {cfg.table}: {s['cells']} cells, {len(s['ran'])} run, {len(s['skipped'])} already finished, "
          f"{s['results']} in {Path(cfg.out) / 'results.parquet'}")
    return 0
