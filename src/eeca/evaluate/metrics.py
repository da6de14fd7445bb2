"""Recognition metrics over judgments (paper section 3.1, "Evaluation metric"), with intervals and agreement.

Per level: the count and the percentage of judged questions; accuracy = Strongly Known + Known, in
percent as in the paper's tables. Questions whose verdict ``failed`` are NOT in the denominator
(they have no verdict; scoring them as Unknown would make a flaky judge look like a weak model) and
are reported as ``n_failed``; a run with failures is incomplete and its judge exits non-zero.
Beyond the paper: an exact 95% interval for accuracy, and, when two judges rated the same
generations, their agreement (Cohen's kappa and the confusion matrix).

The interval is Clopper-Pearson (``ci_method: clopper-pearson``): exact for a binomial count, it
holds at the edges, where small cells live (0 of 40 recognised gives [0, 8.81]%, not the [0, 0] of
a bootstrap at the observed rate), and it needs no seed. Comparing two cells on the same questions
is a paired question, answered by :mod:`eeca.evaluate.compare`, not by overlapping these intervals.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from eeca.evaluate.levels import LEVELS, RECOGNISED
from eeca.io import InputError, read_jsonl, write_json

CI_METHOD = "clopper-pearson"


def compute_metrics(rows: list[dict], bootstrap_samples: int = 2000, seed: int = 0) -> dict:
    """Flat metrics dict: n, n_failed, per-level percentages and counts, accuracy and its 95% interval.

    With no verdict (n = 0, e.g. every request failed) the percentages, the accuracy and its interval
    are None: nothing was measured, which is not an accuracy of 0.

    ``bootstrap_samples`` and ``seed`` are accepted for compatibility with callers and configs and
    are unused: the per-cell interval is exact (Clopper-Pearson). Resampling is used only where a
    difference between two cells is wanted (:mod:`eeca.evaluate.compare`).
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    bad = [r for r in ok if r.get("level") not in LEVELS]
    if bad:
        raise InputError(f"judgment {bad[0].get('id')!r}: status ok but level {bad[0].get('level')!r} is not one of {LEVELS}")
    n = len(ok)
    counts = {lv: sum(r["level"] == lv for r in ok) for lv in LEVELS}
    out: dict = {"n": n, "n_failed": len(rows) - n}
    for lv in LEVELS:  # percentages of nothing are not 0: None ("not measurable") when n = 0
        out[lv] = 100.0 * counts[lv] / n if n else None
        out[f"count_{lv}"] = counts[lv]
    recognised = sum(counts[lv] for lv in RECOGNISED)
    out["accuracy"] = 100.0 * recognised / n if n else None
    out["acc_ci_low"], out["acc_ci_high"] = clopper_pearson_ci(recognised, n)
    out["ci_method"] = CI_METHOD
    return out


