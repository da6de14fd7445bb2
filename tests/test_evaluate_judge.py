"""eeca judge: the LLM judge against a faulty local server, the rule judge on hand cases, metrics."""

import hashlib
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
    derange_truths,
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
        cfg = llm_cfg(tmp_path, server.url, response_format="none")
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
    # the category is at most one attribute, never a hint on its own
    assert rule_verdict([GENERIC] * 5, WINDMILLS, category_is_hint=True).level == "unknown"
    assert rule_verdict(["A windmill by a polder."] + [GENERIC] * 4, WINDMILLS).level == "unknown"
    assert rule_verdict(["A windmill by a polder."] + [GENERIC] * 4, WINDMILLS, category_is_hint=True).level == "weakly_unknown"
    tower = GroundTruth(name="Orno Tower", place="Orno, Vasta")
    assert rule_verdict(["The Sorno Tower in Sornova."] * 5, tower).level == "unknown"  # whole words only
    assert rule_verdict(["The Orno Tower in Vasta."] * 2 + ["x"] * 3, tower, strong_min=3).level == "known"
    assert rule_verdict(["The Orno Tower in Vasta."] * 3 + ["x"] * 2, tower, strong_min=3).level == "strongly_known"


KARVEL = GroundTruth(name="Karvel Tower", hierarchical_label="tower", place="Brelun, Veldoria",
                     entities=("red brick facade", "twin spires", "blue roof"))
FILLER = "A tall building under a grey sky."


@pytest.mark.parametrize("responses,level", [
    (["A tower in Veldoria."] + [FILLER] * 4, "unknown"),  # the country alone: 1 - (11/12)^5 = 35% by chance
    (["A tower in Veldoria."] * 5, "unknown"),  # however often
    (["A tower in Veldoria with a blue roof."] + [FILLER] * 4, "weakly_unknown"),  # (ii) country + entity, one answer
    (["A tower in Veldoria."] + ["It has a blue roof."] + [FILLER] * 3, "unknown"),  # the same, split over two answers
    (["It has a blue roof and twin spires."] + [FILLER] * 4, "weakly_unknown"),  # (iii) two distinct entities
    (["It has a blue roof."] + ["It has twin spires."] + [FILLER] * 3, "unknown"),  # split over two answers
    (["It has a blue roof."] * 5, "unknown"),  # one entity, however often
    (["It has twin spires, the spires are twin spires."] + [FILLER] * 4, "unknown"),  # one entity named twice
    (["The old tower of Brelun."] + [FILLER] * 4, "weakly_unknown"),  # (i) the town alone
    (["Ein Turm in Brelun-Süd."] + [FILLER] * 4, "weakly_unknown"),  # the town, as a whole word
    (["A tower, Karvel Tower."] + [FILLER] * 4, "known"),
    (["Karvel Tower in Brelun."] * 2 + [FILLER] * 3, "strongly_known"),
    (["Karvel Tower, red brick facade."] + ["Karvel Tower, Veldoria."] + [FILLER] * 3, "strongly_known"),
])
def test_rule_judge_weakly_unknown_needs_more_than_a_chance_hint(responses, level):
    assert rule_verdict(responses, KARVEL).level == level


@pytest.mark.parametrize("name, answer", [
    ("清水寺", "これは京都の清水寺です。"),  # no spaces between words in Japanese: the name is found inside
    ("Киево-Печерская лавра", "Это Киево-Печерская Лавра в Киеве."),  # Cyrillic, other case
    ("المسجد الأقصى", "هذا هو المسجد الأقصى في القدس"),
    ("Sagrada Família", "The SAGRADA FAMILIA in Barcelona."),  # accents on Latin letters still optional
    ("Straße des 17. Juni", "die strasse des 17 juni"),  # casefold: ß = ss
    ("Tower ＡＢ", "the tower ab"),  # NFKC: full-width letters
])
def test_rule_judge_recognises_names_in_any_script(name, answer):
    truth = GroundTruth(name=name, place="X, Y")
    assert rule_verdict([answer] + [FILLER] * 4, truth).level == "known"
    assert rule_verdict([FILLER] * 5, truth).level == "unknown"


def test_rule_judge_keeps_different_non_latin_names_apart():
    # kana with and without voicing marks are different words; an empty-after-folding name matches nothing
    assert rule_verdict(["かき"] * 5, GroundTruth(name="がき", place="X, Y")).level == "unknown"
    assert rule_verdict(["!!!"] * 5, GroundTruth(name="!!!", place="X, Y")).level == "unknown"


