"""``eeca study``: the synthetic Tables 1-3 over several seeds, each comparison paired and pooled.

The demo shows that the pipeline runs; the study measures the paper's claims on the synthetic
testbed (docs/synth.md): VE-Known selections (HDS, HSS) beat the random reference (BRS) and the
VE-Unknown one (LCS) falls behind it (Table 1); each ablation step adds to the one above (Table 3:
+data, +HR branch, +L_HC, +L_EAC); the Entity Prompt baselines against EECA (Table 2).

For every seed s the study builds a testbed of its own under ``OUT/seed-s`` (world seed, selection
seed and training seed all s: :func:`eeca.experiments.demo.build_testbed`) and runs the grid of
``grid`` on it (:mod:`eeca.experiments.runner`, every cell with its controls). Every comparison of
the paper's tables is then a paired difference over the same test questions
(:mod:`eeca.evaluate.compare`): within a seed both cells answer the same questions; the seeds are
pooled, resampling questions within each seed. ``study.md`` and ``study.json`` hold the tables,
the controls of every cell and the wall time. Each step resumes: rerun the same command after an
interruption and only what is missing is computed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from eeca.config import load_config
from eeca.evaluate.compare import compare_judgments
from eeca.experiments import controls as ctl
from eeca.io import atomic_write, read_json, read_parquet, run_lock, write_json

# (table, row label, cell a, cell b): b compared with a on the same questions; a cell is
# (selection, size, ablation) with size "S" / "L" for the grid's smaller / larger size
Cell = tuple[str, str, str]
COMPARISONS: tuple[tuple[str, str, Cell, Cell], ...] = (
    *(("Table 1", f"{sel}-{size} vs BRS-{size}", ("BRS", size, "data"), (sel, size, "data"))
      for size in ("S", "L") for sel in ("HDS", "HSS", "LCS")),
    ("Table 1", "BRS-L vs BRS-S (data volume)", ("BRS", "S", "data"), ("BRS", "L", "data")),
    ("Table 3", "+data (HSS-L) vs baseline", ("none", "0", "baseline"), ("HSS", "L", "data")),
    ("Table 3", "+HR branch vs +data", ("HSS", "L", "data"), ("HSS", "L", "hr")),
    ("Table 3", "+L_HC vs +HR branch", ("HSS", "L", "hr"), ("HSS", "L", "hc")),
    ("Table 3", "+L_EAC vs +L_HC", ("HSS", "L", "hc"), ("HSS", "L", "eac")),
    ("Table 2", "Entity Prompt (inference only) vs baseline", ("none", "0", "baseline"),
     ("none", "0", "entity_prompt_infer")),
    ("Table 2", "Entity Prompt (training + inference) vs baseline", ("none", "0", "baseline"),
     ("HSS", "L", "entity_prompt_train")),
    ("Table 2", "EECA (HSS-L) vs baseline", ("none", "0", "baseline"), ("HSS", "L", "eac")),
    ("Table 2", "EECA vs Entity Prompt (training + inference)", ("HSS", "L", "entity_prompt_train"),
     ("HSS", "L", "eac")),
)


@dataclass(frozen=True)
class StudyConfig:
    """Seeds, world size and the grid of the study."""

    out: Path
    grid: Path  # an experiment YAML (its paths are filled in per seed, as the demo does)
    configs: Path = Path("configs/synth")  # world, score, mgld, stage1-3, generate, judge recipes
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    landmarks: int = 400
    test_fraction: float = 0.5  # of the MGLD samples (one per landmark): at least 200 test questions
    synth_overrides: list[str] = field(default_factory=list)  # stand-in settings (world.yaml), e.g. llm.steps
    bootstrap_samples: int = 4000

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")


def _cells(run: Path) -> dict[Cell, Path]:
    """(selection, size as S/L, ablation) -> cell folder, from a seed's results.parquet."""
    rows = read_parquet(run / "results.parquet").to_pylist()
    sizes = sorted({r["size"] for r in rows if r["size"]})
    label = {s: ("S" if i == 0 and len(sizes) > 1 else "L") for i, s in enumerate(sizes)} | {0: "0"}
    return {(r["selection"], label[r["size"]], r["ablation"]): run / r["cell_dir"] for r in rows}


