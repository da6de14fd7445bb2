"""eeca judge: the LLM judge against a faulty local server, the rule judge on hand cases, metrics."""

import json
import socket

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from eeca.cli import main
from eeca.config import from_dict, to_dict
from eeca.evaluate.judge import (
    GroundTruth,
    JudgeConfig,
    parse_verdict,
    rule_verdict,
    run_judge,
)
from eeca.evaluate.levels import LEVELS
from eeca.evaluate.metrics import agreement, compute_metrics
from eeca.io import read_json, read_jsonl
from eeca.llm_client import FatalChatError
from fake_openai import JudgeServer

# ---- data -----------------------------------------------------------------------------------------

NAMES = {
    "a": "Alpha lvl=known", "b": "Bravo 429x2 lvl=strongly_known", "c": "Charlie 500x1 lvl=unknown",
    "d": "Delta timeoutx1 lvl=weakly_unknown", "e": "Echo malformed lvl=known", "f": "Foxtrot offlabel lvl=known",
    "g": "Golf always500 lvl=strongly_known", "h": "Hotel lvl=unknown",
}


def write_inputs(tmp_path, names=NAMES, responses=None):
    test = [{"id": i, "image": f"{i}.jpg", "landmark_id": n, "landmark_name": name, "hierarchical_label": "tower",
             "entities": ["twin spires"],
             "conversations": [{"from": "human", "value": "<image>\nWhich landmark is this?"},
                               {"from": "gpt", "value": f"It is {name}."}]}
            for n, (i, name) in enumerate(names.items())]
    (tmp_path / "test.json").write_text(json.dumps(test))
    gens = [{"id": i, "question": "Which landmark is this?", "responses": (responses or {}).get(i, [f"answer {j}" for j in range(5)]),
             "model": "m", "seed": 0, "gen_config_hash": "h"} for i in names]
    (tmp_path / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gens))
    return tmp_path / "generations.jsonl", tmp_path / "test.json"


def llm_cfg(tmp_path, url, **kw) -> JudgeConfig:
    gens, test = write_inputs(tmp_path)
    base = {"generations": str(gens), "test_json": str(test), "judge": "llm", "model": "judge-model",
            "base_url": url, "api_key_env": "EECA_TEST_JUDGE_KEY", "max_retries": 3, "timeout_s": 0.5,
            "max_concurrency": 4, "cache": str(tmp_path / "cache.jsonl"), "bootstrap_samples": 200}
    return from_dict(JudgeConfig, {**base, **kw})


# ---- the LLM judge --------------------------------------------------------------------------------

def test_faults_never_invent_a_verdict_and_reruns_ask_only_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("EECA_TEST_JUDGE_KEY", raising=False)
    with JudgeServer(stall=1.5) as server:
        cfg = llm_cfg(tmp_path, server.url + "/")
        first = run_judge(cfg, tmp_path / "out")
        rows = {r["id"]: r for r in read_jsonl(tmp_path / "out" / "judgments.jsonl")}
        # Retried faults end in the server's verdict; unparseable or exhausted ones are failed with no level.
        assert {i: r["level"] for i, r in rows.items() if r["status"] == "ok"} == {
            "a": "known", "b": "strongly_known", "c": "unknown", "d": "weakly_unknown", "h": "unknown"}
        assert {i for i, r in rows.items() if r["status"] == "failed"} == {"e", "f", "g"}
        assert all(rows[i]["level"] is None for i in "efg")
        assert "off-label level 'Partially Known'" in rows["f"]["explanation"]
        assert "not JSON" in rows["e"]["explanation"]
        assert server.attempts[NAMES["b"]] == 3 and server.attempts[NAMES["g"]] == 4  # 1 + max_retries
        m = first["metrics"]
        assert (m["n"], m["n_failed"], m["count_unknown"]) == (5, 3, 2)
        assert first["summary"]["prompt_tokens"] > 0 and first["summary"]["failed"] == 3
        body = server.bodies[0]
        assert body["temperature"] == 0 and body["model"] == "judge-model"
        schema = body["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["level"]["enum"] == ["Strongly Known", "Known", "Weakly Unknown", "Unknown"]
        assert set(server.auth) == {"Bearer no-key-needed"}  # a local server gets a dummy key

        server.healthy = True
        before = dict(server.attempts)
        second = run_judge(cfg, tmp_path / "out")
        asked = {n for n in server.attempts if server.attempts[n] != before.get(n, 0)}
        assert asked == {NAMES[i] for i in "efg"}
        assert second["metrics"]["n_failed"] == 0 and second["summary"]["cached"] == 5

        total = sum(server.requests.values())
        third = run_judge(cfg, tmp_path / "out2")  # another folder, same cache: nothing to ask
        assert sum(server.requests.values()) == total
        assert third["metrics"] == {**second["metrics"], "judge": third["metrics"]["judge"]}
        assert [r["level"] for r in read_jsonl(tmp_path / "out2" / "judgments.jsonl")] == \
               [r["level"] for r in read_jsonl(tmp_path / "out" / "judgments.jsonl")]


def test_key_comes_from_the_environment_and_never_reaches_the_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("EECA_TEST_JUDGE_KEY", "sk-test-secret-123")
    with JudgeServer() as server:
        cfg = llm_cfg(tmp_path, server.url, cache=None)
        run_judge(cfg, tmp_path / "out")
        assert set(server.auth) == {"Bearer sk-test-secret-123"}
    for f in (tmp_path / "out").iterdir():
        assert "sk-test-secret" not in f.read_text()


def test_health_check_fails_before_any_completion(tmp_path):
    with JudgeServer(model="other-model") as server:
        with pytest.raises(FatalChatError, match="does not serve model 'judge-model'"):
            run_judge(llm_cfg(tmp_path, server.url), tmp_path / "out")
        assert server.completions == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FatalChatError, match="health check failed: connection error"):
        run_judge(llm_cfg(tmp_path, f"http://127.0.0.1:{port}", max_retries=0), tmp_path / "out")
    with pytest.raises(FatalChatError, match="OPENAI_TEST_NOPE"):
        run_judge(llm_cfg(tmp_path, None, api_key_env="OPENAI_TEST_NOPE"), tmp_path / "out")


