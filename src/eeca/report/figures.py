"""The report's figures as PNG bytes: paper Figures 3, 4 and 5, level bars and accuracy intervals.

* Figure 3 (paper 3.2): t-SNE of each subset's image embeddings, coloured by hierarchical label.
* Figure 4 (paper 3.2): hierarchical-label distribution of each subset.
* Figure 5 (paper 3.3, 5.2): accuracy against data size, one line per selection (+data cells), EECA
  dashed where it was run at several sizes, the untrained baseline as a horizontal line.
* The four recognition levels of every cell as stacked bars, and accuracy with its exact 95%
  interval (paper 3.1).

Figures are drawn on matplotlib's Agg canvas without pyplot (no global state), at fixed sizes that
depend only on the data, with no timestamps: the same inputs give the same PNG bytes.
"""

from __future__ import annotations

import io
from collections import Counter

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eeca.report.data import LEVEL_NAMES, LEVELS, LOSS_KEYS, SELECTIONS, Cell, fmt_size

LEVEL_COLOURS = {"strongly_known": "#1b7837", "known": "#7fbf7b",
                 "weakly_unknown": "#f1a340", "unknown": "#bdbdbd"}
SELECTION_COLOURS = {"HDS": "#2166ac", "HSS": "#67a9cf", "LCS": "#b2182b", "BRS": "#4d4d4d"}
OTHER = "other"
GREY = "#c7c7c7"
DPI = 100


def png(fig: Figure) -> bytes:
    """Render on the Agg canvas; no 'Software' key, so PNG bytes do not change with matplotlib's version."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def levels_figure(cells: list[Cell]) -> bytes:
    """Horizontal stacked bars: the share of each recognition level per cell."""
    fig = Figure(figsize=(9, 1.2 + 0.32 * len(cells)))
    ax = fig.add_subplot()
    labels = [c.label for c in cells]  # one judge per figure: named once, in the caption
    left = [0.0] * len(cells)
    for level in LEVELS:
        widths = [c.pct(level) for c in cells]
        ax.barh(labels, widths, left=left, color=LEVEL_COLOURS[level], label=LEVEL_NAMES[level])
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of test questions")
    ax.legend(ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    return png(fig)


def accuracy_figure(cells: list[Cell]) -> bytes:
    """Accuracy (SK + K) per cell with its exact 95% interval (Clopper-Pearson)."""
    fig = Figure(figsize=(9, 1.0 + 0.32 * len(cells)))
    ax = fig.add_subplot()
    ys = range(len(cells))
    acc = [c.accuracy for c in cells]
    # an interval that does not contain its accuracy is listed under the report's checks; drawn clipped
    err = [[max(0.0, c.accuracy - c.acc_ci_low) for c in cells], [max(0.0, c.acc_ci_high - c.accuracy) for c in cells]]
    ax.errorbar(acc, ys, xerr=err, fmt="o", color="#2166ac", capsize=3)
    ax.set_yticks(list(ys), [c.label for c in cells])
    ax.invert_yaxis()
    ax.set_xlabel("accuracy, %")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return png(fig)


def loss_figure(logs: list[tuple[str, dict[str, list[tuple[int, float]]]]]) -> bytes:
    """Training curves per cell: one panel per series of :data:`LOSS_KEYS` (L_LM, L_HC, L_EAC, total,
    learning rate) against the optimiser step, one line per cell in the same colour in every panel."""
    keys = [k for k in LOSS_KEYS if any(k in log for _, log in logs)]
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + 0.4 + 0.25 * ((len(logs) - 1) // 4)))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colours = [colormaps["tab10"](i % 10) for i in range(len(logs))]
    for ax, key in zip(axes, keys, strict=False):
        for colour, (_, log) in zip(colours, logs, strict=True):
            if key in log:
                ax.plot(*zip(*log[key], strict=True), color=colour, linewidth=1.2)
        ax.set_title(LOSS_KEYS[key])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    handles = [axes[0].plot([], [], color=colour)[0] for colour in colours]
    fig.legend(handles, [label for label, _ in logs], loc="lower center", ncols=min(len(logs), 4), frameon=False,
               fontsize=8)
    fig.tight_layout(rect=(0, 0.05 + 0.04 * ((len(logs) - 1) // 4), 1, 1))
    return png(fig)


def _probe_groups(points: list[dict]) -> list[tuple[str, list[dict]]]:
    """CLIP-seen vs unseen over all scored images when the world's truth is known, else one group per subset."""
    everything = [p for p in points if p["subset"] == "all"]
    if everything and all(p["clip_seen"] is not None for p in everything):
        return [("CLIP-seen", [p for p in everything if p["clip_seen"]]),
                ("CLIP-unseen", [p for p in everything if not p["clip_seen"]])]
    return [(s, [p for p in points if p["subset"] == s]) for s in _subsets(points) if s != "all"]


