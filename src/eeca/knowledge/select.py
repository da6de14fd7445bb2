"""``eeca select``: the HDS, HSS, LCS and BRS subsets of paper section 3.1 (DESIGN section 4).

From a pool of images with S (``s_gt``) and RSR (any parquet with id, landmark_id, s_gt, rsr:
``scores.parquet`` or the stage-1 choice), after removing the test split:

* HDS (High Discrimination Selection): the k highest RSR, ties by higher S, then by id;
* HSS (High Similarity Selection): the k highest S, ties by id;
* LCS (Low Clarity Selection): the images whose S *and* RSR are both strictly below their
  q-quantile over the pool (default q = 0.5); of those, the k lowest by the sum of the two ranks
  (rank 1 = lowest value in the pool; tied values share the lower rank), ties by id. Fewer than k
  such images is an error that says how many there are;
* BRS (Balanced Reference Selection): k drawn uniformly without replacement, seeded, from the pool
  sorted by id (so the draw does not depend on the file's row order).

Every method returns the same k, ordered best-first (BRS: in draw order). The manifest is a parquet
of id, landmark_id, s_gt, rsr, method, size, seed (DESIGN section 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from eeca.io import InputError, read_jsonl, read_parquet, read_records, write_parquet

METHODS = ("hds", "hss", "lcs", "brs")


class SelectionError(InputError):
    """A selection cannot be made as asked (too few images, unknown method)."""


def select_indices(ids: np.ndarray, s: np.ndarray, rsr: np.ndarray, method: str, size: int, seed: int = 0,
                   quantile: float = 0.5) -> np.ndarray:
    """Row indices of the ``size`` images chosen by ``method`` from the pool (all rows given)."""
    n = len(ids)
    if size < 1:
        raise SelectionError(f"size must be >= 1, got {size}")
    if size > n:
        raise SelectionError(f"{method.upper()}: asked for {size} images but the pool has only {n}")
    by_id = np.argsort(ids, kind="stable")  # every tie is broken by id: sort by id first, then stably
    if method == "hds":
        order = by_id[np.lexsort((-s[by_id], -rsr[by_id]))]
    elif method == "hss":
        order = by_id[np.argsort(-s[by_id], kind="stable")]
    elif method == "lcs":
        if not 0.0 < quantile < 1.0:
            raise SelectionError(f"LCS quantile must be in (0, 1), got {quantile}")
        qs, qr = np.quantile(s, quantile), np.quantile(rsr, quantile)
        cand = by_id[(s[by_id] < qs) & (rsr[by_id] < qr)]
        if len(cand) < size:
            raise SelectionError(
                f"LCS: only {len(cand)} images have both S < {qs:.4f} and RSR < {qr:.4f} (their "
                f"{quantile}-quantiles over a pool of {n}); asked for {size}. Lower the size or raise the quantile.")
        rank_sum = _min_rank(s)[cand] + _min_rank(rsr)[cand]
        order = cand[np.argsort(rank_sum, kind="stable")]
    elif method == "brs":
        order = by_id[np.random.default_rng(seed).choice(n, size, replace=False)]
    else:
        raise SelectionError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    return order[:size]


def _min_rank(v: np.ndarray) -> np.ndarray:
    """1 + the number of pool values strictly below each value (tied values share a rank)."""
    return 1 + np.searchsorted(np.sort(v), v, side="left")


def read_id_list(path: Path) -> set[str]:
    """Ids from a parquet or JSONL file with an ``id`` field, or a text file of one id per line."""
    if path.suffix == ".parquet":
        return set(map(str, read_parquet(path, columns=["id"]).column("id").to_pylist()))
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
        missing = [i for i, r in enumerate(rows, 1) if "id" not in r]
        if missing:
            raise ValueError(f"{path}: line {missing[0]}: record has no 'id' field")
        return {str(r["id"]) for r in rows}
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def read_pool(path: str | Path) -> pa.Table:
    """A selection pool: a parquet (``scores.parquet``, the stage-1 choice) or MGLD records (``train.json``),
    as a table of id, landmark_id, s_gt, rsr."""
    columns = ("id", "landmark_id", "s_gt", "rsr")
    if Path(path).suffix in (".json", ".jsonl"):
        records = read_records(path)
        for i, r in enumerate(records):
            missing = [c for c in columns if c not in r]
            if missing:
                raise InputError(f"{path}: record {i}: field {missing[0]!r} is missing")
        return pa.table({c: [r[c] for r in records] for c in columns})
    return read_parquet(path, columns=list(columns))


def select_table(pool: pa.Table, method: str, size: int, seed: int = 0, quantile: float = 0.5,
                 source: str = "<pool>") -> pa.Table:
    """The selection manifest (id, landmark_id, s_gt, rsr, method, size, seed) of ``method`` over ``pool``.

    ``pool`` has columns id, landmark_id, s_gt, rsr (scores.parquet, the stage-1 choice or MGLD train
    records); ``source`` names it in errors.
    """
    ids = np.asarray(pool.column("id").to_pylist(), dtype=object).astype(str)
    if len(set(ids)) != len(ids):
        raise InputError(f"{source}: field id: ids are not unique")
    s = pool.column("s_gt").to_numpy().astype(np.float64)
    rsr = pool.column("rsr").to_numpy().astype(np.float64)
    if np.isnan(s).any() or np.isnan(rsr).any():
        raise InputError(f"{source}: fields s_gt/rsr: NaN values")
    idx = select_indices(ids, s, rsr, method, size, seed=seed, quantile=quantile)
    chosen = pool.take(pa.array(idx))
    n = len(idx)
    return pa.table({"id": chosen.column("id"), "landmark_id": chosen.column("landmark_id"),
                     "s_gt": chosen.column("s_gt"), "rsr": chosen.column("rsr"), "method": [method.upper()] * n,
                     "size": [size] * n, "seed": [seed] * n})


def select_command(scores: str, method: Literal["hds", "hss", "lcs", "brs"], size: int, out: str,
                   exclude: str | None = None, seed: int = 0, quantile: float = 0.5) -> int:
    """Select an HDS, HSS, LCS or BRS subset of `size` images by S and RSR (paper section 3.1).

    Args:
        scores: the pool: parquet with id, landmark_id, s_gt, rsr (scores.parquet, the stage-1 choice) or
            MGLD records (train.json), which the paper configs select from (docs/paper-scale.md).
        method: hds (highest RSR), hss (highest S), lcs (S and RSR both low), brs (uniform random).
        size: number of images k (the same for every method).
        out: the selection manifest parquet to write.
        exclude: ids to remove from the pool first (the test split): parquet/JSONL with id, or text.
        seed: random seed (BRS).
        quantile: LCS keeps images with S and RSR both below this quantile of the pool.
    """
    t = read_pool(scores)
    n_pool = t.num_rows
    if exclude:
        ids = np.asarray(t.column("id").to_pylist(), dtype=object).astype(str)
        t = t.filter(pa.array(~np.isin(ids, list(read_id_list(Path(exclude))))))
    manifest = select_table(t, method, size, seed=seed, quantile=quantile, source=scores)
    write_parquet(out, manifest)
    s, rsr = manifest.column("s_gt").to_numpy(), manifest.column("rsr").to_numpy()
    print(f"eeca select: {method.upper()} {manifest.num_rows} of {t.num_rows} images ({n_pool - t.num_rows} excluded); "
          f"mean S {s.mean():.4f}, mean RSR {rsr.mean():.4f} -> {out}")
    return 0
