"""``eeca knowledge analyze``: what the HDS / HSS / LCS / BRS subsets look like (paper Figs. 3-4).

From an ``eeca score`` output folder (its ``scores.parquet`` and image embedding shards), the
landmarks and the selection manifests of ``eeca select``, writes into OUT:

* ``tsne.parquet`` (id, subset, x, y, hierarchical_label): a 2-D t-SNE (scikit-learn) of each
  subset's CLIP image embeddings, fitted per subset (paper Fig. 3), and ``tsne.png``;
* ``category_counts.parquet`` (subset, hierarchical_label, count) and ``category_counts.png``
  (paper Fig. 4);
* ``knowledge.json``: per subset and for all scored images, summaries of S and RSR (mean, quantiles)
  and, when the ground truth of a synthetic world is given (``truth/landmarks.jsonl`` with
  ``clip_seen``), how well RSR and S separate the images of landmarks the CLIP saw in training from
  the others (ROC AUC, per image and per landmark mean) and each subset's share of seen landmarks;
* ``probe.parquet`` (id, landmark_id, subset, s_gt, rsr, clip_seen): the per-image S and RSR behind
  those summaries, subset ``all`` for every scored image and one row per image of each subset;
  ``clip_seen`` is null without a synthetic world's truth. ``eeca report`` draws its histograms and
  the ROC curve from it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state
from matplotlib.lines import Line2D
from sklearn.manifold import TSNE
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from eeca.io import atomic_path, read_jsonl, read_parquet, write_json, write_parquet

SUBSET_ORDER = ("HDS", "HSS", "LCS", "BRS")


def load_image_embeddings(emb_dir: Path, ids: list[str]) -> np.ndarray:
    """[len(ids), d] float32 rows of ``emb/image-*.npy`` for ``ids`` (memory-mapped shards)."""
    where: dict[str, tuple[Path, int]] = {}
    for meta in sorted(emb_dir.glob("image-*.parquet")):
        for row, i in enumerate(read_parquet(meta, columns=["id"]).column("id").to_pylist()):
            where[i] = (meta.with_suffix(".npy"), row)
    missing = [i for i in ids if i not in where]
    if missing:
        raise ValueError(f"{emb_dir}: no embedding for {len(missing)} ids (first: {missing[0]!r}); "
                         f"were they scored by this `eeca score` run?")
    shards = {p: np.load(p, mmap_mode="r") for p in {where[i][0] for i in ids}}
    return np.stack([shards[where[i][0]][where[i][1]] for i in ids]).astype(np.float32)


def summarize(v: np.ndarray) -> dict:
    if len(v) == 0:
        return {"n": 0}
    q = np.quantile(v, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "p10": float(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]), "p90": float(q[4]),
            "max": float(v.max())}


def separation(seen: np.ndarray, s: np.ndarray, rsr: np.ndarray, lids: np.ndarray) -> dict:
    """ROC AUC of RSR and of S for 'the CLIP saw this landmark', per image and per landmark mean."""
    if seen.all() or not seen.any():
        return {"note": "all landmarks are on one side of clip_seen: AUROC undefined"}
    uniq, inv = np.unique(lids, return_inverse=True)
    per_lm = lambda v: np.bincount(inv, weights=v) / np.bincount(inv)  # noqa: E731
    seen_lm = per_lm(seen.astype(np.float64)) > 0.5
    return {"auroc_rsr_image": float(roc_auc_score(seen, rsr)), "auroc_s_image": float(roc_auc_score(seen, s)),
            "auroc_rsr_landmark": float(roc_auc_score(seen_lm, per_lm(rsr))),
            "auroc_s_landmark": float(roc_auc_score(seen_lm, per_lm(s))),
            "images_seen": int(seen.sum()), "images_unseen": int((~seen).sum()),
            "landmarks_seen": int(seen_lm.sum()), "landmarks_unseen": int((~seen_lm).sum())}


def analyze_command(score_dir: str, landmarks: str, out: str, selections: list[str] | None = None,
                    truth: str | None = None, perplexity: float = 30.0, seed: int = 0) -> int:
    """t-SNE, category counts and S / RSR statistics of the selected subsets (paper Figs. 3-4).

    Args:
        score_dir: output folder of `eeca score` (scores.parquet, emb/).
        landmarks: landmarks.parquet (for hierarchical_label).
        out: folder for tsne.parquet, category_counts.parquet, knowledge.json and PNGs.
        selections: selection manifests of `eeca select` (one per subset).
        truth: truth/landmarks.jsonl of a synthetic world (clip_seen) for the AUROC of RSR and S.
        perplexity: t-SNE perplexity (capped below a third of a subset's size).
        seed: t-SNE random state.
    """
    out_dir = Path(out)
    lm = read_parquet(landmarks, columns=["landmark_id", "hierarchical_label"])
    label_of = dict(zip(lm.column("landmark_id").to_pylist(), lm.column("hierarchical_label").to_pylist(),
                        strict=True))
    scores = read_parquet(Path(score_dir) / "scores.parquet", columns=["id", "landmark_id", "s_gt", "rsr"])
    s_all = scores.column("s_gt").to_numpy().astype(np.float64)
    rsr_all = scores.column("rsr").to_numpy().astype(np.float64)
    lid_all = scores.column("landmark_id").to_numpy()
    report: dict = {"all": {"s": summarize(s_all), "rsr": summarize(rsr_all)}, "subsets": {}}
    seen_of = None
    if truth:
        seen_of = {int(r["landmark_id"]): bool(r["clip_seen"]) for r in read_jsonl(truth)}
        unknown = sorted(set(lid_all.tolist()) - set(seen_of))
        if unknown:
            raise ValueError(f"{truth}: no record for landmark_id {unknown[0]} ({len(unknown)} missing)")
        report["clip_seen_separation"] = separation(np.array([seen_of[int(x)] for x in lid_all]), s_all,
                                                    rsr_all, lid_all)

    probe = {"id": scores.column("id").to_pylist(), "landmark_id": lid_all.tolist(),
             "subset": ["all"] * len(lid_all), "s_gt": s_all.tolist(), "rsr": rsr_all.tolist()}
    tsne_rows, count_rows = [], []
    for path in tqdm(selections or [], desc="knowledge analyze", unit="subset"):
        m = read_parquet(path, columns=["id", "landmark_id", "s_gt", "rsr", "method"])
        methods = set(m.column("method").to_pylist())
        if len(methods) != 1:
            raise ValueError(f"{path}: field method: expected one method, got {sorted(methods)}")
        subset = methods.pop()
        ids = m.column("id").to_pylist()
        labels = [label_of.get(x, "unknown") for x in m.column("landmark_id").to_pylist()]
        s, rsr = m.column("s_gt").to_numpy().astype(np.float64), m.column("rsr").to_numpy().astype(np.float64)
        entry = {"s": summarize(s), "rsr": summarize(rsr)}
        if seen_of is not None:
            entry["clip_seen_fraction"] = float(np.mean([seen_of[int(x)] for x in m.column("landmark_id").to_pylist()]))
        report["subsets"][subset] = entry
        for key, values in (("id", ids), ("landmark_id", m.column("landmark_id").to_pylist()),
                            ("subset", [subset] * len(ids)), ("s_gt", s.tolist()), ("rsr", rsr.tolist())):
            probe[key] += values
        if len(ids) >= 5:  # t-SNE needs perplexity < n
            # exact gradients for small subsets: Barnes-Hut's tree overhead dominates below a few hundred
            xy = TSNE(n_components=2, perplexity=min(perplexity, (len(ids) - 1) / 3), init="pca",
                      method="exact" if len(ids) <= 300 else "barnes_hut", random_state=seed).fit_transform(load_image_embeddings(Path(score_dir) / "emb", ids))
            tsne_rows += [(i, subset, float(a), float(b), lab) for i, (a, b), lab in zip(ids, xy, labels, strict=True)]
        else:
            entry["tsne"] = f"skipped: {len(ids)} images (t-SNE needs at least 5)"
        for lab in sorted(set(labels)):
            count_rows.append((subset, lab, labels.count(lab)))

    write_parquet(out_dir / "tsne.parquet", pa.table(
        {k: [r[j] for r in tsne_rows] for j, k in enumerate(["id", "subset", "x", "y", "hierarchical_label"])},
        schema=pa.schema([("id", pa.string()), ("subset", pa.string()), ("x", pa.float64()), ("y", pa.float64()),
                          ("hierarchical_label", pa.string())])))
    write_parquet(out_dir / "category_counts.parquet", pa.table(
        {k: [r[j] for r in count_rows] for j, k in enumerate(["subset", "hierarchical_label", "count"])},
        schema=pa.schema([("subset", pa.string()), ("hierarchical_label", pa.string()), ("count", pa.int64())])))
    probe["clip_seen"] = [None if seen_of is None else seen_of[int(x)] for x in probe["landmark_id"]]
    write_parquet(out_dir / "probe.parquet", pa.table(probe, schema=pa.schema([
        ("id", pa.string()), ("landmark_id", pa.int64()), ("subset", pa.string()), ("s_gt", pa.float64()),
        ("rsr", pa.float64()), ("clip_seen", pa.bool_())])))
    _plot_tsne(tsne_rows, out_dir / "tsne.png")
    _plot_counts(count_rows, out_dir / "category_counts.png")
    write_json(out_dir / "knowledge.json", report)
    sep = report.get("clip_seen_separation", {})
    auroc = (f"; AUROC seen vs unseen: RSR {sep['auroc_rsr_image']:.3f}, S {sep['auroc_s_image']:.3f} (per image)"
             if "auroc_rsr_image" in sep else "")
    means = ", ".join(f"{k} S {v['s']['mean']:.3f} RSR {v['rsr']['mean']:.3f}" for k, v in report["subsets"].items())
    print(f"eeca knowledge analyze: {len(report['subsets'])} subsets ({means}){auroc} -> {out_dir}")
    return 0


def _subsets(rows, key: int) -> list[str]:
    present = {r[key] for r in rows}
    return [s for s in SUBSET_ORDER if s in present] + sorted(present - set(SUBSET_ORDER))


def _plot_tsne(rows, path: Path) -> None:
    subsets = _subsets(rows, 1)
    labels = sorted({r[4] for r in rows})
    tab20 = matplotlib.colormaps["tab20"]
    colors = {lab: tab20(i % 20) for i, lab in enumerate(labels)}
    fig = Figure(figsize=(4 * max(1, len(subsets)), 4))
    axes = fig.subplots(1, max(1, len(subsets)), squeeze=False)
    for ax, subset in zip(axes[0], subsets, strict=False):
        pts = [r for r in rows if r[1] == subset]
        ax.scatter([r[2] for r in pts], [r[3] for r in pts], c=[colors[r[4]] for r in pts], s=6)
        ax.set_title(subset)
        ax.set_xticks([])
        ax.set_yticks([])
    if labels:
        handles = [Line2D([], [], marker="o", ls="", color=colors[lab], label=lab) for lab in labels[:20]]
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7)
    fig.tight_layout(rect=(0, 0.12 if labels else 0, 1, 1))
    _save(fig, path)


def _plot_counts(rows, path: Path) -> None:
    subsets = _subsets(rows, 0)
    labels = sorted({r[1] for r in rows})
    count = {(r[0], r[1]): r[2] for r in rows}
    fig = Figure(figsize=(max(6, 0.5 * len(labels) * max(1, len(subsets))), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(subsets))
    for k, subset in enumerate(subsets):
        ax.bar(np.arange(len(labels)) + k * width, [count.get((subset, lab), 0) for lab in labels], width,
               label=subset)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=45, ha="right")
    ax.set_ylabel("images")
    if subsets:
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
