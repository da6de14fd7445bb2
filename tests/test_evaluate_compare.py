"""Paired comparison of two cells on the same questions (eeca.evaluate.compare): hand cases and a naive bootstrap."""

import json

import numpy as np
import pytest
from scipy.stats import binom

from eeca.evaluate.compare import compare_judgments, paired_comparison
from eeca.io import InputError
from eeca.stats import paired_bootstrap_diffs


def _cells(n, a_hits, b_hits):
    return {str(i): i in a_hits for i in range(n)}, {str(i): i in b_hits for i in range(n)}


def test_identical_cells_differ_by_exactly_nothing():
    a, _ = _cells(40, set(range(13)), set())
    r = paired_comparison([(a, dict(a))])
    assert (r["n"], r["diff"], r["diff_ci_low"], r["diff_ci_high"], r["mcnemar_p"]) == (40, 0.0, 0.0, 0.0, 1.0)
    assert (r["a_only"], r["b_only"], r["accuracy_a"], r["accuracy_b"]) == (0, 0, 32.5, 32.5)


def test_hand_case_six_more_recognised():
    a, b = _cells(40, set(range(10)), set(range(16)))  # b recognises a's 10 and 6 more
    r = paired_comparison([(a, b)], samples=2000, seed=0)
    assert (r["accuracy_a"], r["accuracy_b"], r["diff"]) == (25.0, 40.0, 15.0)
    assert (r["a_only"], r["b_only"]) == (0, 6)
    assert r["mcnemar_p"] == 2 * 0.5**6 == 0.03125
    # one seed, differences in {0, 1}: the resampled sum is exactly Binomial(40, 6/40); its 2.5% and
    # 97.5% quantiles are 2 and 11 (cdf(10) = 0.970 < 0.975), i.e. [5.0, 27.5] points
    assert (binom.ppf(0.025, 40, 0.15), binom.ppf(0.975, 40, 0.15)) == (2.0, 11.0)
    assert (r["diff_ci_low"], r["diff_ci_high"]) == (5.0, 27.5)
    assert r["diff_ci_low"] <= r["diff"] <= r["diff_ci_high"]
    assert paired_comparison([(a, b)], samples=2000, seed=0) == r  # seeded
    swapped = paired_comparison([(b, a)], samples=2000, seed=0)
    assert (swapped["diff"], swapped["a_only"], swapped["b_only"], swapped["mcnemar_p"]) == (-15.0, 6, 0, 0.03125)


def test_mcnemar_counts_both_directions_and_levels_are_accepted():
    levels_a = {str(i): ("known" if i < 10 else "unknown") for i in range(30)}
    levels_b = {str(i): ("strongly_known" if 3 <= i < 15 else "weakly_unknown") for i in range(30)}
    r = paired_comparison([(levels_a, levels_b)])
    assert (r["a_only"], r["b_only"], r["accuracy_a"], r["accuracy_b"]) == (3, 5, 100 / 3, 40.0)
    assert r["diff"] == pytest.approx(20 / 3)
    assert r["mcnemar_p"] == pytest.approx(2 * sum(binom.pmf(k, 8, 0.5) for k in range(0, 4)))  # 0.7265625
    assert r["mcnemar_p"] == 0.7265625
    with pytest.raises(ValueError, match="cell b: id '0'"):
        paired_comparison([(levels_a, {"0": "partially_known"})])


def test_ids_missing_in_one_cell_are_dropped_and_counted():
    a, b = _cells(40, set(range(10)), set(range(16)))
    a["only-a"] = True
    b.update({"only-b1": True, "only-b2": False})
    r = paired_comparison([(a, b)])
    assert (r["n"], r["only_in_a"], r["only_in_b"], r["diff"]) == (40, 1, 2, 15.0)
    assert r["per_seed"][0] == {"n": 40, "only_in_a": 1, "only_in_b": 2, "accuracy_a": 25.0, "accuracy_b": 40.0,
                                "diff": 15.0}
    with pytest.raises(InputError, match="seed 1: the two cells share no judged question"):
        paired_comparison([(a, b), ({"x": True}, {"y": True})])


def _naive_stratified(diffs, samples, rng):
    """Slow reference: one Python loop per resample, drawing within each seed."""
    total = sum(len(d) for d in diffs)
    out = []
    for _ in range(samples):
        s = 0
        for d in diffs:
            s += sum(d[rng.integers(0, len(d))] for _ in range(len(d)))
        out.append(100.0 * s / total)
    return np.array(out)