def test_rule_judge_place_with_one_part_counts_as_a_country():
    lone = GroundTruth(name="Karvel Tower", place="Veldoria", entities=("blue roof",))
    assert rule_verdict(["Somewhere in Veldoria."] * 5, lone).level == "unknown"
    assert rule_verdict(["Somewhere in Veldoria, blue roof."] + [FILLER] * 4, lone).level == "weakly_unknown"


def test_rule_judge_cli_writes_judgments_and_metrics(tmp_path, run_eeca):
    names = {"a": "Orno Tower", "b": "Grey Bridge"}
    gens, test = write_inputs(tmp_path, names, {"a": ["The Orno Tower, twin spires."] * 5, "b": ["A lake."] * 5})
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(f"generations: {gens}\ntest_json: {test}\njudge: llm\n")
    result = run_eeca("judge", cfg, tmp_path / "out", "--judge", "rule")
    assert "accuracy 50.00%" in result.stdout
    rows = read_jsonl(tmp_path / "out" / "judgments.jsonl")
    assert [(r["id"], r["level"], r["status"]) for r in rows] == [("a", "strongly_known", "ok"), ("b", "unknown", "ok")]
    assert all(len(r["cache_key"]) == 64 and r["judge"].startswith("rule:v3:") for r in rows)
    summary = read_json(tmp_path / "out" / "judge_summary.json")
    assert summary["generations_sha256"] == hashlib.sha256(gens.read_bytes()).hexdigest()
    assert summary["shuffle_truth"] is False and summary["shuffle_seed"] is None
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert (metrics["n"], metrics["accuracy"], metrics["count_strongly_known"]) == (2, 50.0, 1)
    run_eeca("metrics", tmp_path / "out" / "judgments.jsonl", "--other", tmp_path / "out" / "judgments.jsonl")
    assert read_json(tmp_path / "out" / "agreement.json")["agreement"]["kappa"] == 1.0


def test_judge_command_prints_without_an_interval_when_nothing_was_judged(tmp_path, run_eeca):
    gens, test = write_inputs(tmp_path, {"a": "Orno Tower"})
    gens.write_text("")
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(f"generations: {gens}\ntest_json: {test}\njudge: rule\n")
    result = run_eeca("judge", cfg, tmp_path / "out")
    assert "0 judged" in result.stdout and "accuracy not measurable (n = 0" in result.stdout
    assert read_json(tmp_path / "out" / "metrics.json")["accuracy"] is None


# ---- the judge chance control: a shuffled truth ---------------------------------------------------

def _world(tmp_path, n_landmarks=6, per_landmark=2):
    """Questions whose five answers name their own landmark perfectly, two questions per landmark."""
    test, gens = [], []
    for lm in range(n_landmarks):
        name, town = f"Tower{'abcdefghij'[lm]}x Spire", f"Town{'abcdefghij'[lm]}x"
        for q in range(per_landmark):
            rid = f"q{lm}-{q}"
            test.append({"id": rid, "image": f"{rid}.jpg", "landmark_id": 100 + lm, "landmark_name": name,
                         "hierarchical_label": "tower", "entities": [f"feature{'abcdefghij'[lm]}x"],
                         "conversations": []})
            gens.append({"id": rid, "responses": [f"This is {name} in {town}, with its feature{'abcdefghij'[lm]}x."] * 5})
    (tmp_path / "test.json").write_text(json.dumps(test))
    (tmp_path / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gens))
    return {"generations": str(tmp_path / "generations.jsonl"), "test_json": str(tmp_path / "test.json"),
            "judge": "rule", "bootstrap_samples": 100}


