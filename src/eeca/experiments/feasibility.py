"""Can a grid finish? Every cell's inputs checked before the first cell trains (``eeca experiment``).

A grid of the paper's size trains for days; a cell that cannot exist (LCS-125k from a pool where only
70k images have both S and RSR below the median, paper 3.1), a missing base checkpoint or a recipe
with a typo must stop it before anything trains, with every problem listed at once. Checked:

* the files the experiment config names (train pool, the three recipes, the base checkpoint's
  ``config.json``);
* every cell's recipes, loaded with the overrides the cell will use, and the folders and files they
  read (train images, test records, judge truth);
* every trained cell's selection against the pool (:func:`eeca.knowledge.select.select_indices`:
  sizes, and LCS's candidates at the configured quantile).
"""

from __future__ import annotations

from pathlib import Path

from eeca.config import config_path, load_config
from eeca.evaluate.generate import GenerateConfig
from eeca.evaluate.judge import JudgeConfig
from eeca.experiments.grid import UNTRAINED, expand
from eeca.io import InputError
from eeca.knowledge.select import SelectionError, read_pool, select_indices
from eeca.train.recipes import TrainConfig


class InfeasibleGrid(InputError):
    """Some cells of a grid cannot run; the message lists every problem."""


def cell_label(cell: dict) -> str:
    """``<selection>-<size>-<ablation>``: a cell's name before its inputs (and so its id hash) exist."""
    return f"{cell['selection']}-{cell['size']}-{cell['ablation']}"


def grid_cells(cfg) -> list[dict]:
    """The grid's cells without their context hash (which needs the input files)."""
    return expand(cfg.grid, cfg.table, cfg.hc_weight, cfg.eac_weight, cfg.seed)


def grid_problems(cfg, source: str) -> list[str]:
    """Every reason a cell of ``cfg`` (an ``ExperimentConfig`` read from ``source``) could not finish."""
    from eeca.experiments.runner import generate_overrides, train_overrides

    problems: list[str] = []
    for name in ("train_records", "train_recipe", "generate", "judge"):
        path = config_path(getattr(cfg, name))  # a recipe may be named as shipped (configs/synth/stage3.yaml)
        if not path.is_file():
            problems.append(f"{source}: field '{name}': no such file {path}")
    if not (Path(cfg.base_model) / "config.json").is_file():
        problems.append(f"{source}: field 'base_model': {cfg.base_model} is not a checkpoint folder (no config.json)")
    cells = grid_cells(cfg)
    trained = [c for c in cells if c["ablation"] not in UNTRAINED]
    folder = Path(cfg.out) / "cells" / "<cell>"
    if trained and config_path(cfg.train_recipe).is_file():
        seen: set[str] = set()
        for cell in trained:
            _recipe_problems(lambda cell=cell: load_config(TrainConfig, cfg.train_recipe, train_overrides(cfg, cell, folder)),
                             lambda t: [("data.image_root", t.data.image_root)], problems, seen)
    if config_path(cfg.generate).is_file():
        seen = set()
        for cell in cells:
            _recipe_problems(
                lambda cell=cell: load_config(GenerateConfig, cfg.generate, generate_overrides(cfg, cell, folder / "train")),
                lambda g: [("test_json", g.test_json), ("image_root", g.image_root)], problems, seen)
    if config_path(cfg.judge).is_file():
        _recipe_problems(lambda: load_config(JudgeConfig, cfg.judge, [
            f"generations={folder / 'generate' / 'generations.jsonl'}", *cfg.judge_overrides]),
            lambda j: [("truth", j.truth)], problems, set())
    if trained and Path(cfg.train_records).is_file():
        problems += _selection_problems(cfg, trained)
    return problems


def _recipe_problems(load, inputs, problems: list[str], seen: set[str]) -> None:
    """Load one recipe; record its error, or each input path it names that does not exist (once each)."""
    try:
        recipe = load()
    except InputError as e:
        found = [str(e)]
    else:
        found = [f"field '{name}': no such file or folder {path}" for name, path in inputs(recipe)
                 if path is not None and not Path(path).exists()]
    for message in found:
        if message not in seen:
            seen.add(message)
            problems.append(message)


def _selection_problems(cfg, trained: list[dict]) -> list[str]:
    import numpy as np

    try:
        pool = read_pool(cfg.train_records)
    except (InputError, OSError, ValueError) as e:
        return [f"{cfg.train_records}: cannot read the train pool: {e}"]
    ids = np.asarray(pool.column("id").to_pylist(), dtype=object).astype(str)
    s = pool.column("s_gt").to_numpy().astype(np.float64)
    rsr = pool.column("rsr").to_numpy().astype(np.float64)
    problems = []
    for cell in trained:
        try:
            select_indices(ids, s, rsr, cell["selection"].lower(), cell["size"], seed=cell["seed"],
                           quantile=cfg.lcs_quantile)
        except SelectionError as e:
            problems.append(f"cell {cell_label(cell)}: {e}")
    return problems


def check_grid(cfg, source: str) -> None:
    """Raise :class:`InfeasibleGrid` listing every problem of the grid (nothing is written)."""
    problems = grid_problems(cfg, source)
    if problems:
        raise InfeasibleGrid(f"{source}: {len(problems)} problem(s), no cell was run:\n"
                             + "\n".join(f"  - {p}" for p in problems))
