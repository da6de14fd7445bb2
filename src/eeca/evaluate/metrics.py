"""Recognition metrics over judgments (paper section 3.1, "Evaluation metric"), with intervals and agreement.

Per level: the count and the percentage of judged questions; accuracy = Strongly Known + Known, in
percent as in the paper's tables. Questions whose verdict ``failed`` are NOT in the denominator
(they have no verdict; scoring them as Unknown would make a flaky judge look like a weak model) and
are reported as ``n_failed``; a run with failures is incomplete and its judge exits non-zero.
Beyond the paper: a bootstrap 95% interval for accuracy, and, when two judges rated the same
generations, their agreement (Cohen's kappa and the confusion matrix).

The bootstrap resamples the n judged questions with replacement; the number recognised in a
resample is then exactly Binomial(n, accuracy), so it is drawn as such (seeded) instead of
materialising n x samples indices. The interval is the 2.5 and 97.5 percentiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eeca.evaluate.levels import LEVELS, RECOGNISED
from eeca.io import read_jsonl, write_json


def compute_metrics(rows: list[dict], bootstrap_samples: int = 2000, seed: int = 0) -> dict:
    """Flat metrics dict: n, n_failed, per-level percentages and counts, accuracy and its 95% interval."""
    ok = [r for r in rows if r.get("status") == "ok"]
    bad = [r for r in ok if r.get("level") not in LEVELS]
    if bad:
        raise ValueError(f"judgment {bad[0].get('id')!r}: status ok but level {bad[0].get('level')!r} is not one of {LEVELS}")
    n = len(ok)
    counts = {lv: sum(r["level"] == lv for r in ok) for lv in LEVELS}
    out: dict = {"n": n, "n_failed": len(rows) - n, "bootstrap_samples": bootstrap_samples, "bootstrap_seed": seed}
    for lv in LEVELS:
        out[lv] = 100.0 * counts[lv] / n if n else 0.0
        out[f"count_{lv}"] = counts[lv]
    recognised = sum(counts[lv] for lv in RECOGNISED)
    out["accuracy"] = 100.0 * recognised / n if n else 0.0
    out["acc_ci_low"], out["acc_ci_high"] = bootstrap_ci(recognised, n, bootstrap_samples, seed)
    return out


def bootstrap_ci(successes: int, n: int, samples: int, seed: int) -> tuple[float | None, float | None]:
    """Percentile bootstrap 95% interval (in percent) of a proportion successes / n."""
    if n == 0:
        return None, None
    draws = np.random.default_rng(seed).binomial(n, successes / n, size=samples) / n * 100.0
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def agreement(rows_a: list[dict], rows_b: list[dict]) -> dict:
    """Cohen's kappa and the confusion matrix (rows: judge a, columns: judge b) over ids both judged ok."""
    a = {str(r["id"]): r["level"] for r in rows_a if r.get("status") == "ok"}
    b = {str(r["id"]): r["level"] for r in rows_b if r.get("status") == "ok"}
    common = [i for i in a if i in b]
    index = {lv: i for i, lv in enumerate(LEVELS)}
    confusion = np.zeros((len(LEVELS), len(LEVELS)), dtype=np.int64)
    for i in common:
        confusion[index[a[i]], index[b[i]]] += 1
    n = len(common)
    observed = np.trace(confusion) / n if n else 0.0
    expected = float(confusion.sum(1) @ confusion.sum(0)) / n**2 if n else 0.0
    kappa = (observed - expected) / (1 - expected) if n and expected < 1 else None
    return {"n": n, "labels": list(LEVELS), "confusion": confusion.tolist(), "agreement": float(observed),
            "kappa": None if kappa is None else float(kappa)}


def metrics_command(judgments: Path, other: Path | None = None, out: Path | None = None,
                    bootstrap_samples: int = 2000, seed: int = 0) -> int:
    """Recognition metrics of a judgments file; with --other, agreement of two judges on the same generations.

    Args:
        judgments: judgments.jsonl written by eeca judge.
        other: a second judge's judgments.jsonl over the same generations (adds kappa and the confusion matrix).
        out: metrics JSON to write (default: metrics.json beside JUDGMENTS, or agreement.json with --other).
        bootstrap_samples: bootstrap resamples for the accuracy interval.
        seed: bootstrap seed.
    """
    rows = read_jsonl(judgments)
    result = compute_metrics(rows, bootstrap_samples, seed)
    line = (f"metrics: n {result['n']}, failed {result['n_failed']}, accuracy {result['accuracy']:.2f}% "
            f"[{result['acc_ci_low'] or 0:.2f}, {result['acc_ci_high'] or 0:.2f}]")
    if other is not None:
        result["agreement"] = agreement(rows, read_jsonl(other))
        result["agreement"]["other"] = str(other)
        kappa = result["agreement"]["kappa"]
        line += f"; agreement with {other}: {result['agreement']['agreement']:.3f}, kappa " + \
            (f"{kappa:.3f}" if kappa is not None else "undefined") + f" over {result['agreement']['n']}"
    target = out or Path(judgments).parent / ("agreement.json" if other is not None else "metrics.json")
    write_json(target, result)
    print(f"{line}; wrote {target}")
    return 0
