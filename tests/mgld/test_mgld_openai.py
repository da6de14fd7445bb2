"""The openai annotator against a fake OpenAI-compatible server on 127.0.0.1 that fails on purpose."""

import copy
import json

import pytest
from mgld_world import make_world, write_config

from eeca.cli import main
from eeca.config import from_dict
from eeca.llm_client import FatalChatError
from eeca.mgld.annotators import AnnotatorConfig, OpenAIAnnotator, Request
from eeca.mgld.stages import MgldConfig, run_stage2
from eeca.mgld.tasks import load_task
from eeca.mgld.validate import validate_records

SECRET = "sk-test-DO-NOT-LEAK-4f9a1c"


def _openai_config(w, server, out):
    cfg = copy.deepcopy(w["config"])
    cfg["out"] = str(out)
    cfg["annotator"] = {"backend": "openai", "model": server.model, "base_url": server.url + "/",
                        "api_key_env": "EECA_TEST_OPENAI_KEY", "max_concurrency": 4, "timeout_s": 0.4,
                        "max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_reask": 1,
                        "price_input_per_1m": 2.5, "price_output_per_1m": 10.0}
    return cfg


def _failures(path):
    return {json.loads(x)["id"]: json.loads(x)["reason"] for x in path.read_text().splitlines()}


def test_faults_end_annotated_or_listed_rerun_retries_only_failed_cache_sends_nothing(
        tmp_path, fake_openai, monkeypatch, capsys):
    monkeypatch.setenv("EECA_TEST_OPENAI_KEY", SECRET)
    w = make_world(tmp_path, n=12)
    names = [lm["name"] for lm in w["landmarks"]]
    ids = [r["id"] for r in w["rows"]]
    s = fake_openai.script
    s[names[0]] += ["429", "429"]          # rate limited twice, then fine
    s[names[1]] += ["500"]                 # one server error
    s[names[2]] += ["timeout"]             # one timeout
    s[names[3]] += ["garbage"]             # not JSON: re-asked
    s[names[4]] += ["schema"]              # JSON breaking the schema: re-asked
    s[names[5]] += ["500"] * 3             # retries exhausted -> failed
    s[names[6]] += ["garbage", "schema"]   # re-asks exhausted -> failed
    s[names[7]] += ["timeout"] * 3         # times out every try -> failed
    s[names[8]] += ["429", "garbage"]      # a retry, then a re-ask
    cfg_path = write_config(tmp_path / "mgld.yaml", _openai_config(w, fake_openai, tmp_path / "out"))

    assert main(["mgld", "stage2", str(cfg_path)]) == 0
    first = capsys.readouterr()
    out = tmp_path / "out"
    failed = _failures(out / "stage2_failures.jsonl")
    assert set(failed) == {ids[5], ids[6], ids[7]}
    assert failed[ids[5]] == "HTTP 500: internal error (gave up after 3 attempts)"
    assert failed[ids[6]].startswith("no valid reply after 2 tries; last: schema: answer: expected string")
    assert failed[ids[7]] == "request timed out (gave up after 3 attempts)"
    recs = {json.loads(x)["id"]: json.loads(x) for x in (out / "stage2.jsonl").read_text().splitlines()}
    assert all(recs[i]["status"] == "ok" and names[k] in recs[i]["answer"]
               for k, i in enumerate(ids) if i not in failed)
    assert [recs[ids[k]]["attempts"] for k in (0, 1, 2, 3, 4, 8, 9)] == [1, 1, 1, 2, 2, 2, 1]
    # per sample: first tries + retries + re-asks, exactly as scripted
    assert [fake_openai.per_name[n] for n in names[:9]] == [3, 2, 2, 2, 2, 3, 2, 3, 3]
    summary = json.loads((out / "stage2_summary.json").read_text())
    assert summary["usage"]["retries"] == 2 + 1 + 1 + 2 + 2 + 1 and summary["usage"]["reasks"] == 1 + 1 + 1 + 1
    chat_ok = fake_openai.completions - (2 + 1 + 1 + 3 + 3 + 1)  # requests that got a 200 with usage
    assert summary["usage"]["prompt_tokens"] == 100 * chat_ok
    assert summary["usage"]["cost_usd"] == pytest.approx(chat_ok * (100 * 2.5 + 10 * 10.0) / 1e6)
    assert "9/12 ok" in first.out and "3 failed (listed in" in first.out
    assert fake_openai.requests["/v1/models"] == 1  # one health check
    assert set(fake_openai.images) == {"data:image/jpeg;base64"}

    # healthy server: the rerun sends exactly the three failed samples
    before = fake_openai.completions
    assert main(["mgld", "stage2", str(cfg_path)]) == 0
    rerun = capsys.readouterr()
    assert fake_openai.completions - before == 3 and "12/12 ok (3 new, 9 resumed" in rerun.out
    assert (out / "stage2_failures.jsonl").read_text() == ""
    assert main(["mgld", "stage3", str(cfg_path)]) == 0
    stage3 = capsys.readouterr()
    train, test = (json.loads((out / f).read_text()) for f in ("train.json", "test.json"))
    assert len(train) + len(test) == 12 and validate_records(train + test) == []
    assert train[0]["hierarchical_label"] == "tower" and len(train[0]["entities"]) == 2  # cleaned reply

    # a second full run into a fresh folder sharing the cache sends zero requests
    counts = dict(fake_openai.requests)
    cfg2 = _openai_config(w, fake_openai, tmp_path / "out2")
    cfg2["annotator"]["cache"] = str(out / "cache.jsonl")
    cfg2_path = write_config(tmp_path / "mgld2.yaml", cfg2)
    assert main(["mgld", "stage2", str(cfg2_path)]) == 0
    assert main(["mgld", "stage3", str(cfg2_path)]) == 0
    cached = capsys.readouterr()
    assert dict(fake_openai.requests) == counts
    assert "12/12 ok (12 new, 0 resumed, 12 from cache)" in cached.out
    for name in ("train.json", "test.json", "llava_train.json", "split.parquet"):
        assert (tmp_path / "out2" / name).read_bytes() == (out / name).read_bytes()

    # the key reached the server, and nothing the runs wrote or printed contains it
    assert f"Bearer {SECRET}" in fake_openai.auth
    logs = "".join(x.out + x.err for x in (first, rerun, stage3, cached))
    assert SECRET not in logs
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 20 and not [p for p in written if SECRET.encode() in p.read_bytes()]


