"""The files a report reads: the experiment results table, per-cell metrics, subset analysis, the paper's numbers.

Only files are read here (no torch, no model code), so a report can be made on any machine that
holds a run directory. Contracts (DESIGN section 3 and the cross-area contracts):

* ``RUN_DIR/results.parquet``: one row per evaluated cell of the grid (paper 3.3, 5.2, 5.3), with
  the four recognition levels of paper 3.1 as percentages and counts, accuracy = SK + K, and its
  exact 95% interval (Clopper-Pearson). Validated on load: a missing column, a null, or an unknown selection or
  ablation is an error naming the file, the row and the field.
* ``<cell_dir>/metrics.json``: cross-checked against the results row (a mismatch is reported).
* ``<analysis>/tsne.parquet``, ``category_counts.parquet``, ``knowledge.json``: optional (paper 3.2).
* ``paper_numbers.json`` (package data): the paper's Tables 1-4, 6 and 7 as printed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pyarrow as pa

from eeca.io import read_json, read_parquet

LEVELS = ("strongly_known", "known", "weakly_unknown", "unknown")
LEVEL_NAMES = {"strongly_known": "Strongly Known", "known": "Known",
               "weakly_unknown": "Weakly Unknown", "unknown": "Unknown"}
SELECTIONS = ("HDS", "HSS", "LCS", "BRS")
# the cumulative ablation chain of Tables 3 and 4, then the Entity Prompt variants of Table 2
CHAIN = ("baseline", "data", "hr", "hc", "eac")
# hr_eac: HR + L_EAC without L_HC, the third step of the other loss order (Table 3, eac_first)
ABLATIONS = (*CHAIN[:4], "hr_eac", CHAIN[4], "entity_prompt_infer", "entity_prompt_train")

_STR, _INT, _FLOAT = "str", "int", "float"
RESULT_COLUMNS = {
    "cell_id": _STR, "table": _STR, "selection": _STR, "size": _INT, "ablation": _STR, "judge": _STR,
    "n": _INT, "n_failed": _INT,
    **{level: _FLOAT for level in LEVELS},
    "accuracy": _FLOAT, "acc_ci_low": _FLOAT, "acc_ci_high": _FLOAT,
    **{f"count_{level}": _INT for level in LEVELS},
    "cell_dir": _STR,
}
# the controls of each cell (eeca.experiments.controls): absent from older runs, empty where not run
CONTROL_COLUMNS = ("degenerate_pct", "chance_accuracy", "chance_weakly_unknown", "skyline_clip_seen_accuracy",
                   "skyline_clip_seen_clip_top1", "skyline_clip_unseen_accuracy", "skyline_clip_unseen_clip_top1")


@dataclass(frozen=True)
class Cell:
    """One row of results.parquet: a (selection, size, ablation) cell scored by one judge."""

    cell_id: str
    table: str
    selection: str
    size: int
    ablation: str
    judge: str
    n: int
    n_failed: int
    strongly_known: float
    known: float
    weakly_unknown: float
    unknown: float
    accuracy: float
    acc_ci_low: float
    acc_ci_high: float
    count_strongly_known: int
    count_known: int
    count_weakly_unknown: int
    count_unknown: int
    cell_dir: str
    controls: dict = field(default_factory=dict)  # CONTROL_COLUMNS present in the run, None where not run
    sweep: tuple[str, float] | None = None  # (parameter, value) of a Figure 7 sweep cell; None for the others

    def pct(self, level: str) -> float:
        return getattr(self, level)

    def count(self, level: str) -> int:
        return getattr(self, f"count_{level}")

    @property
    def subset(self) -> str:
        """``HSS-50k``: the selection and size the cell was trained on (empty for untrained cells)."""
        return "" if self.selection == "none" else f"{self.selection}-{fmt_size(self.size)}"

    @property
    def label(self) -> str:
        step = {"baseline": "baseline", "data": "", "hr": "+HR", "hc": "+HR +L_HC", "hr_eac": "+HR +L_EAC", "eac": "EECA",
                "entity_prompt_infer": "Entity Prompt (inference)",
                "entity_prompt_train": "Entity Prompt (training + inference)"}[self.ablation]
        swept = f"{self.sweep[0]}={self.sweep[1]:g}" if self.sweep else ""
        return " ".join(p for p in (self.subset, step, swept) if p)


def cell_order(c: Cell) -> tuple:
    """Untrained cells first, then by selection (HDS, HSS, LCS, BRS), size and ablation step."""
    return (SELECTIONS.index(c.selection) if c.selection in SELECTIONS else -1, c.size,
            ABLATIONS.index(c.ablation), c.judge)


def fmt_size(size: int) -> str:
    """25000 -> '25k' (the paper's way of naming data sizes); sizes not in thousands stay as they are."""
    return f"{size // 1000}k" if size >= 1000 and size % 1000 == 0 else str(size)


def load_results(path: Path) -> list[Cell]:
    """Read and validate results.parquet (errors name the file, the row (1-based) and the field), in :func:`cell_order`."""
    table = read_parquet(path)
    missing = [c for c in RESULT_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (expected the results "
                         f"schema: {', '.join(RESULT_COLUMNS)})")
    for name, kind in RESULT_COLUMNS.items():
        typ = table.schema.field(name).type
        ok = {_STR: pa.types.is_string(typ) or pa.types.is_large_string(typ),
              _INT: pa.types.is_integer(typ),
              _FLOAT: pa.types.is_floating(typ) or pa.types.is_integer(typ)}[kind]
        if not ok:
            raise ValueError(f"{path}: column {name!r} has type {typ}, expected {kind}")
    cells: list[Cell] = []
    seen = set()
    controls = {k: table.column(k).to_pylist() for k in CONTROL_COLUMNS if k in table.column_names}
    sweeps = (list(zip(table.column("sweep_param").to_pylist(), table.column("sweep_value").to_pylist(), strict=True))
              if {"sweep_param", "sweep_value"} <= set(table.column_names) else [(None, None)] * table.num_rows)
    for i, row in enumerate(table.select(list(RESULT_COLUMNS)).to_pylist(), 1):
        where = f"{path}: row {i} (cell_id {row['cell_id']!r})"
        for name, value in row.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                raise ValueError(f"{where}: field {name!r} is empty")
        if row["selection"] not in (*SELECTIONS, "none"):
            raise ValueError(f"{where}: field 'selection' is {row['selection']!r}, expected one of "
                             f"{', '.join((*SELECTIONS, 'none'))}")
        if row["ablation"] not in ABLATIONS:
            raise ValueError(f"{where}: field 'ablation' is {row['ablation']!r}, expected one of "
                             f"{', '.join(ABLATIONS)}")
        key = (row["cell_id"], row["judge"])
        if key in seen:
            raise ValueError(f"{where}: a second row for cell {row['cell_id']!r} and judge {row['judge']!r}")
        seen.add(key)
        cells.append(Cell(**{k: float(v) if RESULT_COLUMNS[k] == _FLOAT else v for k, v in row.items()},
                          controls={k: controls[k][i - 1] for k in controls},
                          sweep=None if sweeps[i - 1][0] is None else (sweeps[i - 1][0], float(sweeps[i - 1][1]))))
    return sorted(cells, key=cell_order)


def check_cells(run_dir: Path, cells: list[Cell]) -> list[str]:
    """Problems a reader must see: failed judgments, accuracy != SK + K, metrics.json disagreeing."""
    problems = []
    for c in cells:
        if c.n_failed:
            problems.append(f"{c.cell_id} ({c.judge}): {c.n_failed} of {c.n} judgments failed "
                            f"(counted apart, not scored as Unknown)")
        if abs(c.accuracy - (c.strongly_known + c.known)) > 0.01:
            problems.append(f"{c.cell_id} ({c.judge}): accuracy {c.accuracy:.2f} != Strongly Known + Known "
                            f"{c.strongly_known + c.known:.2f}")
        if not c.acc_ci_low <= c.accuracy <= c.acc_ci_high:
            problems.append(f"{c.cell_id} ({c.judge}): exact interval [{c.acc_ci_low:.2f}, "
                            f"{c.acc_ci_high:.2f}] does not contain the accuracy {c.accuracy:.2f}")
        metrics_path = Path(run_dir, c.cell_dir, "metrics.json")  # an absolute cell_dir stays absolute
        if not metrics_path.is_file():
            problems.append(f"{c.cell_id}: {metrics_path} not found (results row not cross-checked)")
            continue
        metrics = read_json(metrics_path)
        if metrics.get("judge", c.judge) != c.judge:
            continue  # this metrics.json is another judge's verdicts on the same cell
        diffs = _metrics_diffs(metrics, c)
        if diffs:
            problems.append(f"{c.cell_id}: {metrics_path} disagrees with results.parquet: {'; '.join(diffs)}")
    return problems


def _metrics_diffs(metrics: dict, c: Cell) -> list[str]:
    """Fields of a metrics JSON that differ from the results row (counts as ``counts[level]`` or ``count_<level>``)."""
    counts = metrics.get("counts", {}) if isinstance(metrics.get("counts"), dict) else {}
    expected = {"n": c.n, "n_failed": c.n_failed, "accuracy": c.accuracy,
                **{f"count_{lv}": c.count(lv) for lv in LEVELS}}
    found = {"n": metrics.get("n"), "n_failed": metrics.get("n_failed"), "accuracy": metrics.get("accuracy"),
             **{f"count_{lv}": counts.get(lv, metrics.get(f"count_{lv}")) for lv in LEVELS}}
    out = []
    for name, want in expected.items():
        got = found[name]
        if got is None:
            out.append(f"{name} missing")
        elif abs(float(got) - want) > 0.01:
            out.append(f"{name} {got} vs {want}")
    return out


@dataclass
class Analysis:
    """The subset analysis of paper 3.2 (t-SNE points, category counts, probe summary), each optional."""

    tsne: list[dict] | None = None
    category_counts: list[dict] | None = None
    probe: object = None
    points: list[dict] | None = None  # probe.parquet: per-image S, RSR, subset and clip_seen
    missing: list[str] = field(default_factory=list)


def load_analysis(directory: Path) -> Analysis:
    """Read what exists of ``tsne.parquet``, ``category_counts.parquet``, ``probe.parquet`` and ``knowledge.json``."""
    out = Analysis()
    specs = {"tsne": ("tsne.parquet", ("subset", "x", "y", "hierarchical_label")),
             "category_counts": ("category_counts.parquet", ("subset", "hierarchical_label", "count")),
             "points": ("probe.parquet", ("subset", "s_gt", "rsr", "clip_seen"))}
    for attr, (name, columns) in specs.items():
        path = directory / name
        if not path.is_file():
            out.missing.append(f"{path} not found")
            continue
        table = read_parquet(path)
        absent = [c for c in columns if c not in table.column_names]
        if absent:
            raise ValueError(f"{path}: missing column(s) {', '.join(absent)}")
        setattr(out, attr, table.select(list(columns)).to_pylist())
    probe = directory / "knowledge.json"
    if probe.is_file():
        out.probe = read_json(probe)
    else:
        out.missing.append(f"{probe} not found")
    return out


# the per-step series of a training log (paper 4.3: L = L_LM + l2 L_HC + l3 L_EAC) and the learning rate
LOSS_KEYS = {"loss_lm": "L_LM", "loss_hc": "L_HC", "loss_eac": "L_EAC", "loss": "total", "learning_rate": "learning rate"}


def load_train_log(run_dir: Path, cell_dir: str) -> dict[str, list[tuple[int, float]]] | None:
    """``key -> [(step, value)]`` for :data:`LOSS_KEYS` from the cell's ``train/trainer_state.json``
    (the Trainer's ``log_history``; a killed run's latest ``checkpoint-*``); None for an untrained cell."""
    train = Path(run_dir, cell_dir, "train")
    state = train / "trainer_state.json"
    if not state.is_file():
        checkpoints = sorted((int(p.parent.name[len("checkpoint-"):]), p) for p in train.glob("checkpoint-*/trainer_state.json")
                             if p.parent.name[len("checkpoint-"):].isdigit())
        if not checkpoints:
            return None
        state = checkpoints[-1][1]
    series: dict[str, list[tuple[int, float]]] = {}
    for entry in read_json(state).get("log_history", []):
        for key in LOSS_KEYS:
            if isinstance(entry.get(key), (int, float)) and "step" in entry:
                series.setdefault(key, []).append((int(entry["step"]), float(entry[key])))
    return series or None


def paper_numbers() -> dict:
    """The paper's published numbers (package data ``paper_numbers.json``)."""
    return json.loads(resources.files("eeca.report").joinpath("paper_numbers.json").read_text("utf-8"))
