"""Per-cell accuracy interval (Clopper-Pearson), judge agreement, and `eeca metrics --other` refusing mismatched files."""

import json

import pytest
from scipy.stats import beta

from eeca.evaluate.levels import LEVELS
from eeca.evaluate.metrics import agreement, clopper_pearson_ci, compute_metrics, metrics_command
from eeca.io import InputError


def _rows(levels, start=0):
    return [{"id": str(start + i), "level": lv, "judge": "j", "explanation": "", "status": "failed" if lv is None else "ok",
             "cache_key": f"k{start + i}"} for i, lv in enumerate(levels)]


def _cell(recognised, n):
    return _rows(["known"] * recognised + ["unknown"] * (n - recognised))


def test_zero_of_forty_is_not_a_zero_width_interval():
    m = compute_metrics(_cell(0, 40))
    assert (m["accuracy"], m["acc_ci_low"]) == (0.0, 0.0)
    assert m["acc_ci_high"] == pytest.approx(100 * (1 - 0.025 ** (1 / 40)), abs=1e-9)
    assert round(m["acc_ci_high"], 2) == 8.81
    assert m["ci_method"] == "clopper-pearson"


def test_forty_of_forty_reaches_one_hundred():
    m = compute_metrics(_cell(40, 40))
    assert (m["accuracy"], m["acc_ci_high"]) == (100.0, 100.0)
    assert m["acc_ci_low"] == pytest.approx(100 * 0.025 ** (1 / 40), abs=1e-9)
    assert round(m["acc_ci_low"], 2) == 91.19


def test_middle_case_matches_beta_quantiles():
    k, n = 13, 40  # Clopper-Pearson ends are beta quantiles, computed here without binomtest
    m = compute_metrics(_cell(k, n))
    assert m["accuracy"] == 32.5
    assert m["acc_ci_low"] == pytest.approx(100 * beta.ppf(0.025, k, n - k + 1), abs=1e-7)
    assert m["acc_ci_high"] == pytest.approx(100 * beta.ppf(0.975, k + 1, n - k), abs=1e-7)
    assert (round(m["acc_ci_low"], 2), round(m["acc_ci_high"], 2)) == (18.57, 49.13)


def test_no_judged_question_gives_no_interval_and_no_seed_in_the_output():
    m = compute_metrics(_rows([None, None]))
    assert (m["n"], m["n_failed"], m["accuracy"], m["acc_ci_low"], m["acc_ci_high"]) == (0, 2, None, None, None)
    assert clopper_pearson_ci(0, 0) == (None, None)
    assert "bootstrap_samples" not in m and "bootstrap_seed" not in m
    # the old arguments are still accepted and change nothing: the interval is exact
    assert compute_metrics(_cell(7, 30), bootstrap_samples=10, seed=5) == compute_metrics(_cell(7, 30))


def test_kappa_hand_case_and_undefined_cases():
    got = agreement(_rows(["strongly_known", "strongly_known", "known", "known"]),
                    _rows(["strongly_known", "known", "known", "known"]))
    # p_o = 3/4; p_e = 1/2 * 1/4 + 1/2 * 3/4 = 1/2; kappa = (3/4 - 1/2) / (1 - 1/2)
    assert (got["n"], got["agreement"], got["kappa"]) == (4, 0.75, 0.5)
    assert got["labels"] == list(LEVELS)
    assert got["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    same = agreement(_rows(["known"] * 5), _rows(["known"] * 5))  # chance agreement is 1: kappa undefined
    assert (same["n"], same["agreement"], same["kappa"]) == (5, 1.0, None)
    none = agreement(_rows(["known"] * 3), _rows(["known"] * 3, start=10))
    assert (none["n"], none["agreement"], none["kappa"], none["confusion"]) == (0, 0.0, None, [[0] * 4] * 4)


def _write_judge_dir(path, rows, sha=None):
    path.mkdir(parents=True)
    (path / "judgments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"judge": "j", "n": len(rows)}
    if sha is not None:
        summary["generations_sha256"] = sha
    (path / "judge_summary.json").write_text(json.dumps(summary))
    return path / "judgments.jsonl"


def test_metrics_command_prints_the_exact_interval(tmp_path, capsys):
    path = _write_judge_dir(tmp_path / "j", _cell(0, 40))
    assert metrics_command(path) == 0
    assert "accuracy 0.00% [0.00, 8.81] (clopper-pearson 95%)" in capsys.readouterr().out
    assert json.loads((tmp_path / "j" / "metrics.json").read_text())["acc_ci_high"] == pytest.approx(8.8097303, abs=1e-6)
    path = _write_judge_dir(tmp_path / "k", _cell(40, 40))
    metrics_command(path)
    assert "accuracy 100.00% [91.19, 100.00]" in capsys.readouterr().out


def test_metrics_other_refuses_files_with_different_ids(tmp_path):
    a = _write_judge_dir(tmp_path / "rule", _rows(["known"] * 10 + ["unknown"] * 10))
    b = _write_judge_dir(tmp_path / "llm", _rows(["known"] * 12 + ["unknown"] * 6) + _rows(["known"] * 3, start=100))
    with pytest.raises(InputError) as e:
        metrics_command(a, other=b)
    msg = str(e.value)
    assert str(a) in msg and str(b) in msg
    assert "2 id(s) only in" in msg and f"3 only in {b}" in msg and "(18 in both)" in msg
    assert not (tmp_path / "rule" / "agreement.json").exists()


def test_metrics_other_accepts_identical_ids_failed_included(tmp_path, capsys):
    levels_a = ["known"] * 10 + ["unknown"] * 10
    levels_b = ["known"] * 8 + ["unknown"] * 11 + [None]  # a failed verdict is still a judgment of that id
    a = _write_judge_dir(tmp_path / "rule", _rows(levels_a))
    b = _write_judge_dir(tmp_path / "llm", _rows(levels_b))
    assert metrics_command(a, other=b) == 0
    out = json.loads((tmp_path / "rule" / "agreement.json").read_text())
    assert out["agreement"]["n"] == 19 and out["agreement"]["same_generations_checked_by"] == "ids"
    assert out["agreement"]["confusion"][1] == [0, 8, 0, 2]
    assert "over 19; wrote" in capsys.readouterr().out


def test_metrics_other_compares_generations_sha256_when_both_summaries_have_it(tmp_path):
    rows = _rows(["known"] * 4 + ["unknown"] * 4)
    a = _write_judge_dir(tmp_path / "a", rows, sha="a" * 64)
    b = _write_judge_dir(tmp_path / "b", rows, sha="b" * 64)
    with pytest.raises(InputError, match="generations_sha256 aaaaaaaaaaaa... in .* vs bbbbbbbbbbbb..."):
        metrics_command(a, other=b)
    c = _write_judge_dir(tmp_path / "c", rows, sha="a" * 64)
    metrics_command(a, other=c)
    assert json.loads((tmp_path / "a" / "agreement.json").read_text())["agreement"]["same_generations_checked_by"] \
        == "ids+generations_sha256"
    d = _write_judge_dir(tmp_path / "d", rows)  # one summary without the hash: ids only
    metrics_command(a, other=d, out=tmp_path / "ad.json")
    assert json.loads((tmp_path / "ad.json").read_text())["agreement"]["same_generations_checked_by"] == "ids"
    (tmp_path / "d" / "judge_summary.json").write_text("{not json")
    with pytest.raises(InputError, match="judge_summary.json: unreadable JSON"):
        metrics_command(a, other=d)
