"""Paired comparison of two cells on the same test questions, pooled over seeds (paper section 3.1).

The paper's "Evaluation metric" (section 3.1) scores a cell by accuracy = Strongly Known + Known
over the test questions. Two cells (say, a baseline and EECA, or two ablations) are judged on the
SAME questions, so the right question is paired: on each question, does b recognise the landmark
where a does not? Pairing makes question difficulty cancel: an easy landmark recognised by both
cells, or a hard one recognised by neither, adds nothing to the difference or its spread. Two
per-cell intervals that overlap say little (they each carry the between-question variance); the
paired interval of the difference carries only the discordant questions.

* ``diff`` = accuracy_b - accuracy_a in percentage points, pooled over seeds: every (seed,
  question) pair counts once, so ``diff = 100 * sum(b - a) / n``.
* ``diff_ci_low`` / ``diff_ci_high``: 95% percentile interval of a paired bootstrap, stratified by
  seed: each resample draws, within every seed, as many questions as it has, with replacement
  (``numpy.random.default_rng(seed)``, ``samples`` resamples, index arrays drawn at once).
* ``a_only`` / ``b_only``: discordant pairs (recognised by a only, by b only), and ``mcnemar_p``,
  the exact two-sided McNemar p-value, ``binomtest(b_only, a_only + b_only, 0.5)``; 1.0 when no pair
  is discordant.

Only ids with a verdict (status ok) in both cells of a seed count; ids with a verdict in one cell
only are dropped and counted (``only_in_a`` / ``only_in_b``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from eeca.evaluate.levels import LEVELS, RECOGNISED
from eeca.io import InputError, read_jsonl

CI_METHOD = "paired bootstrap, stratified by seed, percentile"
_CHUNK_ELEMENTS = 1 << 22  # indices drawn per block: bounds memory at ~32 MB whatever n and samples are


def _recognised(value: object, where: str) -> bool:
    """A verdict as recognised or not: a bool, or a level (recognised = Strongly Known or Known)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value in LEVELS:
        return value in RECOGNISED
    raise ValueError(f"{where}: expected a bool or one of {LEVELS}, got {value!r}")


