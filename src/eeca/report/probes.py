"""The paper's probes beside its tables: Figure 1's text-only probe and Figure 7's robustness sweeps.

* Figure 1 (paper section 2): VE-known x LLM-known, a 2 x 2 count of the test landmarks by whether
  the CLIP's zero-shot top-1 is right and whether the LLM describes the landmark from its name alone
  (``text_probe.json`` of the baseline cell, written by ``eeca.experiments.probe.text_knowledge``).

* Figure 7: accuracy against each swept hyperparameter (the balancing coefficient, the sparsification
  threshold sigma, the number of HR tokens), one panel per parameter, one line per
  (subset, ablation step), with the exact 95% interval of every point; and the same numbers as a table.
  The cells come from grid blocks with ``sweep`` (:mod:`eeca.experiments.grid`).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure as MplFigure

from eeca.io import read_json
from eeca.report.data import Cell
from eeca.report.figures import SELECTION_COLOURS, png
from eeca.report.render import Block, Figure, Heading
from eeca.report.tables import NotRun, Table, num

SWEEP_NAMES = {"hc_loss_weight": "L_HC weight (l2)", "eac_loss_weight": "L_EAC weight (l3)",
               "eac_sigma": "sparsification threshold sigma", "num_hr_latents": "number of HR tokens P"}


def sweep_lines(cells: list[Cell]) -> dict[str, dict[str, list[Cell]]]:
    """parameter -> line label (subset and step) -> its cells by increasing value."""
    out: dict[str, dict[str, list[Cell]]] = {}
    for c in cells:
        if c.sweep is not None:
            out.setdefault(c.sweep[0], {}).setdefault(f"{c.subset} {c.ablation}", []).append(c)
    return {p: {k: sorted(v, key=lambda c: c.sweep[1]) for k, v in sorted(lines.items())}
            for p, lines in sorted(out.items())}


def sweep_figure(lines: dict[str, dict[str, list[Cell]]]) -> bytes:
    fig = MplFigure(figsize=(4.2 * len(lines), 3.8))
    for i, (param, by_line) in enumerate(lines.items(), 1):
        ax = fig.add_subplot(1, len(lines), i)
        for label, line in by_line.items():
            xs = [c.sweep[1] for c in line]
            err = [[max(0.0, c.accuracy - c.acc_ci_low) for c in line], [max(0.0, c.acc_ci_high - c.accuracy) for c in line]]
            ax.errorbar(xs, [c.accuracy for c in line], yerr=err, marker="o", capsize=3, label=label,
                        color=SELECTION_COLOURS.get(line[0].selection))
        values = [c.sweep[1] for line in by_line.values() for c in line]
        if min(values) > 0 and max(values) / min(values) >= 8:  # weights and token counts go by factors of 2
            ax.set_xscale("log", base=2)
        ax.set_xlabel(SWEEP_NAMES.get(param, param))
        ax.set_ylabel("accuracy, %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


def sweep_blocks(cells: list[Cell], tag: str = "") -> list[Block | Table | NotRun]:
    """Figure 7 and its table for the sweep cells of one judge (a NotRun when there are none)."""
    lines = sweep_lines(cells)
    if not lines:
        return [NotRun(f"figure7{tag}", "Figure 7: robustness to hyperparameters",
                       "needs grid blocks with sweep (e.g. configs/synth/fig7.yaml)")]
    rows = [[SWEEP_NAMES.get(p, p), label, f"{c.sweep[1]:g}", f"{num(c.accuracy)} [{num(c.acc_ci_low)}, "
             f"{num(c.acc_ci_high)}]", str(c.n)]
            for p, by_line in lines.items() for label, line in by_line.items() for c in line]
    return [Figure(f"fig7_sweeps{tag}", "Figure 7: accuracy against each swept hyperparameter (App. A).",
                   sweep_figure(lines), "Exact 95% intervals (Clopper-Pearson); one line per subset and step."),
            Table(f"fig7{tag}", "Figure 7's points", ["Parameter", "Cells", "Value", "Accuracy % [95% CI]", "n"], rows)]


def text_probe_blocks(run: Path, cells: list[Cell]) -> list[Block | Table]:
    """Figure 1's VE-known x LLM-known table from the baseline cell's ``text_probe.json`` ([] without one)."""
    for c in cells:
        path = Path(run, c.cell_dir, "text_probe.json")
        if c.ablation == "baseline" and path.is_file():
            probe = read_json(path)
            break
    else:
        return []
    t = probe["table"]
    rows = [[name, str(t[f"{ve}/llm_known"]), str(t[f"{ve}/llm_unknown"]),
             str(t[f"{ve}/llm_known"] + t[f"{ve}/llm_unknown"])]
            for name, ve in (("right (VE-known)", "ve_known"), ("wrong (VE-unknown)", "ve_unknown"))]
    rows.append(["total", *(str(sum(t[f"{ve}/{llm}"] for ve in ("ve_known", "ve_unknown")))
                            for llm in ("llm_known", "llm_unknown")), str(probe["ve_measured"])])
    notes = [f"{probe['n']} test landmarks of the untrained baseline, asked text only: \"{probe['prompt']}\"; "
             f"{probe['llm_known']} described. The LLM knows a landmark when its answer holds the landmark's "
             "town, or its country and one of its entities, or two of its entities (the rule judge's hints, "
             "the name taken out: the question gives it).",
             f"{probe['n'] - probe['ve_measured']} landmark(s) without the CLIP's top-1 are left out of the counts."
             if probe["ve_measured"] < probe["n"] else "CLIP top-1 on the landmark's test image(s), zero-shot."]
    return [Heading("Figure 1: what the LLM knows without the image (paper section 2)"),
            Table("text_probe", "VE-known x LLM-known: CLIP top-1 on the image x the LLM's text-only description",
                  ["CLIP top-1", "LLM describes it", "LLM does not", "total"], rows, notes)]