def test_a_rejected_key_stops_the_run_instead_of_failing_every_question(tmp_path, capsys):
    with JudgeServer() as server:
        cfg = llm_cfg(tmp_path, server.url, max_concurrency=1)
        write_inputs(tmp_path, {"a": "Alpha 401x9 lvl=known", "b": "Bravo lvl=known"})
        with pytest.raises(FatalChatError, match="HTTP 401"):
            run_judge(cfg, tmp_path / "out")
        assert server.attempts["Alpha 401x9 lvl=known"] == 1  # not retried
        assert not (tmp_path / "out" / "judgments.jsonl").exists()
        yaml = tmp_path / "judge.yaml"
        yaml.write_text("".join(f"{k}: {v}\n" for k, v in to_dict(cfg).items() if v is not None))
        assert main(["judge", str(yaml), str(tmp_path / "out")]) == 2
    assert "eeca judge: stopped: " in capsys.readouterr().out


def test_without_structured_output_the_reply_is_parsed_strictly(tmp_path):
    with JudgeServer() as server:
        cfg = llm_cfg(tmp_path, server.url, structured="none")
        run_judge(cfg, tmp_path / "out")
        assert "response_format" not in server.bodies[0]
    assert parse_verdict('```json\n{"level": "Weakly Unknown", "explanation": "x"}\n```') == ("weakly_unknown", "x")
    for bad in ("", "Known", '{"level": "known"}', '{"verdict": "Known"}', '["Known"]', '{"level": "Partially Known"}'):
        with pytest.raises(ValueError):
            parse_verdict(bad)


# ---- the rule judge: App. C.2's windmill example in our words -----------------------------------

WINDMILLS = GroundTruth(name="Kinderdijk windmills", hierarchical_label="windmill", place="Kinderdijk, Netherlands",
                        entities=("drainage canals", "polder"), aliases=("Kinderdijk mills",))
GENERIC = "A traditional windmill with four sails under a cloudy sky."


@pytest.mark.parametrize("responses,level", [
    ([GENERIC,
      "These are the Kinderdijk windmills, a row of mills in the Netherlands built to drain the polder.",
      "The Kinderdijk windmills near Rotterdam pump water out of the polder through drainage canals.",
      "Dutch windmills, as found in many places.", GENERIC], "strongly_known"),
    (["This is the Kinderdijk windmills site, a World Heritage Site of old drainage mills.",
      "A windmill at Zaanse Schans.", "The Zaanse Schans mills by the river.",
      "Dutch windmills like those around Kinderdijk.", GENERIC], "known"),
    (["Traditional Dutch windmills near Kinderdijk.", "Mills in the Netherlands along canals.",
      "A windmill at Zaanse Schans.", GENERIC, GENERIC], "weakly_unknown"),
    (["This is the Weerschipmolen windmill.", "A windmill at Zaanse Schans.", "Huis op de Hoop, a mill.",
      GENERIC, "An old farmhouse."], "unknown"),
])
def test_rule_judge_levels_on_the_windmill_example(responses, level):
    assert rule_verdict(responses, WINDMILLS).level == level


