"""Paired intervals for every comparison the report prints (paper 3.1, 3.3, 5.2, 5.3).

Two cells of a grid answer the same test questions, so a difference between them is paired: per
question, did b recognise the landmark where a did not (:func:`eeca.stats.paired_comparison`:
paired bootstrap over questions, stratified by run, and the exact McNemar test). The comparisons
are those the tables print:

* Table 1: each selection's +data cell against BRS of the same size;
* Tables 3 and 4: each ablation step against the step above it that was run (the baseline first);
* every other cell (Entity Prompt variants, EECA of Table 2) against the untrained baseline.

With several runs (seeds) the comparison is pooled over the runs that hold both cells, questions
resampled within each run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eeca.report.data import ABLATIONS, CHAIN, SELECTIONS, Cell
from eeca.report.questions import CellAnswers
from eeca.report.tables import Table
from eeca.stats import paired_comparison

RECOGNISED = ("strongly_known", "known")
Key = tuple[str, int, str]  # (selection, size, ablation)


def key(c: Cell) -> Key:
    return (c.selection, c.size, c.ablation)


def _order(k: Key) -> tuple:
    """As :func:`eeca.report.data.cell_order`: untrained first, then selection, size, ablation step."""
    return (SELECTIONS.index(k[0]) if k[0] in SELECTIONS else -1, k[1], ABLATIONS.index(k[2]))


@dataclass(frozen=True)
class Comparison:
    group: str
    a: Key
    b: Key


def comparisons(cells: list[Cell]) -> list[Comparison]:
    """The comparisons the tables print, among the cells present (each pair once, first reason wins)."""
    present = {key(c) for c in cells}
    base = next((k for k in sorted(present) if k[2] == "baseline"), None)
    out: list[Comparison] = []
    for sel, size, abl in sorted(present, key=_order):
        if abl == "data" and sel != "BRS" and ("BRS", size, "data") in present:
            out.append(Comparison("Table 1: selection vs BRS", ("BRS", size, "data"), (sel, size, abl)))
    for sel, size in sorted({(k[0], k[1]) for k in present if k[2] in CHAIN[1:]}, key=lambda k: _order((*k, "data"))):
        prev = base
        for step in CHAIN[1:]:
            if (sel, size, step) in present:
                if prev is not None:
                    out.append(Comparison("Tables 3-4: step vs the step above", prev, (sel, size, step)))
                prev = (sel, size, step)
    done = {(c.a, c.b) for c in out}
    if base is not None:
        out += [Comparison("Cell vs baseline", base, k) for k in sorted(present, key=_order)
                if k != base and (base, k) not in done]
    return out


def recognised(answers: CellAnswers, judge: str) -> dict[str, bool]:
    return {qid: level in RECOGNISED for qid, (level, _) in answers.verdicts.get(judge, {}).items()}


def paired_table(runs: list[tuple[Path, list[Cell]]], answers: dict[tuple[Path, str], CellAnswers], judge: str,
                 suffix: str = "", samples: int = 2000) -> Table | None:
    """One row per comparison with verdicts in at least one run; None when no comparison has any."""
    by_run = [{key(c): answers.get((run, c.cell_dir)) for c in cells if c.judge == judge} for run, cells in runs]
    labels = {key(c): c.label for _, cells in runs for c in cells}
    rows = []
    for comp in comparisons([c for _, cells in runs for c in cells if c.judge == judge]):
        pairs = []
        for cells in by_run:
            a, b = cells.get(comp.a), cells.get(comp.b)
            if a is not None and b is not None:
                va, vb = recognised(a, judge), recognised(b, judge)
                if va.keys() & vb.keys():
                    pairs.append((va, vb))
        if not pairs:
            continue
        r = paired_comparison(pairs, samples=samples, seed=0)
        rows.append([comp.group, f"{labels[comp.b]} vs {labels[comp.a]}",
                     f"{r['diff']:+.2f} [{r['diff_ci_low']:+.2f}, {r['diff_ci_high']:+.2f}]",
                     f"{r['accuracy_a']:.2f}", f"{r['accuracy_b']:.2f}", f"{r['a_only']} / {r['b_only']}",
                     f"{r['mcnemar_p']:.3g}", str(r["n"]), str(len(pairs))])
    if not rows:
        return None
    return Table("paired" + suffix.replace(" ", "_"), "Paired comparisons: b - a over the same test questions" + suffix,
                 ["Comparison", "b vs a", "b - a, points [95% CI]", "Accuracy a %", "Accuracy b %",
                  "Only a / only b", "McNemar p", "Questions", "Runs"], rows,
                 [f"Paired bootstrap over questions ({samples} resamples, stratified by run, percentile interval) "
                  "and exact McNemar test on recognised (Strongly Known or Known) or not; pooled over the runs "
                  "that hold both cells. Only a / only b: questions one cell recognised and the other not."])
