"""Paired comparison of two cells on the same test questions, pooled over seeds (paper section 3.1).

Pure numpy / scipy over verdicts already read (recognised or not per question id), so that both
:mod:`eeca.evaluate.compare` (judgment files) and ``eeca report`` (which reads files only) use it.

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

Only ids with a verdict in both cells of a seed count; ids with a verdict in one cell only are
dropped and counted (``only_in_a`` / ``only_in_b``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import binomtest

from eeca.io import InputError

CI_METHOD = "paired bootstrap, stratified by seed, percentile"
_CHUNK_ELEMENTS = 1 << 22  # indices drawn per block: bounds memory at ~32 MB whatever n and samples are


def _bool(value: object, where: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{where}: expected a bool (recognised or not), got {value!r}")


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
        pairs: one (a, b) per seed (or run): dicts id -> recognised (bool); only ids with a verdict in
            both count (give ok verdicts only).
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
        ra = np.array([_bool(a_keys[i], f"seed {s}: cell a: id {i!r}") for i in common])
        rb = np.array([_bool(b_keys[i], f"seed {s}: cell b: id {i!r}") for i in common])
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
