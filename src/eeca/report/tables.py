"""The paper's result tables rebuilt from a run's cells: Tables 1-4 and the absolute counts of App. D.

* Table 1 (paper 3.3): selection x data size, accuracy with its difference to BRS of the same size,
  and the paper's own unit, the gain over the untrained baseline in percent of the baseline's
  accuracy (the paper's HSS-50k 60.4 is (13.92 - 8.68) / 8.68; see ``paper_numbers.json``).
* Table 2 (paper 5.2): Entity Prompt variants against EECA, Strongly Known and Known.
* Table 3 (paper 5.2): the cumulative ablation (baseline, +data, +HR, +L_HC, +L_EAC), each row's
  difference to the row above it; a second Table 3 with +L_EAC before +L_HC when the run has
  ``hr_eac`` cells (the paper's loss symbols were lost, so its order is an assumption, said beside
  the paper's numbers).
* Table 4 (paper 5.3): the same steps on HDS, HSS and LCS of one size, differences to the baseline.
* Tables 6 and 7 (App. D): the absolute level counts behind Tables 3 and 4; and every cell's counts.

Cells are found by what they are (selection, size, ablation), not by the run's table name, so one
run directory holding any part of the grid gives every table it has the cells for. A table that
lacks them comes back as :class:`NotRun` with the reason. With ``paper`` numbers given, the paper's
values stand in extra columns beside ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eeca.report.data import CHAIN, LEVEL_NAMES, LEVELS, SELECTIONS, Cell, cell_order, fmt_size

# the paper's row order in Table 1, with its category column
TABLE1_ORDER = (("BRS", "Reference"), ("LCS", "VE-Unknown"), ("HSS", "VE-Known"), ("HDS", "VE-Known"))
STEP_NAMES = {"baseline": "Baseline", "hr": "+ HR Branch", "hc": "+ L_HC", "eac": "+ L_EAC"}
NOT_RUN = "not run"
# Table 3's two loss orders (the paper's loss symbols were lost): the chain of cells and the name of
# each loss row, what it adds to the row above
ORDERS = {"hc_first": (CHAIN, {"hc": "+ L_HC", "eac": "+ L_EAC"}),
          "eac_first": ((*CHAIN[:3], "hr_eac", "eac"), {"hr_eac": "+ L_EAC", "eac": "+ L_HC"})}
ORDER_NOTE = ("Assumed: the paper's loss symbols were lost in its text; its two rows after + HR Branch are "
              "shown in printed order and read as {} (the grid's ablation hr_eac runs the other order).")


@dataclass
class Table:
    """A rendered-ready table: strings only, the same object feeds the HTML and the markdown."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


@dataclass
class NotRun:
    """A table the run has no cells for, with what it would need."""

    key: str
    title: str
    reason: str


def num(value: float) -> str:
    return f"{value:.2f}"


def with_delta(value: float, ref: float | None) -> str:
    return num(value) if ref is None else f"{value:.2f} ({value - ref:+.2f})"


def find(cells: list[Cell], ablation: str, selection: str = "none", size: int | None = None) -> Cell | None:
    """The cell of that ablation, selection and size (untrained cells: selection 'none', any size)."""
    for c in sorted(cells, key=lambda c: (c.table, c.cell_id)):
        if c.ablation == ablation and c.selection == selection and (size is None or c.size == size):
            return c
    return None


def chain_key(cells: list[Cell]) -> tuple[str, int] | None:
    """The (selection, size) of Table 3: the one with the most ablation steps run (ties: larger size)."""
    steps: dict[tuple[str, int], set[str]] = {}
    for c in cells:
        if c.ablation in (*CHAIN[1:], "hr_eac") and c.selection in SELECTIONS:
            steps.setdefault((c.selection, c.size), set()).add(c.ablation)
    keys = [k for k, s in steps.items() if s & {"hr", "hc", "hr_eac", "eac"}]
    if not keys:
        return None
    return min(keys, key=lambda k: (-len(steps[k]), -k[1], SELECTIONS.index(k[0])))