def test_rule_judge_matching_details():
    named_once = ["the KINDERDIJK-MILLS of the polder"] + [GENERIC] * 4  # alias, case and punctuation
    assert rule_verdict(named_once, WINDMILLS).level == "known"
    assert rule_verdict([GENERIC] * 5, WINDMILLS).level == "unknown"
    assert rule_verdict([GENERIC] * 5, WINDMILLS, category_is_hint=True).level == "weakly_unknown"
    tower = GroundTruth(name="Orno Tower", place="Orno, Vasta")
    assert rule_verdict(["The Sorno Tower in Sornova."] * 5, tower).level == "unknown"  # whole words only
    assert rule_verdict(["The Orno Tower in Vasta."] * 2 + ["x"] * 3, tower, strong_min=3).level == "known"
    assert rule_verdict(["The Orno Tower in Vasta."] * 3 + ["x"] * 2, tower, strong_min=3).level == "strongly_known"


def test_rule_judge_cli_writes_judgments_and_metrics(tmp_path, run_eeca):
    names = {"a": "Orno Tower", "b": "Grey Bridge"}
    gens, test = write_inputs(tmp_path, names, {"a": ["The Orno Tower, twin spires."] * 5, "b": ["A lake."] * 5})
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(f"generations: {gens}\ntest_json: {test}\njudge: llm\n")
    result = run_eeca("judge", cfg, tmp_path / "out", "--judge", "rule")
    assert "accuracy 50.00%" in result.stdout
    rows = read_jsonl(tmp_path / "out" / "judgments.jsonl")
    assert [(r["id"], r["level"], r["status"]) for r in rows] == [("a", "strongly_known", "ok"), ("b", "unknown", "ok")]
    assert all(len(r["cache_key"]) == 64 and r["judge"].startswith("rule:") for r in rows)
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert (metrics["n"], metrics["accuracy"], metrics["count_strongly_known"]) == (2, 50.0, 1)
    run_eeca("metrics", tmp_path / "out" / "judgments.jsonl", "--other", tmp_path / "out" / "judgments.jsonl")
    assert read_json(tmp_path / "out" / "agreement.json")["agreement"]["kappa"] == 1.0


# ---- metrics --------------------------------------------------------------------------------------

def _rows(levels):
    return [{"id": str(i), "level": lv, "status": "failed" if lv is None else "ok"} for i, lv in enumerate(levels)]


def test_metrics_hand_case_excludes_failed_from_the_denominator():
    m = compute_metrics(_rows(["strongly_known"] * 2 + ["known"] * 3 + ["weakly_unknown"] + ["unknown"] * 2 + [None] * 2))
    assert (m["n"], m["n_failed"]) == (8, 2)
    assert (m["strongly_known"], m["known"], m["weakly_unknown"], m["unknown"]) == (25.0, 37.5, 12.5, 25.0)
    assert m["accuracy"] == 62.5 and m["count_known"] == 3
    assert m["acc_ci_low"] < 62.5 < m["acc_ci_high"]
    with pytest.raises(ValueError, match="status ok but level"):
        compute_metrics([{"id": "x", "level": "partially_known", "status": "ok"}])


def test_bootstrap_interval_matches_naive_resampling():
    rng = np.random.default_rng(1)
    levels = list(rng.choice(LEVELS, size=300, p=[0.1, 0.2, 0.2, 0.5]))
    m = compute_metrics(_rows(levels), bootstrap_samples=4000, seed=3)
    hit = np.isin(levels, ["strongly_known", "known"])
    naive = [hit[rng.integers(0, len(hit), len(hit))].mean() * 100 for _ in range(4000)]
    low, high = np.percentile(naive, [2.5, 97.5])
    assert abs(m["acc_ci_low"] - low) < 1.0 and abs(m["acc_ci_high"] - high) < 1.0
    assert compute_metrics(_rows(levels), bootstrap_samples=4000, seed=3) == m


def test_kappa_and_confusion_match_sklearn():
    rng = np.random.default_rng(0)
    a = list(rng.choice(LEVELS, size=200))
    b = [x if rng.random() < 0.6 else rng.choice(LEVELS) for x in a]
    rows_a, rows_b = _rows(a), _rows(b)
    rows_b[5] = {"id": "5", "level": None, "status": "failed"}  # judged by one judge only: left out
    got = agreement(rows_a, rows_b)
    keep = [i for i in range(200) if i != 5]
    ref_a, ref_b = [a[i] for i in keep], [b[i] for i in keep]
    assert got["n"] == 199
    assert got["kappa"] == pytest.approx(cohen_kappa_score(ref_a, ref_b), abs=1e-12)
    assert got["confusion"] == confusion_matrix(ref_a, ref_b, labels=list(LEVELS)).tolist()
