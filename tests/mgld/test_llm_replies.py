"""Every reply of an OpenAI-compatible server, however broken or hostile, through the one client
(eeca.llm_client) used by the judge and the MGLD annotators: a counted failure that a rerun retries,
and never the API key in a file or on the terminal."""

import copy
import json

from mgld_world import make_world, write_config

from eeca.cli import main
from eeca.config import to_dict
from fake_openai import MODES, JudgeServer

BROKEN = [m for m in MODES if not m.startswith("echo") and m != "badusage"]
SECRET = "sk-live-abcdef0123456789XYZ"


def _judge_yaml(tmp_path, server, names: dict[str, str], folder: str) -> tuple:
    from test_evaluate_judge import llm_cfg, write_inputs

    root = tmp_path / folder
    root.mkdir()
    cfg = llm_cfg(root, server.url, max_retries=1, cache=None)
    write_inputs(root, names)
    path = root / "judge.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in to_dict(cfg).items() if v is not None))
    return path, root / "out"


def _annotator_yaml(tmp_path, server, key_env="EECA_TEST_OPENAI_KEY"):
    w = make_world(tmp_path, n=len(BROKEN) + 1)
    cfg = copy.deepcopy(w["config"])
    cfg["annotator"] = {"backend": "openai", "model": server.model, "base_url": server.url,
                        "api_key_env": key_env, "max_concurrency": 2, "timeout_s": 2, "max_retries": 1,
                        "backoff_base_s": 0.01, "backoff_max_s": 0.02, "max_reask": 0}
    return w, write_config(tmp_path / "mgld.yaml", cfg)


def test_any_malformed_reply_is_a_counted_failure_that_a_rerun_retries(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EECA_TEST_JUDGE_KEY", raising=False)
    # the judge: one question per broken reply, one healthy question
    names = {f"q{i}": f"Name{i} bad={mode} lvl=known" for i, mode in enumerate(BROKEN)} | {"ok": "Okay lvl=unknown"}
    with JudgeServer() as server:
        cfg, out = _judge_yaml(tmp_path, server, names, "judge")
        assert main(["judge", str(cfg), str(out)]) == 1  # finished, with failures to retry
        rows = {r["id"]: r for r in map(json.loads, (out / "judgments.jsonl").read_text().splitlines())}
        assert {i for i, r in rows.items() if r["status"] == "failed"} == {f"q{i}" for i in range(len(BROKEN))}
        assert all(rows[f"q{i}"]["explanation"].startswith("request failed: unreadable reply") for i in range(len(BROKEN)))
        assert rows["ok"]["level"] == "unknown"
        server.healthy = True
        before = server.completions
        assert main(["judge", str(cfg), str(out)]) == 0
        assert server.completions - before == len(BROKEN)  # only the failed ones are asked again
        # every reply broken: the run ends, and no accuracy is made up for zero verdicts
        server.healthy = False
        cfg, out = _judge_yaml(tmp_path, server, {k: v for k, v in names.items() if k != "ok"}, "all-bad")
        capsys.readouterr()
        assert main(["judge", str(cfg), str(out)]) == 1
        assert "0 judged" in capsys.readouterr().out
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["n"] == 0 and metrics["accuracy"] is None and metrics["acc_ci_low"] is None
        assert main(["metrics", str(out / "judgments.jsonl")]) == 0
        assert "not measurable (n = 0" in capsys.readouterr().out

    # the MGLD annotators: the same replies are failures listed with their reason, retried on rerun
    from mgld_world import AnnotatorServer

    with AnnotatorServer() as server:
        w, cfg_path = _annotator_yaml(tmp_path, server)
        for lm, mode in zip(w["landmarks"], BROKEN, strict=False):
            server.script[lm["name"]] += [f"bad={mode}"]
        assert main(["mgld", "stage2", str(cfg_path)]) == 0
        first = capsys.readouterr().out
        failures = [json.loads(x) for x in (tmp_path / "out" / "stage2_failures.jsonl").read_text().splitlines()]
        assert len(failures) == len(BROKEN) and all("unreadable reply" in f["reason"] for f in failures)
        assert f"{len(BROKEN)} failed" in first
        assert main(["mgld", "stage2", str(cfg_path)]) == 0
        assert f"({len(BROKEN)} new, 1 resumed" in capsys.readouterr().out


def test_the_api_key_reaches_no_file_and_no_terminal_even_when_the_server_echoes_it(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("EECA_TEST_JUDGE_KEY", SECRET)
    monkeypatch.setenv("EECA_TEST_OPENAI_KEY", SECRET)
    echo = [m for m in MODES if m.startswith("echo")]
    with JudgeServer() as server:
        cfg, out = _judge_yaml(tmp_path, server, {m: f"N {m} bad={m}" for m in echo}, "judge")
        main(["judge", str(cfg), str(out)])
        assert f"Bearer {SECRET}" in server.auth
        # a 401 that echoes the header stops the run with the server's message, redacted
        cfg401, out401 = _judge_yaml(tmp_path, server, {"x": "X 401x9"}, "judge401")
        server.reply = lambda body, auth: (401, f"invalid key {auth}")
        assert main(["judge", str(cfg401), str(out401)]) == 2
    from mgld_world import AnnotatorServer

    with AnnotatorServer() as server:
        w, cfg_path = _annotator_yaml(tmp_path, server)
        for lm, mode in zip(w["landmarks"], echo, strict=False):
            server.script[lm["name"]] += [f"bad={mode}"] * 2
        main(["mgld", "stage2", str(cfg_path)])
        main(["mgld", "stage3", str(cfg_path)])
    printed = capfd.readouterr()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in written if SECRET[3:].encode() in p.read_bytes()]
    assert SECRET[3:] not in printed.out + printed.err
    judged = (out / "judgments.jsonl").read_text()
    assert judged.count("[redacted]") >= len(echo) - 1  # the echo is kept, the key is not