def paired_bootstrap_diffs(diffs: Sequence[np.ndarray], samples: int = 2000, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of the pooled difference (percentage points), stratified by seed.

    ``diffs[s]`` holds, per question of seed s, b - a in {-1, 0, 1}. Each of the ``samples``
    resamples draws len(diffs[s]) questions with replacement within every seed s; its value is
    100 * (sum of the drawn differences over all seeds) / (total pairs). Returns ``samples`` floats.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    arrays = [np.asarray(d, dtype=np.int64) for d in diffs]
    total = sum(len(d) for d in arrays)
    if total == 0:
        raise ValueError("no pairs to resample")
    rng = np.random.default_rng(seed)
    sums = np.zeros(samples, dtype=np.int64)
    for d in arrays:
        n = len(d)
        if n == 0:
            continue
        block = max(1, _CHUNK_ELEMENTS // n)
        for start in range(0, samples, block):
            stop = min(samples, start + block)
            idx = rng.integers(0, n, size=(stop - start, n))
            sums[start:stop] += d[idx].sum(axis=1)
    return 100.0 * sums / total


def paired_comparison(pairs: Sequence[tuple[Mapping[str, object], Mapping[str, object]]],
                      samples: int = 2000, seed: int = 0) -> dict:
    """Paired comparison of cells a and b over the same questions, pooled over seeds (module docstring).

    Args:
        pairs: one (a, b) per seed (or run): dicts id -> verdict, a verdict being a bool (recognised)
            or a level from LEVELS; only ids with a verdict in both count (give ok verdicts only).
        samples: bootstrap resamples for the interval of the difference.
        seed: numpy seed of the bootstrap.

    Returns: ``n`` (pairs, all seeds), ``n_per_seed``, ``only_in_a`` / ``only_in_b`` (dropped ids,
    all seeds), ``accuracy_a`` / ``accuracy_b`` (percent), ``diff`` (b - a, points),
    ``diff_ci_low`` / ``diff_ci_high``, ``a_only`` / ``b_only`` (discordant pairs), ``mcnemar_p``,
    ``per_seed`` (n, only_in_a, only_in_b, accuracy_a, accuracy_b, diff per seed), ``samples``,
    ``seed``, ``ci_method``. Raises InputError when a seed's cells share no id.
    """
    if not pairs:
        raise ValueError("no seeds to compare")
    per_seed, diffs = [], []
    hits_a = hits_b = a_only = b_only = 0
    for s, (cell_a, cell_b) in enumerate(pairs):
        common = sorted(set(map(str, cell_a)) & set(map(str, cell_b)))
        a_keys, b_keys = {str(k): v for k, v in cell_a.items()}, {str(k): v for k, v in cell_b.items()}
        if not common:
            raise InputError(f"seed {s}: the two cells share no judged question "
                             f"({len(a_keys)} ids in a, {len(b_keys)} in b)")
        ra = np.array([_recognised(a_keys[i], f"seed {s}: cell a: id {i!r}") for i in common])
        rb = np.array([_recognised(b_keys[i], f"seed {s}: cell b: id {i!r}") for i in common])
        d = rb.astype(np.int64) - ra.astype(np.int64)
        diffs.append(d)
        n = len(common)
        hits_a += int(ra.sum())
        hits_b += int(rb.sum())
        a_only += int((d < 0).sum())
        b_only += int((d > 0).sum())
        per_seed.append({"n": n, "only_in_a": len(a_keys) - n, "only_in_b": len(b_keys) - n,
                         "accuracy_a": 100.0 * float(ra.mean()), "accuracy_b": 100.0 * float(rb.mean()),
                         "diff": 100.0 * float(d.mean())})
    total = sum(p["n"] for p in per_seed)
    boot = paired_bootstrap_diffs(diffs, samples, seed)
    low, high = np.percentile(boot, [2.5, 97.5])
    discordant = a_only + b_only
    p_value = float(binomtest(b_only, discordant, 0.5).pvalue) if discordant else 1.0
    return {"n": total, "n_per_seed": [p["n"] for p in per_seed],
            "only_in_a": sum(p["only_in_a"] for p in per_seed), "only_in_b": sum(p["only_in_b"] for p in per_seed),
            "accuracy_a": 100.0 * hits_a / total, "accuracy_b": 100.0 * hits_b / total,
            "diff": 100.0 * (hits_b - hits_a) / total, "diff_ci_low": float(low), "diff_ci_high": float(high),
            "a_only": a_only, "b_only": b_only, "mcnemar_p": min(1.0, p_value),
            "per_seed": per_seed, "samples": samples, "seed": seed, "ci_method": CI_METHOD}


PathLike = str | os.PathLike


def _paths(x: PathLike | Sequence[PathLike]) -> list[Path]:
    return [Path(x)] if isinstance(x, (str, os.PathLike)) else [Path(p) for p in x]


def read_verdicts(path: PathLike) -> tuple[dict[str, str], int]:
    """id -> level of the ok verdicts of a judgments.jsonl, and the number of failed ones.

    An ok verdict with an unknown level, a row without id, or a duplicate id is an InputError naming
    file and line.
    """
    verdicts: dict[str, str] = {}
    seen: set[str] = set()
    failed = 0
    for line, row in enumerate(read_jsonl(path), 1):  # read_jsonl skips blank lines: line is the record number
        if not isinstance(row, dict) or row.get("id") is None:
            raise InputError(f"{path}: record {line}: field 'id' missing")
        rid = str(row["id"])
        if rid in seen:
            raise InputError(f"{path}: record {line}: duplicate id {rid!r}")
        seen.add(rid)
        if row.get("status") != "ok":
            failed += 1
            continue
        if row.get("level") not in LEVELS:
            raise InputError(f"{path}: record {line}: field 'level': {row.get('level')!r} is not one of {LEVELS}")
        verdicts[rid] = row["level"]
    return verdicts, failed


def compare_judgments(a: PathLike | Sequence[PathLike], b: PathLike | Sequence[PathLike],
                      samples: int = 2000, seed: int = 0) -> dict:
    """:func:`paired_comparison` of two cells' judgments.jsonl files, one path (or one per seed) each.

    Files pair up by position (seed i of a with seed i of b). Adds ``files_a`` / ``files_b`` and, per
    seed, ``failed_a`` / ``failed_b`` (verdicts that failed: dropped like missing ids). Raises
    InputError when the lists differ in length or a seed's two files share no judged id.
    """
    paths_a, paths_b = _paths(a), _paths(b)
    if not paths_a or len(paths_a) != len(paths_b):
        raise InputError(f"expected one judgments file per seed for each cell, got {len(paths_a)} and {len(paths_b)}")
    pairs, failed = [], []
    for pa, pb in zip(paths_a, paths_b, strict=True):
        (va, fa), (vb, fb) = read_verdicts(pa), read_verdicts(pb)
        if not va.keys() & vb.keys():
            raise InputError(f"{pa} and {pb} share no judged question ({len(va)} and {len(vb)} ok verdicts)")
        pairs.append((va, vb))
        failed.append((fa, fb))
    result = paired_comparison(pairs, samples, seed)
    for entry, (fa, fb) in zip(result["per_seed"], failed, strict=True):
        entry["failed_a"], entry["failed_b"] = fa, fb
    result["files_a"], result["files_b"] = [str(p) for p in paths_a], [str(p) for p in paths_b]
    return result