def test_pooled_over_two_seeds_matches_a_naive_bootstrap():
    rng = np.random.default_rng(7)
    # seed 0: b better; seed 1: b much worse, so resampling all 100 pairs as one pool (not within
    # each seed) would give a visibly wider distribution (sd 7.53 vs 5.89 points)
    a0, b0 = _cells(60, set(rng.choice(60, 15, replace=False)), set(rng.choice(60, 35, replace=False)))
    a1, b1 = _cells(40, set(range(30)), set(range(5)))
    a1["gone"] = True  # dropped, counted
    r = paired_comparison([(a0, b0), (a1, b1)], samples=3000, seed=1)
    assert (r["n"], r["n_per_seed"], r["only_in_a"], r["only_in_b"]) == (100, [60, 40], 1, 0)
    assert (r["accuracy_a"], r["accuracy_b"], r["diff"]) == (45.0, 40.0, -5.0)
    assert (r["a_only"], r["b_only"]) == (31, 26)
    assert r["mcnemar_p"] == pytest.approx(2 * binom.cdf(26, 57, 0.5), rel=1e-12)
    assert (r["diff_ci_low"], r["diff_ci_high"]) == (-16.0, 6.0)

    # per-seed differences in the order paired_comparison pairs them (sorted ids)
    d0 = np.array([int(b0[i]) - int(a0[i]) for i in sorted(b0)])
    d1 = np.array([int(b1[i]) - int(a1[i]) for i in sorted(b1)])
    assert 100 * (d0.sum() + d1.sum()) / 100 == r["diff"]
    fast = paired_bootstrap_diffs([d0, d1], samples=3000, seed=1)
    assert (r["diff_ci_low"], r["diff_ci_high"]) == tuple(float(x) for x in np.percentile(fast, [2.5, 97.5]))
    naive = _naive_stratified([d0, d1], 1000, np.random.default_rng(2))
    assert abs(fast.mean() - naive.mean()) < 0.5
    # stratified sd: sqrt(sum over seeds of n_s * var(d_s)) / N, in points; pooled resampling's is larger
    strat = 100 * np.sqrt(len(d0) * d0.var() + len(d1) * d1.var()) / 100
    pooled = 100 * np.sqrt(100 * np.concatenate([d0, d1]).var()) / 100
    assert (round(strat, 2), round(pooled, 2)) == (5.89, 7.53)
    assert fast.std() == pytest.approx(strat, rel=0.05) and naive.std() == pytest.approx(strat, rel=0.1)
    assert abs(r["diff_ci_low"] - np.percentile(naive, 2.5)) <= 2.0
    assert abs(r["diff_ci_high"] - np.percentile(naive, 97.5)) <= 2.0


def _write(path, verdicts):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "level": lv, "status": "failed" if lv is None else "ok", "judge": "rule"} for i, lv in verdicts.items()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_compare_judgments_files_one_per_seed(tmp_path):
    lv = {str(i): "known" if i < 10 else "unknown" for i in range(40)}
    better = {str(i): "strongly_known" if i < 16 else "unknown" for i in range(40)}
    better["39"] = None  # failed: dropped like a missing id
    a0, b0 = _write(tmp_path / "a0.jsonl", lv), _write(tmp_path / "b0.jsonl", better)
    single = compare_judgments(a0, b0, samples=500, seed=0)
    assert (single["n"], single["diff"], single["b_only"], single["only_in_a"]) == (39, 100 * 6 / 39, 6, 1)
    assert (single["per_seed"][0]["failed_a"], single["per_seed"][0]["failed_b"]) == (0, 1)
    assert single["files_a"] == [str(a0)]
    a1, b1 = _write(tmp_path / "a1.jsonl", lv), _write(tmp_path / "b1.jsonl", lv)
    both = compare_judgments([a0, a1], [b0, b1], samples=500, seed=0)
    assert (both["n"], both["n_per_seed"], both["b_only"], both["mcnemar_p"]) == (79, [39, 40], 6, 0.03125)
    assert both["diff"] == pytest.approx(100 * 6 / 79)
    with pytest.raises(InputError, match="one judgments file per seed"):
        compare_judgments([a0, a1], [b0])
    other = _write(tmp_path / "other.jsonl", {"x1": "known", "x2": "unknown"})
    with pytest.raises(InputError, match=f"{a1} and {other} share no judged question"):
        compare_judgments([a0, a1], [b0, other])
    bad = _write(tmp_path / "bad.jsonl", {"0": "partially_known"})
    with pytest.raises(InputError, match="bad.jsonl: record 1: field 'level'"):
        compare_judgments(a0, bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text(a0.read_text() + a0.read_text().splitlines(keepends=True)[0])
    with pytest.raises(InputError, match="dup.jsonl: record 41: duplicate id '0'"):
        compare_judgments(dup, b0)