def pooled_tables(runs: list[Path], samples: int) -> list[dict]:
    """Every comparison of :data:`COMPARISONS` present in all runs, paired and pooled over them."""
    cells = [_cells(r) for r in runs]
    out = []
    for table, label, a, b in COMPARISONS:
        if not all(a in c and b in c for c in cells):
            continue
        result = compare_judgments([c[a] / "judge" / "judgments.jsonl" for c in cells],
                                   [c[b] / "judge" / "judgments.jsonl" for c in cells], samples=samples)
        out.append({"table": table, "row": label, "a": "-".join(a), "b": "-".join(b), **result})
    return out


def cell_controls(runs: list[Path], vocabularies: list[list[Path]]) -> list[dict]:
    """Per seed and cell: accuracy, degenerate answers (counted again from the answers, with each
    seed's closed vocabulary), judge chance, skyline, baseline latent knowledge."""
    rows = []
    for seed, (run, vocabulary) in enumerate(zip(runs, vocabularies, strict=True)):
        vocab = ctl.closed_vocabulary(vocabulary)
        for r in read_parquet(run / "results.parquet").to_pylist():
            controls = read_json(run / r["cell_dir"] / "controls.json")
            degenerate = ctl.degenerate_control(run / r["cell_dir"] / "generate" / "generations.jsonl", vocab)
            rows.append({"run": seed, **{k: r[k] for k in ("selection", "size", "ablation", "n", "accuracy",
                                                           "acc_ci_low", "acc_ci_high", "chance_accuracy",
                                                           "chance_weakly_unknown", "weakly_unknown")},
                         "degenerate_pct": degenerate["percent"],
                         "skyline": controls.get("skyline"), "latent": controls.get("latent")})
    return rows


