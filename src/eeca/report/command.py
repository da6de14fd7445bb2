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

from tqdm import tqdm

from eeca.io import atomic_write, read_json
from eeca.report import figures as F
from eeca.report.browser import BrowserCell, browser_data, to_browser_html
from eeca.report.data import (
    Cell,
    cell_order,
    check_cells,
    load_analysis,
    load_results,
    load_train_log,
    paper_numbers,
)
from eeca.report.paired import paired_table
from eeca.report.probes import sweep_blocks, text_probe_blocks
from eeca.report.questions import CellAnswers, load_cell, load_truth, thumbnail
from eeca.report.render import Block, Bullets, Figure, Heading, Paragraph, Preformatted, to_html, to_markdown
from eeca.report.tables import NOT_RUN, NotRun, Table, count_tables, paper_tables, probe_tables


def report_command(run_dirs: list[str], out: str | None = None, analysis: str | None = None,
                   paper: bool = False) -> int:
    """Write an HTML report (figures embedded) and a markdown twin from experiment runs' result files.

    Args:
        run_dirs: one run directory (holds results.parquet and the cells' folders), or several (seeds,
            settings) to compare side by side, with paired comparisons pooled over them
        out: where to write report.html, report.md, browser.html and the figure PNGs (default RUN_DIR/report;
            needed with several runs)
        analysis: the subset analysis directory with tsne.parquet, category_counts.parquet, probe.parquet,
            knowledge.json (default: the first run's analysis/)
        paper: show the paper's published numbers beside ours even when the run's sizes are not
            the paper's 25k / 50k
    """
    runs = [Path(r) for r in run_dirs]
    if not runs or (len(runs) > 1 and not out):
        print("eeca report: " + ("name a run directory" if not runs else
                                 f"{len(runs)} runs: --out names the folder for their report"), file=sys.stderr)
        return 2
    out_dir = Path(out) if out else runs[0] / "report"
    analysis_dir = Path(analysis) if analysis else runs[0] / "analysis"
    names = run_names(runs)
    per_run, missing = [], []
    for run in runs:
        results = run / "results.parquet"
        cells = load_results(results) if results.is_file() else []
        if not cells:
            missing.append(f"{results} {'has no rows' if results.is_file() else 'not found'}: no result tables "
                           "or result figures")
        per_run.append((run, cells))
    every = [c for _, cells in per_run for c in cells]
    found = load_analysis(analysis_dir)
    if not every and found.tsne is None and found.category_counts is None and found.probe is None and not found.points:
        print(f"eeca report: nothing to report: {'; '.join(missing)} and no analysis files in {analysis_dir}",
              file=sys.stderr)
        return 2
    numbers = paper_numbers()
    paper_sizes = {int(n) for n in numbers["table1"]["values"]["BRS"]}
    show_paper = paper or any(c.size in paper_sizes for c in every)

    title = "eeca report: " + ", ".join(names[r] for r in runs)
    judges = sorted({c.judge for c in every})
    blocks: list[Block] = [Paragraph(f"Run director{'y' if len(runs) == 1 else 'ies'}: {', '.join(map(str, runs))}. " + (
        f"{len(every)} cell result(s), judge(s): {', '.join(judges)}. " if every else "")
        + ("The paper's published numbers are shown beside ours (columns marked 'paper')." if show_paper and every else ""))]
    answers = {(run, c.cell_dir): load_cell(run, c.cell_dir)
               for run, c in tqdm([(run, c) for run, cells in per_run for c in cells], desc="report: cells", unit="cell")}
    if len(runs) > 1:
        blocks += side_by_side(per_run, names, answers, judges)
    for run, cells in per_run:
        run_suffix = f" (run {names[run]})" if len(runs) > 1 else ""
        for judge in sorted({c.judge for c in cells}):
            suffix = run_suffix + (f" (judge: {judge})" if len(judges) > 1 else "")
            tag = re.sub(r"[^\w.-]+", "_", suffix.replace(" (run ", "-").replace(" (judge: ", "-").replace(")", ""))
            mine = [c for c in cells if c.judge == judge]
            blocks += _result_blocks([c for c in mine if c.sweep is None], numbers if show_paper else None, suffix, tag)
            if any(c.sweep for c in mine):  # Figure 7's cells stay out of Tables 1-7
                blocks += [Heading("Figure 7: robustness (App. A)" + suffix), *sweep_blocks(mine, tag)]
            paired = paired_table([(run, cells)], answers, judge, suffix) if len(runs) == 1 else None
            if paired is not None:
                blocks.insert(next(i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.text == "Figures" + suffix),
                              paired)
        blocks += _training_blocks(run, cells, run_suffix)
        blocks += text_probe_blocks(run, cells)
    blocks += _analysis_blocks(found)
    missing += found.missing
    if every:
        browsed, browser_missing = write_browser(per_run, answers, names, out_dir / "browser.html", title)
        if browsed:
            missing += browser_missing
            blocks.insert(1, Paragraph(f"Per-question browser: browser.html beside this page ({browsed}; "
                                       "image, truth, every cell's answers and every judge's verdict, filterable)."))
        else:
            blocks.append(NotRun("browser", "Per-question browser", "no cell has generate/generations.jsonl"))
    problems = [p for run, cells in per_run for p in check_cells(run, cells)]
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
    print(f"eeca report: {len(every)} cells, {len(tables)} tables, {len(figs)} figures, "
          f"{len(not_run)} not run, {len(missing)} missing, {len(problems)} checks -> {out_dir / 'report.html'}")
    return 0


