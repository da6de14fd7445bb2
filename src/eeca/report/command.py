"""``eeca report``: a run directory's results as the paper's tables and figures (HTML + markdown).

Assembles, from the files of :mod:`eeca.report.data`, the paper's Tables 1-4 (3.3, 5.2, 5.3), the
App. D count tables, Figures 3-5 and the level and interval plots, and writes ``report.html``
(self-contained) and ``report.md`` with its PNGs beside it. What a run lacks is listed as not run
or missing, never guessed. When the run's sizes are the paper's (25k, 50k), or with ``--paper``,
the paper's published numbers stand beside ours.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from pathlib import Path

from eeca.io import atomic_write
from eeca.report import figures as F
from eeca.report.data import Cell, check_cells, load_analysis, load_results, paper_numbers
from eeca.report.probes import sweep_blocks, text_probe_blocks
from eeca.report.render import Block, Bullets, Figure, Heading, Paragraph, Preformatted, to_html, to_markdown
from eeca.report.tables import NotRun, Table, count_tables, paper_tables


def report_command(run_dir: str, out: str | None = None, analysis: str | None = None,
                   paper: bool = False) -> int:
    """Write an HTML report (figures embedded) and a markdown twin from an experiment run's result files.

    Args:
        run_dir: the run directory (holds results.parquet and the cells' metrics.json)
        out: where to write report.html, report.md and the figure PNGs (default RUN_DIR/report)
        analysis: the subset analysis directory with tsne.parquet, category_counts.parquet, knowledge.json
            (default RUN_DIR/analysis)
        paper: show the paper's published numbers beside ours even when the run's sizes are not
            the paper's 25k / 50k
    """
    run = Path(run_dir)
    out_dir = Path(out) if out else run / "report"
    analysis_dir = Path(analysis) if analysis else run / "analysis"
    results = run / "results.parquet"
    cells = load_results(results) if results.is_file() else []
    found = load_analysis(analysis_dir)
    no_results = f"{results} {'has no rows' if results.is_file() else 'not found'}"
    if not cells and found.tsne is None and found.category_counts is None and found.probe is None:
        print(f"eeca report: nothing to report: {no_results} and no analysis files in {analysis_dir}",
              file=sys.stderr)
        return 2
    numbers = paper_numbers()
    paper_sizes = {int(n) for n in numbers["table1"]["values"]["BRS"]}
    show_paper = paper or any(c.size in paper_sizes for c in cells)

    missing = [] if cells else [f"{no_results}: no result tables or result figures"]
    blocks: list[Block] = [Paragraph(f"Run directory: {run}. " + (
        f"{len(cells)} cell result(s), judge(s): {', '.join(sorted({c.judge for c in cells}))}. "
        if cells else "") + ("The paper's published numbers are shown beside ours (columns marked "
                             "'paper')." if show_paper and cells else ""))]
    judges = sorted({c.judge for c in cells})
    for judge in judges:
        suffix = f" (judge: {judge})" if len(judges) > 1 else ""
        tag = "-" + re.sub(r"[^\w.-]+", "_", judge) if len(judges) > 1 else ""
        mine = [c for c in cells if c.judge == judge]
        blocks += _result_blocks([c for c in mine if c.sweep is None], numbers if show_paper else None, suffix, tag)
        if any(c.sweep for c in mine):  # Figure 7's cells stay out of Tables 1-7
            blocks += [Heading("Figure 7: robustness (App. A)" + suffix), *sweep_blocks(mine, tag)]
    blocks += text_probe_blocks(run, cells)
    blocks += _analysis_blocks(found)
    missing += found.missing
    problems = check_cells(run, cells)
    not_run = [b for b in blocks if isinstance(b, NotRun)]
    blocks.append(Heading("Not run, missing inputs and checks"))
    items = ([f"Not run: {b.title}." for b in not_run] + [f"Missing: {m}." for m in missing]
             + [f"Check: {p}." for p in problems])
    blocks.append(Bullets(items) if items else
                  Paragraph("Everything the report can show was found; all checks passed."))
    if show_paper:
        blocks += [Heading("Notes on the paper's numbers", 3), Bullets(numbers["notes"])]

    title = f"eeca report: {run.resolve().name}"
    figs = [b for b in blocks if isinstance(b, Figure)]
    for fig in figs:
        atomic_write(out_dir / f"{fig.name}.png", fig.png)
    atomic_write(out_dir / "report.md", to_markdown(title, blocks))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    atomic_write(out_dir / "report.html", to_html(title, blocks, stamp))
    tables = [b.key for b in blocks if isinstance(b, Table)]
    print(f"eeca report: {len(cells)} cells, {len(tables)} tables, {len(figs)} figures, "
          f"{len(not_run)} not run, {len(missing)} missing, {len(problems)} checks -> {out_dir / 'report.html'}")
    return 0


def _result_blocks(cells: list[Cell], paper: dict | None, suffix: str, tag: str) -> list[Block]:
    """Tables 1-4, Figure 5, levels and intervals, App. D counts for the cells of one judge."""
    blocks: list[Block] = [Heading("The paper's tables" + suffix), *paper_tables(cells, paper),
                           Heading("Figures" + suffix)]
    fig5 = F.size_figure(cells)
    if fig5 is None:
        blocks.append(NotRun(f"figure5{tag}", "Figure 5: accuracy vs data size",
                             "needs +data or EECA cells of one selection at two or more sizes"))
    else:
        blocks.append(Figure(f"fig5_accuracy_vs_size{tag}", "Figure 5: accuracy vs training data size.",
                             fig5, "Solid: +data per selection; dashed: EECA; dotted: untrained baseline."))
    blocks += [Figure(f"levels{tag}", "Recognition levels per cell.", F.levels_figure(cells),
                      "Strongly Known + Known = accuracy (paper 3.1)."),
               Figure(f"accuracy_ci{tag}", "Accuracy per cell with exact 95% interval (Clopper-Pearson).",
                      F.accuracy_figure(cells)),
               Heading("App. D: absolute counts" + suffix), *count_tables(cells, paper)]
    return blocks


def _analysis_blocks(found) -> list[Block]:
    """Figures 3 and 4 and the probe summary (paper 3.2), each where its file exists."""
    blocks: list[Block] = [Heading("Visual knowledge of the subsets (paper 3.2)")]
    if found.tsne:
        blocks.append(Figure("fig3_tsne", "Figure 3: t-SNE of the subsets' image embeddings.",
                             F.tsne_figure(found.tsne), "Colour: hierarchical label."))
    else:
        blocks.append(NotRun("figure3", "Figure 3: t-SNE of the subsets", "no t-SNE points"))
    if found.category_counts:
        blocks.append(Figure("fig4_categories", "Figure 4: hierarchical-label distribution per subset.",
                             F.category_figure(found.category_counts)))
    else:
        blocks.append(NotRun("figure4", "Figure 4: category distribution", "no category counts"))
    if found.probe is not None:
        blocks += [Heading("Probe summary (AUROC, S / RSR)", 3), *_probe_blocks(found.probe)]
    return blocks


def _probe_blocks(probe: object) -> list[Block]:
    """A flat key/value table for a JSON object of scalars (nested keys dotted), else the JSON itself."""
    flat: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", probe)
    if isinstance(probe, dict) and all(isinstance(v, (int, float, str, bool)) or v is None for v in flat.values()):
        rows = [[k, f"{v:.4f}" if isinstance(v, float) else str(v)] for k, v in flat.items()]
        return [Table("probe", "knowledge.json", ["Quantity", "Value"], rows)]
    return [Preformatted(json.dumps(probe, indent=2, sort_keys=True))]