def probe_histograms(points: list[dict]) -> bytes | None:
    """S and RSR histograms (paper 3.2): CLIP-seen vs unseen landmarks, or one per subset; None if empty."""
    groups = [(name, pts) for name, pts in _probe_groups(points) if pts]
    if not groups:
        return None
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    colours = {"CLIP-seen": "#1b7837", "CLIP-unseen": "#b2182b"}
    for ax, key, name in zip(axes, ("s_gt", "rsr"), ("S", "RSR"), strict=True):
        values = [p[key] for _, pts in groups for p in pts]
        bins = [min(values) + (max(values) - min(values)) * i / 30 for i in range(31)] if max(values) > min(values) else 10
        for label, pts in groups:
            ax.hist([p[key] for p in pts], bins=bins, histtype="step", density=True, linewidth=1.5,
                    color=colours.get(label, SELECTION_COLOURS.get(label)), label=f"{label} (n={len(pts)})")
        ax.set_xlabel(name)
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def roc_figure(points: list[dict]) -> bytes | None:
    """ROC curves of S and RSR for 'the CLIP saw this landmark', per image (the AUROC of knowledge.json);
    None without a world's truth or with one side empty."""
    from sklearn.metrics import roc_auc_score, roc_curve

    everything = [p for p in points if p["subset"] == "all" and p["clip_seen"] is not None]
    seen = [bool(p["clip_seen"]) for p in everything]
    if not everything or all(seen) or not any(seen):
        return None
    fig = Figure(figsize=(4.8, 4.5))
    ax = fig.add_subplot()
    for key, name, colour in (("s_gt", "S", "#2166ac"), ("rsr", "RSR", "#b2182b")):
        scores = [p[key] for p in everything]
        fpr, tpr, _ = roc_curve(seen, scores)
        ax.plot(fpr, tpr, color=colour, label=f"{name} (AUROC {roc_auc_score(seen, scores):.3f})")
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate (unseen called seen)")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


def size_figure(cells: list[Cell]) -> bytes | None:
    """Figure 5: accuracy against data size per selection; None when no selection has two sizes."""
    lines: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        if c.selection in SELECTIONS and c.ablation in ("data", "eac"):
            lines.setdefault((c.selection, c.ablation), []).append(c)
    lines = {k: sorted(v, key=lambda c: c.size) for k, v in lines.items() if len({c.size for c in v}) >= 2}
    if not lines:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for (sel, ablation), line in sorted(lines.items(), key=lambda kv: (kv[0][1], SELECTIONS.index(kv[0][0]))):
        ax.plot([c.size for c in line], [c.accuracy for c in line], marker="o", color=SELECTION_COLOURS[sel],
                linestyle="--" if ablation == "eac" else "-", label=sel if ablation == "data" else f"EECA ({sel})")
    base = next((c for c in cells if c.ablation == "baseline"), None)
    if base is not None:
        ax.axhline(base.accuracy, color="#999999", linestyle=":", label="baseline (untrained)")
    sizes = sorted({c.size for line in lines.values() for c in line})
    ax.set_xticks(sizes, [fmt_size(s) for s in sizes])
    ax.set_xlabel("training data size")
    ax.set_ylabel("accuracy, %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def _label_colours(labels: Counter) -> dict[str, str]:
    """A fixed colour per hierarchical label, most frequent first: tab10's strong colours, then tab20's
    light ones (greys left out, kept for 'other'); labels past those 18 share the grey of 'other'."""
    strong = [colormaps["tab10"](i) for i in range(10) if i != 7]
    light = [colormaps["tab20"](i) for i in range(1, 20, 2) if i != 15]
    palette = strong + light
    ranked = sorted(labels, key=lambda lb: (-labels[lb], lb))
    return {lb: palette[i] if i < len(palette) else GREY for i, lb in enumerate(ranked)}


def _subsets(rows: list[dict]) -> list[str]:
    present = {r["subset"] for r in rows}
    return [s for s in SELECTIONS if s in present] + sorted(present - set(SELECTIONS))


def tsne_figure(rows: list[dict]) -> bytes:
    """Figure 3: one t-SNE panel per subset, points coloured by hierarchical label (shared legend)."""
    subsets = _subsets(rows)
    labels = Counter(r["hierarchical_label"] for r in rows)
    colours = _label_colours(labels)
    fig = Figure(figsize=(4 * len(subsets), 4.8))
    axes = fig.subplots(1, len(subsets), squeeze=False)[0]
    for ax, subset in zip(axes, subsets, strict=True):
        pts = [r for r in rows if r["subset"] == subset]
        # big points for a few hundred, small ones for the paper's 25k per subset
        size = min(24.0, max(2.0, 3000.0 / max(len(pts), 1)))
        ax.scatter([r["x"] for r in pts], [r["y"] for r in pts], s=size, linewidths=0,
                   c=[colours[r["hierarchical_label"]] for r in pts])
        ax.set_title(f"{subset} (n={len(pts)})")
        ax.set_xticks([])
        ax.set_yticks([])
    shown = [lb for lb in colours if colours[lb] != GREY]
    handles = [axes[0].scatter([], [], s=20, color=colours[lb]) for lb in shown]
    names = list(shown)
    if len(shown) < len(colours):
        handles.append(axes[0].scatter([], [], s=20, color=GREY))
        names.append(OTHER)
    fig.legend(handles, names, loc="lower center", ncols=min(len(names), 7), frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(names) - 1) // 7), 1, 1))
    return png(fig)


def category_figure(rows: list[dict], top: int = 15) -> bytes:
    """Figure 4: counts of the most common hierarchical labels (over all subsets) in each subset."""
    subsets = _subsets(rows)
    totals: Counter = Counter()
    for r in rows:
        totals[r["hierarchical_label"]] += r["count"]
    labels = sorted(totals, key=lambda lb: (-totals[lb], lb))
    shown, rest = labels[:top], set(labels[top:])
    groups = shown + ([OTHER] if rest else [])
    fig = Figure(figsize=(max(7.0, 0.6 * len(groups) * max(1, len(subsets)) / 2 + 2), 4.5))
    ax = fig.add_subplot()
    width = 0.8 / len(subsets)
    for i, subset in enumerate(subsets):
        counts: Counter = Counter()
        for r in rows:
            if r["subset"] == subset:
                counts[OTHER if r["hierarchical_label"] in rest else r["hierarchical_label"]] += r["count"]
        ax.bar([g + i * width for g in range(len(groups))], [counts[g] for g in groups], width,
               label=subset, color=SELECTION_COLOURS.get(subset))
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=45, ha="right")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)