def run_names(runs: list[Path]) -> dict[Path, str]:
    """A short name per run: its folder name, or the last two parts of its path where names repeat
    (``seed-0/experiment``, ``seed-1/experiment``)."""
    names = {r: r.resolve().name for r in runs}
    if len(set(names.values())) < len(runs):
        names = {r: "/".join(r.resolve().parts[-2:]) for r in runs}
    return names


def side_by_side(per_run: list[tuple[Path, list[Cell]]], names: dict[Path, str],
                 answers: dict[tuple[Path, str], CellAnswers], judges: list[str]) -> list[Block]:
    """Several runs in one place: what each holds, every cell's accuracy per run, and the paired
    comparisons pooled over the runs (:mod:`eeca.report.paired`)."""
    blocks: list[Block] = [Heading("Runs side by side")]
    rows = []
    for run, cells in per_run:
        seeds = sorted({str(read_json(p)["cell"].get("seed")) for c in cells
                        if (p := Path(run, c.cell_dir, "cell.json")).is_file() and "cell" in read_json(p)})
        rows.append([names[run], str(run), str(len({c.cell_dir for c in cells})), ", ".join(sorted({c.judge for c in cells})),
                     ", ".join(seeds)])
    blocks.append(Table("runs", "The runs", ["Run", "Directory", "Cells", "Judge(s)", "Seed(s) (cell.json)"], rows))
    for judge in judges:
        suffix = f" (judge: {judge})" if len(judges) > 1 else ""
        labels: dict[tuple, str] = {}
        for _, cells in per_run:
            for c in sorted(cells, key=cell_order):
                labels.setdefault((c.selection, c.size, c.ablation), c.label)
        table = []
        for k, label in labels.items():
            row = [label]
            for _, cells in per_run:
                c = next((c for c in cells if c.judge == judge and (c.selection, c.size, c.ablation) == k), None)
                row.append(NOT_RUN if c is None else f"{c.accuracy:.2f} [{c.acc_ci_low:.2f}, {c.acc_ci_high:.2f}] n={c.n}")
            table.append(row)
        blocks.append(Table("runs_accuracy" + re.sub(r"[^\w.-]+", "_", suffix), "Accuracy % [exact 95% CI] per run"
                            + suffix, ["Cell", *(names[r] for r, _ in per_run)], table))
        paired = paired_table(per_run, answers, judge, suffix)
        if paired is not None:
            blocks.append(paired)
    return blocks


def _result_blocks(cells: list[Cell], paper: dict | None, suffix: str, tag: str) -> list[Block]:
    """Tables 1-4, Figure 5, levels and intervals, App. D counts for the cells of one judge (named once, in
    each figure's caption)."""
    judged = f" Judge: {cells[0].judge}."
    blocks: list[Block] = [Heading("The paper's tables" + suffix), *paper_tables(cells, paper),
                           Heading("Figures" + suffix)]
    fig5 = F.size_figure(cells)
    if fig5 is None:
        blocks.append(NotRun(f"figure5{tag}", "Figure 5: accuracy vs data size",
                             "needs +data or EECA cells of one selection at two or more sizes"))
    else:
        blocks.append(Figure(f"fig5_accuracy_vs_size{tag}", "Figure 5: accuracy vs training data size.",
                             fig5, "Solid: +data per selection; dashed: EECA; dotted: untrained baseline." + judged))
    blocks += [Figure(f"levels{tag}", "Recognition levels per cell.", F.levels_figure(cells),
                      "Strongly Known + Known = accuracy (paper 3.1)." + judged),
               Figure(f"accuracy_ci{tag}", "Accuracy per cell with exact 95% interval (Clopper-Pearson).",
                      F.accuracy_figure(cells), judged.strip()),
               Heading("App. D: absolute counts" + suffix), *count_tables(cells, paper)]
    return blocks


def _training_blocks(run: Path, cells: list[Cell], suffix: str = "") -> list[Block]:
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
    tag = re.sub(r"[^\w.-]+", "_", suffix.replace(" (run ", "-").rstrip(")"))
    return [Heading("Training" + suffix), Figure("training_loss" + tag, "Training losses and learning rate per cell.",
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


def write_browser(runs: list[tuple[Path, list[Cell]]], loaded: dict[tuple[Path, str], CellAnswers],
                  names: dict[Path, str], path: Path, title: str) -> tuple[str, list[str]]:
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
            shown.append(BrowserCell(c.label + (f" [{names[run]}]" if len(runs) > 1 else ""), answers))
            if answers.test_json is not None:
                tests.setdefault(answers.test_json, answers.image_root)
    if not shown:
        return "", missing
    truth, thumbs = {}, {}
    for test_json, root in tests.items():
        for qid, t in tqdm(load_truth(test_json).items(), desc="report: thumbnails", unit="img"):
            truth.setdefault(qid, t)
            if qid not in thumbs and root is not None and t.image:
                thumbs[qid] = thumbnail(root / t.image)
    absent = sum(1 for q in truth if not thumbs.get(q))
    if absent:
        missing.append(f"{absent} of {len(truth)} test images not found (shown without image)")
    text = to_browser_html(title + ": questions", browser_data(shown, truth, thumbs))
    atomic_write(path, text)
    return f"{len(truth)} questions x {len(shown)} cells, {len(text.encode()) / 1e6:.1f} MB", missing