def table4_size(cells: list[Cell]) -> int | None:
    """The size of Table 4: one where at least two of HDS/HSS/LCS have steps beyond +data."""
    by_size: dict[int, set[str]] = {}
    for c in cells:
        if c.ablation in ("hr", "hc", "eac") and c.selection in ("HDS", "HSS", "LCS"):
            by_size.setdefault(c.size, set()).add(c.selection)
    sizes = [s for s, sels in by_size.items() if len(sels) >= 2]
    return min(sizes, key=lambda s: (-len(by_size[s]), s)) if sizes else None


def table1(cells: list[Cell], paper: dict | None) -> list[Table | NotRun]:
    title = "Table 1: accuracy by data selection and size"
    # reverse order so that, as in find(), the first cell by (table, cell_id) wins a duplicate key
    grid = {(c.selection, c.size): c for c in sorted(cells, key=lambda c: (c.table, c.cell_id), reverse=True)
            if c.ablation == "data" and c.selection in SELECTIONS}
    if len(grid) < 2:
        return [NotRun("table1", title, f"needs +data cells for at least two selection x size pairs; "
                                         f"found {len(grid)}")]
    sizes = sorted({n for _, n in grid})
    order = [(s, cat) for s, cat in TABLE1_ORDER if any((s, n) in grid for n in sizes)]
    notes = ["In parentheses: difference to BRS of the same size (percentage points)."]

    def rows(value) -> list[list[str]]:
        out = []
        for sel, cat in order:
            row = [cat, sel]
            for n in sizes:
                cell, ref = grid.get((sel, n)), grid.get(("BRS", n))
                row.append(NOT_RUN if cell is None else
                           with_delta(value(cell), None if sel == "BRS" or ref is None else value(ref)))
            out.append(row)
        return out

    acc = Table("table1", title + " (accuracy = Strongly Known + Known, %)",
                ["Category", "Selection", *map(fmt_size, sizes)], rows(lambda c: c.accuracy), notes)
    base = find(cells, "baseline")
    if base is None or base.accuracy == 0:
        why = "no baseline cell" if base is None else "the baseline's accuracy is 0"
        return [acc, NotRun("table1_gain", "Table 1 in the paper's unit (gain over the baseline)",
                            f"{why}, so the gain over it is undefined")]
    gain = Table("table1_gain", "Table 1 in the paper's unit: gain over the untrained baseline "
                 f"({num(base.accuracy)}% accuracy), in % of the baseline",
                 ["Category", "Selection", *map(fmt_size, sizes)],
                 rows(lambda c: 100 * (c.accuracy - base.accuracy) / base.accuracy), list(notes))
    if paper:
        values = paper["table1"]["values"]
        matched = [n for n in sizes if str(n) in values["BRS"]]
        gain.columns += [f"{fmt_size(n)} (paper)" for n in matched]
        for row in gain.rows:
            row += [with_delta(values[row[1]][str(n)], None if row[1] == "BRS" else values["BRS"][str(n)])
                    for n in matched]
        if not matched:
            gain.notes.append("The paper's sizes (" + ", ".join(fmt_size(int(n)) for n in values["BRS"])
                              + ") are not in this run; no paper column.")
    return [acc, gain]


def _chain_rows(cells: list[Cell], key: tuple[str, int], chain: tuple[str, ...] = CHAIN) -> list[tuple[str, Cell | None]]:
    """(ablation, cell) for each step of the chain at ``key``; the baseline is the untrained cell."""
    return [(a, find(cells, "baseline") if a == "baseline" else find(cells, a, *key)) for a in chain]


def _step_name(ablation: str, data_label: str) -> str:
    return data_label if ablation == "data" else STEP_NAMES[ablation]


def table3(cells: list[Cell], paper: dict | None) -> list[Table | NotRun]:
    """Table 3 in each loss order the run has cells for (+ L_HC first unless only hr_eac cells ran)."""
    key = chain_key(cells)
    if key is None:
        return [NotRun("table3", "Table 3: ablation", "needs +HR, +L_HC or +L_EAC cells")]
    ran = {c.ablation for c in cells if (c.selection, c.size) == key}
    orders = [o for o, third in (("hc_first", "hc"), ("eac_first", "hr_eac")) if third in ran] or ["hc_first"]
    return [table3_order(cells, paper, key, order) for order in orders]


