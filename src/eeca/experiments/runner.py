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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import torch
from accelerate import PartialState

from eeca.config import InputPath, config_path, load_config
from eeca.evaluate.generate import GenerateConfig, run_generate
from eeca.evaluate.judge import JudgeConfig, run_judge
from eeca.evaluate.levels import LEVELS
from eeca.experiments import controls as ctl
from eeca.experiments.feasibility import InfeasibleGrid, cell_label, check_grid, grid_cells, grid_problems
from eeca.experiments.grid import UNTRAINED, GridSpec, cell_id, expand, model_overrides
from eeca.experiments.probe import text_knowledge
from eeca.io import RUN_LOCK, atomic_write, read_json, run_lock, write_json, write_parquet
from eeca.knowledge.select import read_pool, select_table
from eeca.train.recipes import TrainConfig
from eeca.train.recipes import run as run_train


@dataclass(frozen=True)
class ExperimentConfig:
    """A grid of cells and the recipes every cell shares."""

    out: Path  # run folder: cells/, results.parquet
    table: str  # which of the paper's tables this grid reproduces (table1..table4, fig5, or any name)
    base_model: InputPath  # the starting checkpoint (the paper's LLaVA-1.5 initialisation); baseline cells evaluate it
    train_records: InputPath  # MGLD train.json (the test split already removed): the pool subsets are drawn from
    train_recipe: InputPath  # stage-3 TrainConfig YAML
    generate: InputPath  # GenerateConfig YAML
    judge: InputPath  # JudgeConfig YAML
    grid: list[GridSpec]
    hc_weight: float = 1.0  # l2 of the paper's total loss when a cell turns L_HC on
    eac_weight: float = 1.0  # l3 when a cell turns L_EAC on
    seed: int = 0
    # a checkpoint with a pre-aligned HR branch (stage 1 with use_hr_branch on, docs/train.md): the
    # cells that turn the HR branch on start their resampler and HR projector from it, not from scratch
    hr_init: Path | None = None
    lcs_quantile: float = 0.5  # LCS keeps images with S and RSR both below this quantile of the pool (paper: median)
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
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != RUN_LOCK):
        h.update(path.name.encode())
        h.update(path.read_bytes() if path.suffix == ".json" else str(path.stat().st_size).encode())
    return h.hexdigest()


def cells_of(cfg: ExperimentConfig) -> list[dict]:
    context = context_hash(cfg)
    cells = [{**c, "context": context} for c in expand(cfg.grid, cfg.table, cfg.hc_weight, cfg.eac_weight, cfg.seed)]
    if cfg.hr_init is not None:  # only the HR cells start from it
        hr_init = model_fingerprint(Path(cfg.hr_init))[:16]
        cells = [{**c, "hr_init": hr_init} if c["use_hr_branch"] else c for c in cells]
    return cells


def run_experiment(cfg: ExperimentConfig, only: list[str] | None = None, source: str = "experiment") -> dict:
    """Run every unfinished cell of the grid (or those whose id starts with one of ``only``).

    Every cell's feasibility is checked first (:mod:`eeca.experiments.feasibility`): a grid with any
    problem stops before the first cell, naming them all (``source`` names the config in the message).
    """
    check_grid(cfg, source)
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
        model = folder / "train"
        if not (model / "train_summary.json").exists():
            run_train(load_config(TrainConfig, cfg.train_recipe, train_overrides(cfg, cell, folder)))
    gen_cfg = load_config(GenerateConfig, cfg.generate, generate_overrides(cfg, cell, model))
    run_generate(gen_cfg, folder / "generate")
    skyline = skyline_test(cfg, cell, folder, state.is_main_process)
    if skyline is not None:
        state.wait_for_everyone()
        run_generate(dataclasses.replace(gen_cfg, test_json=skyline), folder / "skyline" / "generate")
    if (cell["ablation"] == "baseline" and cfg.controls.text_probe and state.is_main_process
            and not (folder / "text_probe.json").exists()):
        text_knowledge(model, gen_cfg.test_json, folder / "text_probe.json", cfg.controls.truth, cfg.controls.scores)
    if state.is_main_process:
        judge_and_finish(cfg, cell, folder, model, gen_cfg, started=t0, skyline=skyline)
    state.wait_for_everyone()
    return read_json(folder / "metrics.json")