def _annotator(server, **over):
    cfg = AnnotatorConfig(backend="openai", model=over.pop("model", server.model), base_url=server.url,
                          timeout_s=2, max_retries=0, **over)
    return OpenAIAnnotator(cfg, None)


def test_health_check_and_fatal_errors_stop_the_run(tmp_path, fake_openai):
    w = make_world(tmp_path, n=2)
    cfg = from_dict(MgldConfig, _openai_config(w, fake_openai, tmp_path / "out"),
                    overrides=["annotator.model=not-served"])
    with pytest.raises(FatalChatError, match=r"does not serve model 'not-served'; it serves: fake-vlm"):
        run_stage2(cfg)
    # without the health check the server's 404 for the model is fatal too (not a per-sample failure)
    task = load_task("stage2")
    img = tmp_path / "world" / "train"
    image = next(img.rglob("*.jpg"))
    req = Request("a" * 16, image, task.prompt(landmark_name="X", question="Where?"), {})
    ann = _annotator(fake_openai, model="gone", health_check=False)
    with pytest.raises(FatalChatError, match="HTTP 404"):
        list(ann.annotate(task, [req]))
    # an unreachable server: the health check says so
    ann = OpenAIAnnotator(AnnotatorConfig(backend="openai", base_url="http://127.0.0.1:9", timeout_s=1,
                                          max_retries=0), None)
    with pytest.raises(FatalChatError, match=r"http://127.0.0.1:9/v1/models: health check failed: connection error"):
        list(ann.annotate(task, [req]))


def test_verb_reports_fatal_stop_with_status_2(tmp_path, fake_openai, capsys):
    w = make_world(tmp_path, n=2)
    cfg_path = write_config(tmp_path / "m.yaml", _openai_config(w, fake_openai, tmp_path / "out"))
    assert main(["mgld", "stage2", str(cfg_path), "--overrides", "annotator.model=nope"]) == 2
    assert "stopped: " in capsys.readouterr().out
    fake_openai.script[w["landmarks"][0]["name"]] += ["500"] * 3
    assert main(["mgld", "stage2", str(cfg_path), "--strict"]) == 1
