"""eeca knowledge analyze: t-SNE / category-count files of the subsets and the clip_seen AUROC."""

import json

import numpy as np
import pyarrow.parquet as pq

from eeca.config import from_dict
from eeca.knowledge.analysis import analyze_command
from eeca.knowledge.score import ScoreConfig, run_score
from eeca.knowledge.select import select_command
from knowledge_helpers import make_landmarks, make_tiny_clip


def mann_whitney_auc(pos, neg):
    """P(a positive scores above a negative) + half the ties: the AUROC, by counting pairs."""
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)


def test_analyze_writes_subset_files_and_auroc(tmp_path):
    data = tmp_path / "data"
    images, landmarks = make_landmarks(data, n_landmarks=6, per_landmark=6)
    clip = make_tiny_clip(tmp_path / "clip")
    score_dir = tmp_path / "score"
    run_score(from_dict(ScoreConfig, {"model": str(clip), "num_workers": 0}), images, landmarks, data, score_dir)
    manifests = []
    for method in ("hds", "hss", "lcs", "brs"):
        manifests.append(tmp_path / f"{method}.parquet")
        select_command(str(score_dir / "scores.parquet"), method, 8, str(manifests[-1]), quantile=0.6)
    truth = tmp_path / "landmarks.jsonl"
    truth.write_text("".join(json.dumps({"landmark_id": 100 + i, "clip_seen": i % 2 == 0}) + "\n" for i in range(6)))
    out = tmp_path / "analysis"
    analyze_command(str(score_dir), str(landmarks), str(out), selections=list(map(str, manifests)),
                    truth=str(truth), perplexity=3.0)

    tsne = pq.read_table(out / "tsne.parquet")
    assert tsne.column_names == ["id", "subset", "x", "y", "hierarchical_label"]
    assert sorted(set(tsne.column("subset").to_pylist())) == ["BRS", "HDS", "HSS", "LCS"]
    assert tsne.num_rows == 32 and np.isfinite(tsne.column("x").to_numpy()).all()
    counts = pq.read_table(out / "category_counts.parquet").to_pylist()
    label = {100 + i: ["tower", "lake"][i % 2] for i in range(6)}
    for m in manifests:
        rows = pq.read_table(m).to_pylist()
        subset = rows[0]["method"]
        expect = {}
        for r in rows:
            expect[label[r["landmark_id"]]] = expect.get(label[r["landmark_id"]], 0) + 1
        assert {c["hierarchical_label"]: c["count"] for c in counts if c["subset"] == subset} == expect
    assert (out / "tsne.png").stat().st_size > 1000 and (out / "category_counts.png").stat().st_size > 1000

    report = json.loads((out / "knowledge.json").read_text())
    scores = pq.read_table(score_dir / "scores.parquet").to_pylist()
    seen = np.array([(r["landmark_id"] - 100) % 2 == 0 for r in scores])
    rsr = np.array([r["rsr"] for r in scores])
    sep = report["clip_seen_separation"]
    assert abs(sep["auroc_rsr_image"] - mann_whitney_auc(rsr[seen], rsr[~seen])) < 1e-12
    assert sep["landmarks_seen"] == 3 and sep["images_unseen"] == 18
    hds = pq.read_table(manifests[0]).column("rsr").to_numpy()
    assert abs(report["subsets"]["HDS"]["rsr"]["mean"] - hds.mean()) < 1e-12
    assert report["all"]["s"]["n"] == 36
    probe = pq.read_table(out / "probe.parquet").to_pylist()  # the per-image values behind the summaries
    everything = [p for p in probe if p["subset"] == "all"]
    assert [(p["id"], p["rsr"], p["clip_seen"]) for p in everything] == [
        (r["id"], r["rsr"], (r["landmark_id"] - 100) % 2 == 0) for r in scores]
    assert sorted(p["id"] for p in probe if p["subset"] == "HDS") == sorted(pq.read_table(manifests[0]).column("id").to_pylist())
