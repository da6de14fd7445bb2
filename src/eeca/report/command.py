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
from eeca.report.browser import BrowserCell, browser_data, to_browser_html
from eeca.report.data import Cell, check_cells, load_analysis, load_results, load_train_log, paper_numbers
from eeca.report.paired import paired_table
from eeca.report.questions import CellAnswers, load_cell, load_truth, thumbnail
from eeca.report.render import Block, Bullets, Figure, Heading, Paragraph, Preformatted, to_html, to_markdown
from eeca.report.tables import NotRun, Table, count_tables, paper_tables, probe_tables


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
    if not cells and found.tsne is None and found.category_counts is None and found.probe is None and not found.points:
        print(f"eeca report: nothing to report: {no_results} and no analysis files in {analysis_dir}",
              file=sys.stderr)
        return 2
    numbers = paper_numbers()
    paper_sizes = {int(n) for n in numbers["table1"]["values"]["BRS"]}
    show_paper = paper or any(c.size in paper_sizes for c in cells)

    title = f"eeca report: {run.resolve().name}"
    missing = [] if cells else [f"{no_results}: no result tables or result figures"]
    blocks: list[Block] = [Paragraph(f"Run directory: {run}. " + (
        f"{len(cells)} cell result(s), judge(s): {', '.join(sorted({c.judge for c in cells}))}. "
        if cells else "") + ("The paper's published numbers are shown beside ours (columns marked "
                             "'paper')." if show_paper and cells else ""))]
    judges = sorted({c.judge for c in cells})
    answers = {(run, c.cell_dir): load_cell(run, c.cell_dir) for c in cells}
    for judge in judges:
        suffix = f" (judge: {judge})" if len(judges) > 1 else ""
        blocks += _result_blocks([c for c in cells if c.judge == judge], numbers if show_paper else None,
                                 suffix, "-" + re.sub(r"[^\w.-]+", "_", judge) if len(judges) > 1 else "")
        paired = paired_table([(run, cells)], answers, judge, suffix)
        if paired is not None:
            blocks.insert(next(i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.text == "Figures" + suffix),
                          paired)
    blocks += _training_blocks(run, cells)
    blocks += _analysis_blocks(found)
    missing += found.missing
    if cells:
        browsed, browser_missing = write_browser([(run, cells)], answers, out_dir / "browser.html", title)
        if browsed:
            missing += browser_missing
            blocks.insert(1, Paragraph(f"Per-question browser: browser.html beside this page ({browsed}; "
                                       "image, truth, every cell's answers and every judge's verdict, filterable)."))
        else:
            blocks.append(NotRun("browser", "Per-question browser", "no cell has generate/generations.jsonl"))
    problems = check_cells(run, cells)
    not_run = [b for b in blocks if isinstance(b, NotRun)]
    blocks.append(Heading("Not run, missing inputs and checks"))
    items = ([f"Not run: {b.title}." for b in not_run] + [f"Missing: {m}." for m in missing]
             + [f"Check: {p}." for p in problems])
    blocks.append(Bullets(items) if items else
                  Paragraph("Everything the report can show was found; all checks passed."))
    if show_paper:
        blocks += [Heading("Notes on the paper's numbers", 3), Bullets(numbers["notes"])]

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


def _training_blocks(run: Path, cells: list[Cell]) -> list[Block]:
    """Loss curves of every trained cell (paper 4.3) from its trainer_state.json."""
    logs, seen = [], set()
    for c in cells:
        if c.cell_dir in seen:
            continue
        seen.add(c.cell_dir)
        log = load_train_log(run, c.cell_dir)
        if log:
            logs.append((c.label, log))
    if not logs:
        return []
    return [Heading("Training"), Figure("training_loss", "Training losses and learning rate per cell.",
                                        F.loss_figure(logs), "From each cell's train/trainer_state.json "
                                        "(the Trainer's log every logging_steps); total = L_LM + l2 L_HC + l3 L_EAC "
                                        "(paper 4.3). Live curves: optim.report_to=tensorboard (docs/train.md).")]


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
    if found.probe is not None or found.points:
        blocks.append(Heading("The probe: S and RSR (paper 3.1, 3.2)", 3))
    if found.probe is not None:
        blocks += _probe_blocks(found.probe)
    hist = F.probe_histograms(found.points) if found.points else None
    if hist is not None:
        seen = any(p["subset"] == "all" and p["clip_seen"] is not None for p in found.points)
        blocks.append(Figure("probe_histograms", "S and RSR of " + ("landmarks the CLIP saw in training and the "
                             "others (synthetic world's truth)." if seen else "each subset."), hist,
                             "From probe.parquet (eeca knowledge analyze)."))
    roc = F.roc_figure(found.points) if found.points else None
    if roc is not None:
        blocks.append(Figure("probe_roc", "ROC of S and RSR for 'the CLIP saw this landmark', per image.", roc))
    return blocks


def _probe_blocks(probe: object) -> list[Block]:
    """knowledge.json of ``eeca knowledge analyze`` as tables (:func:`probe_tables`); any other JSON as a flat
    key/value table for an object of scalars (nested keys dotted), else the JSON itself."""
    if isinstance(probe, dict) and isinstance(probe.get("all"), dict) and isinstance(probe.get("subsets", {}), dict):
        return list(probe_tables(probe))
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


def write_browser(runs: list[tuple[Path, list[Cell]]], loaded: dict[tuple[Path, str], CellAnswers], path: Path,
                  title: str) -> tuple[str, list[str]]:
    """Write the per-question browser of the runs' cells (:mod:`eeca.report.browser`); returns what it holds
    (empty when no cell has answers) and what was missing."""
    shown, missing, seen = [], [], set()
    tests: dict[Path, Path | None] = {}  # test records -> image root
    for run, cells in runs:
        for c in cells:
            if (run, c.cell_dir) in seen:
                continue  # one cell, several judges: its folder holds every judge's verdicts
            seen.add((run, c.cell_dir))
            answers = loaded[(run, c.cell_dir)]
            missing += answers.missing
            if not answers.answers:
                continue
            shown.append(BrowserCell(c.label + (f" [{run.name}]" if len(runs) > 1 else ""), answers))
            if answers.test_json is not None:
                tests.setdefault(answers.test_json, answers.image_root)
    if not shown:
        return "", missing
    truth, thumbs = {}, {}
    for test_json, root in tests.items():
        for qid, t in load_truth(test_json).items():
            truth.setdefault(qid, t)
            if qid not in thumbs and root is not None and t.image:
                thumbs[qid] = thumbnail(root / t.image)
    absent = sum(1 for q in truth if not thumbs.get(q))
    if absent:
        missing.append(f"{absent} of {len(truth)} test images not found (shown without image)")
    text = to_browser_html(title + ": questions", browser_data(shown, truth, thumbs))
    atomic_write(path, text)
    return f"{len(truth)} questions x {len(shown)} cells, {len(text.encode()) / 1e6:.1f} MB", missing