def train_overrides(cfg: ExperimentConfig, cell: dict, folder: Path) -> list[str]:
    """The stage-3 recipe's overrides for a trained cell: its subset, the base model and its switches.

    An input of a switched-off loss is not built: without L_HC no label head, without L_EAC no entity
    tokens, so a +data cell trains the base model as it is, key for key (paper 3.3, Table 3's rows
    differ in one switch each). ``hr_init`` (a pre-aligned HR branch) reaches the cells that turn the
    HR branch on.
    """
    overrides = [
        f"output_dir={folder / 'train'}",
        f"data.path={folder / 'train.json'}",
        "data.selection=null",  # the cell's train.json already holds its selection
        f"model.checkpoint={cfg.base_model}",
        f"model.config_overrides.use_hr_branch={str(cell['use_hr_branch']).lower()}",
        f"model.config_overrides.hc_loss_weight={cell['hc_loss_weight']}",
        f"model.config_overrides.eac_loss_weight={cell['eac_loss_weight']}",
        f"data.hierarchical_labels={str(cell['hc_loss_weight'] > 0).lower()}",
        f"data.entities={str(cell['eac_loss_weight'] > 0).lower()}",
        f"data.entity_prompt={cell['entity_prompt']}",
        f"optim.seed={cell['seed']}",
    ]
    overrides += [f"model.config_overrides.{k}={v}" for k, v in model_overrides(cell).items()]
    if cell["use_hr_branch"] and cfg.hr_init is not None:
        overrides.append(f"model.hr_init={cfg.hr_init}")
    return [*overrides, *cfg.train_overrides]


def generate_overrides(cfg: ExperimentConfig, cell: dict, model: Path) -> list[str]:
    return [f"model={model}", f"entity_prompt={str(cell['entity_prompt_at_inference']).lower()}",
            f"seed={cell['seed']}", *cfg.generate_overrides]


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
    manifest = select_table(read_pool(cfg.train_records), cell["selection"].lower(), cell["size"], seed=cell["seed"],
                            quantile=cfg.lcs_quantile, source=str(cfg.train_records))
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
        sweep = cell.get("sweep") or {}
        rows.append({"cell_id": cell_id(cell), "table": cell["table"], "selection": cell["selection"],
                     "size": cell["size"], "ablation": cell["ablation"], "judge": done["judge"],
                     "sweep_param": sweep.get("param"),
                     "sweep_value": None if sweep.get("value") is None else float(sweep["value"]),
                     "n": m["n"], "n_failed": m["n_failed"],
                     **{lv: _float(m[lv]) for lv in LEVELS}, "accuracy": _float(m["accuracy"]),
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


def _float(x) -> float | None:
    """A metrics percentage as float; None where it is not measurable (no verdict, n = 0)."""
    return None if x is None else float(x)


def experiment_command(config: Path, overrides: list[str] = (), only: list[str] = (), dry_run: bool = False) -> int:
    """Run an experiment grid (selection x size x ablation) end to end into results.parquet; resumable.

    Every cell's feasibility (selection sizes against the pool, input files, the base checkpoint) is
    checked before the first cell trains; all problems are listed at once (exit status 2).

    Args:
        config: experiment YAML, e.g. configs/synth/table1.yaml or configs/paper/table3.yaml
        overrides: field=value settings applied on top, e.g. out=runs/x eac_weight=0.5
        only: run only the cells whose id starts with one of these prefixes (e.g. HDS-25000)
        dry_run: list the cells and every problem that would stop them; train nothing
    """
    cfg = load_config(ExperimentConfig, config, list(overrides))
    if dry_run:
        cells = grid_cells(cfg)
        print(f"experiment {cfg.table}: {len(cells)} cells")
        for c in cells:
            trains = "evaluates the base model" if c["ablation"] in UNTRAINED else "trains stage 3"
            print(f"  {cell_label(c):<28} {trains}")
        problems = grid_problems(cfg, str(config))
        for p in problems:
            print(f"problem: {p}")
        print(f"{len(problems)} problem(s)" + (": nothing would run" if problems else ": every cell can run"))
        return 2 if problems else 0
    try:
        check_grid(cfg, str(config))  # before the lock: an infeasible grid leaves no folder behind
        with run_lock(cfg.out, "experiment"):
            s = run_experiment(cfg, list(only) or None, source=str(config))
    except InfeasibleGrid as e:
        print(f"eeca experiment: error: {e}", file=sys.stderr)
        return 2
    print(f"experiment {cfg.table}: {s['cells']} cells, {len(s['ran'])} run, {len(s['skipped'])} already finished, "
          f"{s['results']} in {Path(cfg.out) / 'results.parquet'}")
    return 0
