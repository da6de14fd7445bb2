"""``eeca mgld stage1``: one representative image per landmark (paper section 3.1 and App. B.2).

For each landmark, its images' S against its own name (``s_gt`` of ``scores.parquet``) are sorted
(highest first, ties by id) and the top three kept; one of them is drawn with probability
``softmax(S / T)``. The paper says both "the image that has the highest CLIP similarity" (3.1) and
"weighted sampling based on their similarity" among the top three (App. B.2); weights proportional
to raw cosines (0.31 / 0.30 / 0.29 -> 34 / 33 / 32%) would make the draw uniform in practice, so the
temperature decides between the two readings: T = 0 takes the top image (3.1), a large T is uniform,
and the default T = 0.01 is CLIP's own (its learned logit scale is 100), under which a 0.01 lead in
cosine makes an image e = 2.7 times as likely as the next, so the top image is the usual choice
and the others are still drawn (B.2). The draw uses a generator seeded by ``(seed, landmark_id)``, so
a landmark's choice does not depend on which other landmarks are present or on the row order of the
input.

Output parquet, one row per landmark in landmark_id order: landmark_id, id (the chosen image),
s_gt, rsr, candidates (the top-k ids, best first), candidate_s (their S).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from eeca.io import read_parquet, write_parquet

DEFAULT_TEMPERATURE = 0.01  # CLIP's: 1 / its logit scale of 100


def probabilities(s: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(S / T) over the candidates (best first); T = 0: all mass on the first, the top image."""
    if temperature == 0:
        return np.eye(len(s))[0]
    z = s.astype(np.float64) / temperature
    w = np.exp(z - z.max())
    return w / w.sum()


def choose(s: np.ndarray, rng: np.random.Generator, temperature: float = DEFAULT_TEMPERATURE) -> int:
    """Index into ``s`` (the candidates' S, best first) drawn with p = softmax(S / T)."""
    return int(rng.choice(len(s), p=probabilities(s, temperature)))


def stage1_choice(ids: np.ndarray, landmark_ids: np.ndarray, s: np.ndarray, seed: int = 0,
                  top_k: int = 3, temperature: float = DEFAULT_TEMPERATURE) -> list[tuple[int, int, list[int]]]:
    """Per landmark (ascending): (landmark_id, chosen row, candidate rows best-first)."""
    order = np.lexsort((ids, -s, landmark_ids))  # by landmark, then highest S, then id
    lids = landmark_ids[order]
    starts = np.flatnonzero(np.r_[True, lids[1:] != lids[:-1]])
    ends = np.r_[starts[1:], len(order)]
    out = []
    for a, b in tqdm(zip(starts, ends, strict=True), total=len(starts), desc="landmarks", leave=False):
        cand = order[a:min(b, a + top_k)]
        lid = int(lids[a])
        rng = np.random.default_rng([seed, lid % (1 << 64)])
        out.append((lid, int(cand[choose(s[cand], rng, temperature)]), [int(c) for c in cand]))
    return out


def stage1_command(scores: str, out: str, seed: int = 0, top_k: int = 3,
                   temperature: float = DEFAULT_TEMPERATURE) -> int:
    """Stage 1 of MGLD: per landmark, sample one of its top-3 images by S with p = softmax(S / T).

    Args:
        scores: scores.parquet from `eeca score` (id, landmark_id, s_gt, rsr).
        out: parquet to write (landmark_id, id, s_gt, rsr, candidates, candidate_s).
        seed: random seed of the weighted draw.
        top_k: how many of the most similar images per landmark to sample from.
        temperature: T of softmax(S / T); 0 = always the most similar image (paper 3.1), 0.01 (CLIP's)
            = mostly it, large = uniform over the top k.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    t = read_parquet(scores, columns=["id", "landmark_id", "s_gt", "rsr"])
    ids = np.asarray(t.column("id").to_pylist(), dtype=object).astype(str)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{scores}: field id: ids are not unique")
    lids = t.column("landmark_id").to_numpy()
    s = t.column("s_gt").to_numpy()
    rsr = t.column("rsr").to_numpy()
    picks = stage1_choice(ids, lids, s, seed=seed, top_k=top_k, temperature=temperature)
    rows = [p[1] for p in picks]
    write_parquet(out, pa.table({
        "landmark_id": pa.array([p[0] for p in picks], pa.int64()), "id": pa.array(ids[rows].tolist(), pa.string()),
        "s_gt": pa.array(s[rows], pa.float32()), "rsr": pa.array(rsr[rows], pa.float64()),
        "candidates": pa.array([ids[p[2]].tolist() for p in picks], pa.list_(pa.string())),
        "candidate_s": pa.array([s[p[2]].tolist() for p in picks], pa.list_(pa.float32()))}))
    top = sum(p[1] == p[2][0] for p in picks)
    print(f"eeca mgld stage1: {len(picks)} landmarks, one image each ({top} the most similar of their top "
          f"{top_k}, T {temperature:g}); mean S {float(s[rows].mean()) if rows else float('nan'):.4f} -> {out}")
    return 0