def test_shuffled_truth_credits_nothing_to_answers_that_only_name_their_own_landmark(tmp_path):
    base = _world(tmp_path)
    real = run_judge(from_dict(JudgeConfig, base), tmp_path / "real")
    assert real["metrics"]["accuracy"] == 100.0 and real["summary"]["shuffle_truth"] is False
    shuffled = run_judge(from_dict(JudgeConfig, {**base, "shuffle_truth": True, "shuffle_seed": 7}), tmp_path / "shuf")
    assert shuffled["metrics"]["accuracy"] == 0.0 and shuffled["metrics"]["unknown"] == 100.0
    s = shuffled["summary"]
    assert s["shuffle_truth"] is True and s["shuffle_seed"] == 7 and s["judge"].endswith("+shuffled:7")
    assert s["judge"].startswith("rule:v3:") and s["generations_sha256"] == real["summary"]["generations_sha256"]
    rows = read_jsonl(tmp_path / "shuf" / "judgments.jsonl")
    real_rows = {r["id"]: r for r in read_jsonl(tmp_path / "real" / "judgments.jsonl")}
    assert all(r["truth_id"].split("-")[0] != r["id"].split("-")[0] for r in rows)  # another landmark
    assert sorted(r["truth_id"] for r in rows) == sorted(r["id"] for r in rows)  # a permutation
    assert all(r["cache_key"] != real_rows[r["id"]]["cache_key"] for r in rows)
    assert "truth_id" not in next(iter(real_rows.values()))
    again = run_judge(from_dict(JudgeConfig, {**base, "shuffle_truth": True, "shuffle_seed": 7}), tmp_path / "again")
    assert read_jsonl(tmp_path / "again" / "judgments.jsonl") == rows and again["metrics"] == shuffled["metrics"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_derangement_gives_every_question_another_landmark(seed):
    rng = np.random.default_rng(seed)
    landmarks = {f"id{i:02d}": int(rng.integers(0, 12)) for i in range(50)}  # repeated landmarks
    got = derange_truths(landmarks, seed)
    assert sorted(got) == sorted(landmarks) and sorted(got.values()) == sorted(landmarks)
    assert all(landmarks[donor] != landmarks[rid] for rid, donor in got.items())
    assert derange_truths(landmarks, seed) == got  # same seed, same assignment
    assert derange_truths(dict(reversed(list(landmarks.items()))), seed) == got  # not the order of the ids
    assert derange_truths(landmarks, seed + 100) != got


def test_derangement_where_only_the_constructed_fallback_works():
    # half the questions show one landmark: a random permutation almost never fits, the rotation always does
    landmarks = {f"a{i}": "big" for i in range(25)} | {f"b{i}": f"small{i % 5}" for i in range(25)}
    for seed in range(5):
        got = derange_truths(landmarks, seed)
        assert sorted(got.values()) == sorted(landmarks)
        assert all(landmarks[d] != landmarks[r] for r, d in got.items())
    assert derange_truths({}, 0) == {}


def test_derangement_refuses_when_impossible(tmp_path):
    with pytest.raises(ValueError, match="at least two"):
        derange_truths({"a": 1, "b": 1, "c": 1}, 0)
    with pytest.raises(ValueError, match="more than half"):
        derange_truths({"a": 1, "b": 1, "c": 2}, 0)
    base = _world(tmp_path, n_landmarks=1)
    with pytest.raises(ValueError, match="at least two"):
        run_judge(from_dict(JudgeConfig, {**base, "shuffle_truth": True}), tmp_path / "out")


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


def test_dry_run_estimates_the_cost_and_sends_nothing_and_limit_judges_the_first_questions(tmp_path, capsys):
    from eeca.evaluate.judge import (
        CHARS_PER_TOKEN,
        estimate_cost,
        judge_messages,
        load_ground_truth,
        load_prompt,
    )

    with JudgeServer() as server:
        cfg = llm_cfg(tmp_path, server.url, max_tokens=300, price_input_per_1m=2.5, price_output_per_1m=10.0)
        yaml = tmp_path / "judge.yaml"
        yaml.write_text("".join(f"{k}: {v}\n" for k, v in to_dict(cfg).items() if v is not None))
        assert main(["judge", str(yaml), str(tmp_path / "dry"), "--dry-run"]) == 0
        assert sum(server.attempts.values()) == 0 and not (tmp_path / "dry").exists()
        # by hand: every filled prompt's characters / 4, and 8 questions x 300 output tokens at most
        system, template, _ = load_prompt("judge_v1")
        truth = load_ground_truth(tmp_path / "test.json", None)
        chars = sum(len(m["content"]) for g in read_jsonl(tmp_path / "generations.jsonl")
                    for m in judge_messages(system, template, g["responses"], truth[g["id"]]))
        e = estimate_cost(cfg)
        assert e == {"requests": 8, "input_tokens": round(chars / CHARS_PER_TOKEN), "max_output_tokens": 2400,
                     "max_cost_usd": round((round(chars / 4) * 2.5 + 2400 * 10.0) / 1e6, 2)}
        assert f"judge dry run: 8 requests to judge-model; ~{e['input_tokens']} input tokens" in capsys.readouterr().out
        write_inputs(tmp_path, {"a": "Alpha lvl=known", "b": "Bravo lvl=unknown", "h": "Hotel lvl=unknown"})
        assert main(["judge", str(yaml), str(tmp_path / "trial"), "--limit", "2"]) == 0
        assert sorted(server.attempts) == ["Alpha lvl=known", "Bravo lvl=unknown"]  # Hotel, the third, not asked
        assert read_json(tmp_path / "trial" / "metrics.json")["n"] == 2
