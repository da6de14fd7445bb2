"""The MGLD train/test split (paper App. B.4: 5k test samples out of ~203k), by landmark, and the
evaluated subset of the test split (Tables 6-7 count 2,500 answers per row).

Test landmarks are disjoint from train landmarks, so a model is never tested on a landmark it was
trained on. Landmarks are taken in the order of ``sha256(seed, landmark_id)`` until the test split
holds at least the requested number of samples: the split depends only on the seed and the set of
samples, never on their order, and growing the input keeps most assignments.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict


def test_target(n_samples: int, test_count: int | None, test_fraction: float | None) -> int:
    """How many samples the test split should hold (a count, or a fraction of ``n_samples``)."""
    target = test_count if test_count is not None else round((test_fraction or 0.0) * n_samples)
    if target >= n_samples:
        raise ValueError(f"a test split of {target} samples leaves none of the {n_samples} for training")
    return target


def split_by_landmark(samples: list[tuple[str, int]], test_count: int | None = None,
                      test_fraction: float | None = None, seed: int = 0) -> set[str]:
    """The ids of the test samples among ``samples`` = ``[(id, landmark_id), ...]``.

    Whole landmarks go to test until it holds at least the target; with one sample per landmark
    (MGLD) the target is met exactly.
    """
    target = test_target(len(samples), test_count, test_fraction)
    by_landmark: dict[int, list[str]] = defaultdict(list)
    for sample_id, landmark_id in samples:
        by_landmark[int(landmark_id)].append(sample_id)
    order = sorted(by_landmark, key=lambda lm: hashlib.sha256(f"mgld-split:{seed}:{lm}".encode()).digest())
    test: set[str] = set()
    for lm in order:
        if len(test) >= target:
            break
        test.update(by_landmark[lm])
    return test


def eval_subset(test_ids: list[str], eval_count: int | None, seed: int = 0) -> set[str]:
    """The ``eval_count`` test ids the tables are computed on, drawn in the order of ``sha256(seed, id)``
    (independent of the records' order); all of them when ``eval_count`` is None or not smaller.

    The paper sets aside 5k test samples (App. B.4) while Tables 6-7 count 2,500 per row: the toolkit
    builds the 5k and evaluates this seeded 2,500 (``split.eval_count``).
    """
    if eval_count is None or eval_count >= len(test_ids):
        return set(test_ids)
    order = sorted(test_ids, key=lambda i: hashlib.sha256(f"mgld-eval:{seed}:{i}".encode()).digest())
    return set(order[:eval_count])