def table3_order(cells: list[Cell], paper: dict | None, key: tuple[str, int], order: str) -> Table:
    chain, names = ORDERS[order]
    subset = f"{key[0]}-{fmt_size(key[1])}"
    columns = ["Method", "Strongly Known", "Known", "Accuracy"]
    p = paper["table3"] if paper else None
    if p:
        columns += ["Strongly Known (paper)", "Known (paper)", "Accuracy (paper)"]
    rows, prev = [], None
    for (ablation, cell), printed in zip(_chain_rows(cells, key, chain), CHAIN, strict=True):
        row = [names.get(ablation) or _step_name(ablation, f"+ {subset}")]
        if cell is None:
            row += [NOT_RUN] * 3
        else:
            row += [with_delta(getattr(cell, f), None if prev is None else getattr(prev, f))
                    for f in ("strongly_known", "known", "accuracy")]
            prev = cell
        if p:  # the paper's row at the same position
            row += [num(p["rows"][printed][f]) for f in ("strongly_known", "known", "accuracy")]
        rows.append(row)
    notes = [f"{subset}; in parentheses: difference to the row above that was run (percentage points)."]
    if p:
        notes.append(f"Paper: {p['selection']}-{fmt_size(p['size'])}. "
                     + ORDER_NOTE.format(" then ".join(names[a] for a in chain[3:])))
    title = "Table 3: ablation" + (", + L_EAC first" if order == "eac_first" else "")
    return Table("table3" if order == "hc_first" else "table3_eac_first", f"{title} on {subset} (%)", columns,
                 rows, notes)


def table2(cells: list[Cell], paper: dict | None) -> Table | NotRun:
    title = "Table 2: Entity Prompt"
    prompted = [c for c in cells if c.ablation in ("entity_prompt_infer", "entity_prompt_train")]
    if not prompted:
        return NotRun("table2", title, "needs entity_prompt_infer or entity_prompt_train cells")
    keys = sorted({(c.selection, c.size) for c in prompted if c.ablation == "entity_prompt_train"},
                  key=lambda k: (SELECTIONS.index(k[0]), k[1]))
    if not keys and chain_key(cells):
        keys = [chain_key(cells)]
    entries = [("baseline", "Baseline", find(cells, "baseline")),
               ("entity_prompt_infer", "Entity Prompt (Inference Only)", find(cells, "entity_prompt_infer"))]
    for key in keys:
        subset = f" ({key[0]}-{fmt_size(key[1])})"
        entries += [("entity_prompt_train", "Entity Prompt (Training + Inference)" + subset,
                     find(cells, "entity_prompt_train", *key)),
                    ("eac", "EECA" + subset, find(cells, "eac", *key))]
    columns = ["Method", "Strongly Known", "Known", "Accuracy"]
    if paper:
        columns += ["Strongly Known (paper)", "Known (paper)"]
    rows = []
    for ablation, name, cell in entries:
        row = [name] + ([NOT_RUN] * 3 if cell is None else
                        [num(cell.strongly_known), num(cell.known), num(cell.accuracy)])
        if paper:
            row += [num(paper["table2"][ablation][f]) for f in ("strongly_known", "known")]
        rows.append(row)
    return Table("table2", f"{title} (%)", columns, rows)


def table4(cells: list[Cell], paper: dict | None) -> Table | NotRun:
    title = "Table 4: generalisability across subsets"
    size = table4_size(cells)
    if size is None:
        return NotRun("table4", title, "needs +HR, +L_HC or +L_EAC cells on at least two of HDS, HSS, LCS "
                                       "at one size")
    subsets = ("HDS", "HSS", "LCS")
    p = paper["table4"]["accuracy"] if paper else None
    columns = ["Method"]
    for s in subsets:
        columns += [f"{s}-{fmt_size(size)}"] + ([f"{s} (paper)"] if p else [])
    base = find(cells, "baseline")
    rows = []
    for ablation in CHAIN:
        row = [_step_name(ablation, f"+ {fmt_size(size)} Data")]
        for s in subsets:
            cell = base if ablation == "baseline" else find(cells, ablation, s, size)
            row.append(NOT_RUN if cell is None else
                       with_delta(cell.accuracy, None if base is None or ablation == "baseline" else base.accuracy))
            if p:
                row.append(num(p[s][ablation]))
        rows.append(row)
    notes = ["Accuracy (%); in parentheses: difference to the baseline (percentage points)."]
    if p:
        notes.append(f"Paper: {fmt_size(paper['table4']['size'])} subsets. " + ORDER_NOTE.format("+ L_HC then + L_EAC"))
    return Table("table4", title, columns, rows, notes)