def _f(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(cfg: StudyConfig, tables: list[dict], controls: list[dict], wall_s: float, command: str) -> str:
    lines = [f"# Synthetic study: Tables 1-3 over {len(cfg.seeds)} seeds", "",
             f"Made by `{command}` ({wall_s / 60:.0f} min on 2 CPU cores, summed over the seeds). World of {cfg.landmarks} landmarks "
             f"per seed, {cfg.test_fraction:.0%} of MGLD's samples in the test split; seeds {cfg.seeds} "
             "(world, selection and training). Rule judge (v2). Differences are b - a in percentage points, "
             "paired over the same test questions and pooled over seeds; 95% interval of a paired bootstrap "
             "stratified by seed; p is the exact McNemar test.", ""]
    for table in ("Table 1", "Table 3", "Table 2"):
        rows = [t for t in tables if t["table"] == table]
        if not rows:
            continue
        lines += [f"## {table}", "", "| comparison (b vs a) | n | acc a % | acc b % | diff pts [95%] | b only / a only | McNemar p |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {t['row']} | {t['n']} | {_f(t['accuracy_a'])} | {_f(t['accuracy_b'])} | "
                  f"{_f(t['diff'])} [{_f(t['diff_ci_low'])}, {_f(t['diff_ci_high'])}] | {t['b_only']} / {t['a_only']} | "
                  f"{_f(t['mcnemar_p'], 3)} |" for t in rows]
        lines.append("")
    lines += ["## Every cell and its controls", "",
              "Accuracy with its exact 95% interval; degenerate answers (goal <= 2%: empty, a repeated fragment, or a "
              "word no text of the testbed holds, made-up landmark names included); the same answers judged "
              "against a shuffled truth (judge chance: accuracy and Weakly Unknown); Weakly Unknown of the cell.", "",
              "| seed | cell | n | accuracy % [95%] | degenerate % | WU % | chance acc % | chance WU % |",
              "|---|---|---|---|---|---|---|---|"]
    for c in controls:
        lines.append(f"| {cfg.seeds[c['run']]} | {c['selection']}-{c['size']}-{c['ablation']} | {c['n']} | "
                     f"{_f(c['accuracy'])} [{_f(c['acc_ci_low'])}, {_f(c['acc_ci_high'])}] | {_f(c['degenerate_pct'])} | "
                     f"{_f(c['weakly_unknown'])} | {_f(c['chance_accuracy'])} | {_f(c['chance_weakly_unknown'])} |")
    lines += ["", "## Skyline and latent knowledge", ""]
    for c in controls:
        seed, cell = cfg.seeds[c["run"]], f"{c['selection']}-{c['size']}-{c['ablation']}"
        if c["skyline"]:
            s = c["skyline"]
            lines.append(f"- seed {seed}, {cell}, held-out views of its own landmarks: CLIP-seen "
                         f"{_f(s['clip_seen']['accuracy'])}% (CLIP zero-shot top-1 {_f(s['clip_seen']['clip_top1'])}%, "
                         f"n {s['clip_seen']['n']}); CLIP-unseen {_f(s['clip_unseen']['accuracy'])}% "
                         f"(CLIP {_f(s['clip_unseen']['clip_top1'])}%, n {s['clip_unseen']['n']})")
        if c["latent"]:
            lines.append(f"- seed {seed}, baseline accuracy by (named in the generic corpus / CLIP): " + ", ".join(
                f"{k} {_f(v['accuracy'])}% (n {v['n']})" for k, v in c["latent"].items() if "any" not in k))
    return "\n".join(lines) + "\n"


def study_command(config: Path, overrides: list[str] = ()) -> int:
    """Run the synthetic Tables 1-3 for several seeds; write study.md / study.json with paired, pooled comparisons.

    Args:
        config: study YAML (configs/synth/study.yaml).
        overrides: field=value settings, e.g. seeds=[0] landmarks=200 out=runs/study-small
    """
    cfg = load_config(StudyConfig, config, list(overrides))
    with run_lock(cfg.out, "study"):
        return _study(cfg, config, overrides)


def _study(cfg: StudyConfig, config: Path, overrides: list[str]) -> int:
    from eeca.experiments.demo import build_testbed, experiment_config
    from eeca.experiments.runner import run_experiment

    t0 = time.perf_counter()
    runs, vocabularies, wall = [], [], 0.0
    for seed in cfg.seeds:
        times: dict[str, float] = {}
        folder = Path(cfg.out) / f"seed-{seed}"
        t_seed = time.perf_counter()
        tb = build_testbed(folder, Path(cfg.configs), seed, cfg.landmarks, times,
                           [f"split.test_fraction={cfg.test_fraction}", f"split.seed={seed}", f"seed={seed}"],
                           [f"seed={seed}", *cfg.synth_overrides])
        ecfg = experiment_config(tb, Path(cfg.configs), Path(cfg.grid), folder / "experiment")
        run_experiment(dataclasses.replace(ecfg, seed=seed))
        runs.append(folder / "experiment")
        vocabularies.append(ecfg.controls.vocabulary)
        wall += seed_wall(folder, time.perf_counter() - t_seed)
        write_study(cfg, runs, vocabularies, wall, config, overrides)  # the seeds so far
    print(f"study: {len(runs)} seeds -> {Path(cfg.out) / 'study.md'} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


def seed_wall(folder: Path, seconds: float) -> float:
    """The seconds spent on a seed's testbed and grid, summed over the invocations that worked on it
    (a rerun that finds everything done adds its checks only); kept in ``wall_s.json``."""
    path = folder / "wall_s.json"
    total = (read_json(path)["wall_s"] if path.exists() else 0.0) + seconds
    write_json(path, {"wall_s": total})
    return total


def write_study(cfg: StudyConfig, runs: list[Path], vocabularies: list[list[Path]], wall: float, config: Path,
                overrides) -> None:
    """study.json and study.md over the finished seeds' runs."""
    tables = pooled_tables(runs, cfg.bootstrap_samples)
    controls = cell_controls(runs, vocabularies)
    done = dataclasses.replace(cfg, seeds=cfg.seeds[:len(runs)])
    write_json(Path(cfg.out) / "study.json", {"seeds": done.seeds, "tables": tables, "cells": controls, "wall_s": wall})
    command = f"eeca study {config}" + (f" --overrides {' '.join(overrides)}" if overrides else "")
    atomic_write(Path(cfg.out) / "study.md", render_markdown(done, tables, controls, wall, command))