def clopper_pearson_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Exact (Clopper-Pearson) interval, in percent, of a proportion successes / n; (None, None) for n = 0.

    The low end is 0 at 0 successes and the high end 100 at n successes; elsewhere the ends are
    beta quantiles (scipy ``binomtest(...).proportion_ci(method="exact")``).
    """
    if n == 0:
        return None, None
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} not in [0, {n}]")
    from scipy.stats import binomtest  # imported here: `import eeca.evaluate.metrics` stays light

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return 100.0 * float(ci.low), 100.0 * float(ci.high)


def agreement(rows_a: list[dict], rows_b: list[dict]) -> dict:
    """Cohen's kappa and the confusion matrix (rows: judge a, columns: judge b) over ids both judged ok.

    Computed by scikit-learn over the four levels; ``kappa`` is None where it is undefined (no common
    id, or both judges gave the same single level to everything, so chance agreement is 1).
    """
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    a = {str(r["id"]): r["level"] for r in rows_a if r.get("status") == "ok"}
    b = {str(r["id"]): r["level"] for r in rows_b if r.get("status") == "ok"}
    common = [i for i in a if i in b]
    n = len(common)
    labels = list(LEVELS)
    if n == 0:  # sklearn refuses empty input
        return {"n": 0, "labels": labels, "confusion": [[0] * len(labels) for _ in labels], "agreement": 0.0,
                "kappa": None}
    ya, yb = [a[i] for i in common], [b[i] for i in common]
    confusion = confusion_matrix(ya, yb, labels=labels)
    with warnings.catch_warnings():  # undefined kappa: reported as None below, not as a warning
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        kappa = float(cohen_kappa_score(ya, yb, labels=labels))
    return {"n": n, "labels": labels, "confusion": confusion.tolist(),
            "agreement": float(confusion.trace() / n), "kappa": None if math.isnan(kappa) else kappa}


def generations_sha256(judgments: Path) -> str | None:
    """``generations_sha256`` of the ``judge_summary.json`` beside a judgments file, or None where absent."""
    summary = Path(judgments).parent / "judge_summary.json"
    if not summary.is_file():
        return None
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{summary}: unreadable JSON ({e})") from None
    value = data.get("generations_sha256") if isinstance(data, dict) else None
    if value is not None and not isinstance(value, str):
        raise InputError(f"{summary}: field 'generations_sha256': expected a hex string, got {type(value).__name__}")
    return value or None


def check_same_generations(judgments: Path, other: Path, rows: list[dict], other_rows: list[dict]) -> str:
    """Refuse two judgment files that do not rate the same generations; returns how it was checked.

    ``cache_key`` cannot tell (it covers the judge's identity), so: the two files must hold the same
    ids (failed verdicts included: they are judgments of a generation too), and where both
    ``judge_summary.json`` files beside them carry ``generations_sha256`` (the sha256 of the
    generations.jsonl the judge read), the two hashes must be equal. Returns ``"ids"`` or
    ``"ids+generations_sha256"``.
    """
    ids, other_ids = {str(r.get("id")) for r in rows}, {str(r.get("id")) for r in other_rows}
    if ids != other_ids:
        raise InputError(f"{judgments} and {other} do not judge the same generations: "
                         f"{len(ids - other_ids)} id(s) only in {judgments}, {len(other_ids - ids)} only in {other} "
                         f"({len(ids & other_ids)} in both)")
    sha, other_sha = generations_sha256(judgments), generations_sha256(other)
    if sha is None or other_sha is None:
        return "ids"
    if sha != other_sha:
        raise InputError(f"{judgments} and {other} do not judge the same generations: generations_sha256 "
                         f"{sha[:12]}... in {Path(judgments).parent / 'judge_summary.json'} vs {other_sha[:12]}... "
                         f"in {Path(other).parent / 'judge_summary.json'}")
    return "ids+generations_sha256"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def accuracy_text(m: dict) -> str:
    """``accuracy 62.50% [40.59, 81.20] (clopper-pearson 95%)``, or why there is none (n = 0)."""
    if m["n"] == 0:
        return "accuracy not measurable (n = 0: no question has a verdict)"
    return f"accuracy {m['accuracy']:.2f}% [{_pct(m['acc_ci_low'])}, {_pct(m['acc_ci_high'])}] ({CI_METHOD} 95%)"


def metrics_command(judgments: Path, other: Path | None = None, out: Path | None = None,
                    bootstrap_samples: int = 2000, seed: int = 0) -> int:
    """Recognition metrics of a judgments file; with --other, agreement of two judges on the same generations.

    Args:
        judgments: judgments.jsonl written by eeca judge.
        other: a second judge's judgments.jsonl over the same generations (adds kappa and the confusion
            matrix); refused when the two files do not hold the same ids, or when the generations_sha256
            of the judge_summary.json files beside them differ.
        out: metrics JSON to write (default: metrics.json beside JUDGMENTS, or agreement.json with --other).
        bootstrap_samples: unused (the accuracy interval is exact, Clopper-Pearson); kept for old scripts.
        seed: unused (see bootstrap_samples).
    """
    if bootstrap_samples < 1:
        raise InputError(f"--bootstrap-samples {bootstrap_samples}: must be >= 1")
    rows = read_jsonl(judgments)
    other_rows = read_jsonl(other) if other is not None else None
    checked = check_same_generations(judgments, other, rows, other_rows) if other is not None else None
    result = compute_metrics(rows, bootstrap_samples, seed)
    line = f"metrics: n {result['n']}, failed {result['n_failed']}, {accuracy_text(result)}"
    if other is not None:
        result["agreement"] = agreement(rows, other_rows)
        result["agreement"]["other"] = str(other)
        result["agreement"]["same_generations_checked_by"] = checked
        kappa = result["agreement"]["kappa"]
        line += f"; agreement with {other}: {result['agreement']['agreement']:.3f}, kappa " + \
            (f"{kappa:.3f}" if kappa is not None else "undefined") + f" over {result['agreement']['n']}"
    target = out or Path(judgments).parent / ("agreement.json" if other is not None else "metrics.json")
    write_json(target, result)
    print(f"{line}; wrote {target}")
    return 0