def _counts(cell: Cell | None) -> list[str]:
    return [NOT_RUN] * 5 if cell is None else [*(str(cell.count(lv)) for lv in LEVELS), str(cell.n_failed)]


COUNT_COLUMNS = [*(LEVEL_NAMES[lv] for lv in LEVELS), "Failed"]
# the paper's count tables (App. D) judge 2,500 test questions per row: the 2,500 of test_eval.json
PAPER_N_NOTE = "n: test questions judged per row (the paper: 2,500 per row, App. D; MGLD split.eval_count)."


def _n(cell: Cell | None) -> str:
    return NOT_RUN if cell is None else str(cell.n)


def table6(cells: list[Cell], paper: dict | None) -> Table | NotRun:
    title = "Table 6 (App. D.1): ablation, absolute counts"
    key = chain_key(cells)
    if key is None:
        return NotRun("table6", title, "needs the cells of Table 3")
    subset = f"{key[0]}-{fmt_size(key[1])}"
    rows = []
    for ablation, cell in _chain_rows(cells, key):
        row = [_step_name(ablation, f"+ {subset}"), _n(cell), *_counts(cell)]
        if paper:
            row.append("/".join(map(str, paper["table6"][ablation])))
        rows.append(row)
    columns = ["Method", "n", *COUNT_COLUMNS] + (["SK/K/WU/U (paper)"] if paper else [])
    return Table("table6", f"{title} on {subset}", columns, rows, [PAPER_N_NOTE] + ([ORDER_NOTE.format("+ L_HC then + L_EAC")] if paper else []))


def table7(cells: list[Cell], paper: dict | None) -> Table | NotRun:
    title = "Table 7 (App. D.2): generalisability, absolute counts"
    size = table4_size(cells)
    if size is None:
        return NotRun("table7", title, "needs the cells of Table 4")

    def paper_col(counts: list[int] | None) -> list[str]:
        if not paper:
            return []
        return ["/".join(map(str, counts)) if counts else "not printed"]

    base = find(cells, "baseline")
    rows = [["Baseline", _n(base), *_counts(base), *paper_col(paper and paper["table7"]["baseline"])]]
    for s in ("HDS", "HSS", "LCS"):
        rows.append([f"For {s}-{fmt_size(size)}", *[""] * 6, *([""] if paper else [])])
        for ablation in CHAIN[1:]:
            name = _step_name(ablation, "+ Data").replace("+ ", "+")
            cell = find(cells, ablation, s, size)
            rows.append([name, _n(cell), *_counts(cell), *paper_col(paper and paper["table7"][s].get(ablation))])
    columns = ["Method", "n", *COUNT_COLUMNS] + (["SK/K/WU/U (paper)"] if paper else [])
    return Table("table7", title, columns, rows, [PAPER_N_NOTE] + ([ORDER_NOTE.format("+ L_HC then + L_EAC")] if paper else []))


def all_cells(cells: list[Cell]) -> Table:
    """Every cell: level percentages, accuracy with its exact 95% interval (Clopper-Pearson), and counts."""
    rows = [[c.label, str(c.n), *(num(c.pct(lv)) for lv in LEVELS),
             f"{num(c.accuracy)} [{num(c.acc_ci_low)}, {num(c.acc_ci_high)}]", *_counts(c), c.cell_id]
            for c in sorted(cells, key=cell_order)]
    columns = ["Cell", "n", *(f"{LEVEL_NAMES[lv]} %" for lv in LEVELS), "Accuracy % [95% CI]",
               *COUNT_COLUMNS, "cell_id"]
    return Table("cells", "Every cell: levels, accuracy with exact 95% interval (Clopper-Pearson), counts", columns, rows)


def controls_table(cells: list[Cell]) -> list[Table]:
    """Every cell's controls (docs/synth.md): degenerate answers, judge chance, skyline beside the CLIP
    (none for a run made before grids carried controls)."""
    if not any(c.controls for c in cells):
        return []

    def pct(c: Cell, key: str) -> str:
        value = c.controls.get(key)
        return "" if value is None else num(value)

    rows = [[c.label, num(c.accuracy), pct(c, "degenerate_pct"), pct(c, "chance_accuracy"),
             pct(c, "chance_weakly_unknown"), num(c.weakly_unknown),
             " / ".join(pct(c, f"skyline_clip_{k}") for k in ("seen_accuracy", "seen_clip_top1")).strip(" /"),
             " / ".join(pct(c, f"skyline_clip_{k}") for k in ("unseen_accuracy", "unseen_clip_top1")).strip(" /")]
            for c in sorted(cells, key=cell_order)]
    columns = ["Cell", "Accuracy %", "Degenerate answers %", "Chance: accuracy %", "Chance: Weakly Unknown %",
               "Weakly Unknown %", "Skyline CLIP-seen: cell / CLIP top-1 %", "Skyline CLIP-unseen: cell / CLIP top-1 %"]
    return [Table("controls", "Controls per cell: degenerate answers (goal <= 2%), the same answers judged against "
                  "a shuffled truth (chance), and the skyline (held-out views of the cell's own landmarks)", columns, rows)]


PROBE_STATS = ("mean", "median", "p10", "p90")


def probe_tables(probe: dict) -> list[Table]:
    """``knowledge.json`` of ``eeca knowledge analyze`` (paper 3.2) as a subset x statistic table of S
    and RSR, and the seen / unseen separation (AUROC) when the world's truth was given."""
    sep = probe.get("clip_seen_separation")
    everything = dict(probe["all"])
    if isinstance(sep, dict) and "images_seen" in sep:
        everything["clip_seen_fraction"] = sep["images_seen"] / max(1, sep["images_seen"] + sep["images_unseen"])
    groups = [("all scored images", everything), *probe.get("subsets", {}).items()]
    seen = any("clip_seen_fraction" in g for _, g in groups)

    def stat(group: dict, key: str, name: str) -> str:
        value = group.get(key, {}).get(name)
        return "" if value is None else f"{value:.3f}"

    rows = [[name, str(g.get("s", {}).get("n", "")), *(stat(g, "s", k) for k in PROBE_STATS),
             *(stat(g, "rsr", k) for k in PROBE_STATS)]
            + ([num(100 * g["clip_seen_fraction"]) if "clip_seen_fraction" in g else ""] if seen else [])
            for name, g in groups]
    columns = ["Subset", "n", *(f"S {k}" for k in PROBE_STATS), *(f"RSR {k}" for k in PROBE_STATS)]
    out = [Table("probe", "S and RSR per subset (paper 3.2)", columns + (["CLIP-seen %"] if seen else []), rows,
                 ["S: cosine similarity of the image to its landmark's text; RSR: relative rank of that text "
                  "among all landmarks' (paper 3.1). p10 / p90: 10th / 90th percentiles."])]
    if isinstance(sep, dict) and "auroc_s_image" in sep:
        out.append(Table("probe_separation", "How well S and RSR tell landmarks the CLIP saw from the others (AUROC)",
                         ["Statistic", "per image", "per landmark (mean)"],
                         [[name, f"{sep[f'auroc_{key}_image']:.3f}", f"{sep[f'auroc_{key}_landmark']:.3f}"]
                          for key, name in (("s", "S"), ("rsr", "RSR"))],
                         [f"{sep['images_seen']} images of {sep['landmarks_seen']} seen landmarks, "
                          f"{sep['images_unseen']} of {sep['landmarks_unseen']} unseen."]))
    return out


def paper_tables(cells: list[Cell], paper: dict | None) -> list[Table | NotRun]:
    """Tables 1-4 in the paper's order (Table 1 may come as two: accuracy and gain over baseline)."""
    return [*table1(cells, paper), table2(cells, paper), *table3(cells, paper), table4(cells, paper)]


def count_tables(cells: list[Cell], paper: dict | None) -> list[Table | NotRun]:
    return [table6(cells, paper), table7(cells, paper), all_cells(cells), *controls_table(cells)]
