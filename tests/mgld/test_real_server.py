"""The LLM judge and the MGLD annotator against a real OpenAI-compatible server: `transformers serve`
(transformers' own FastAPI + uvicorn server) on CPU, serving a tiny Llama built and trained here with the
synthetic world's stand-in recipe (its BPE tokenizer, Llama-3 chat template and model builder,
:mod:`eeca.synth.models`) to answer this test's judge and stage-2 prompts: verdicts and annotations for
most, garbage for one of each. Checked: the replies parse into exactly what the model emitted, usage
counts match the tokens of the rendered prompts, a garbage reply is a counted failure with its reason
(never a guessed level, never cached), a hung server's timeouts and a restarted server's refused
connections are counted retries ending in a counted failure or a success, and reruns resume from the
cache. Slow: it trains a model (100 steps, 1.5 minutes on one thread of a busy 2-core machine) and
starts the server twice."""

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from mgld_world import make_world, write_config

from eeca.cli import main
from eeca.config import from_dict
from eeca.evaluate.judge import JudgeConfig, judge_messages, load_ground_truth, load_prompt, run_judge
from eeca.llm_client import FatalChatError
from eeca.mgld.annotators import REASK
from eeca.mgld.questions import load_questions, pick_question
from eeca.mgld.stages import MgldConfig, load_samples
from eeca.mgld.tasks import load_task
from eeca.synth.config import LlmTrainConfig
from eeca.synth.models import build_llm, encode_conversations, pad_batch, train_bpe, wrap_tokenizer
from train_helpers import write_llava_json

SERVE = Path(os.environ.get("EECA_SERVE_BIN", "/work/venvs/lmms/bin/transformers"))

# the judge: three questions the model rates, one it answers with garbage
JUDGED = {"s0": (["the red tower of northvale, twin spires", "tower 0 in northvale"],
                 '{"level": "Strongly Known", "explanation": "Named with detail twice."}'),
          "s1": (["tower 1, I believe"], '{"level": "Known", "explanation": "Named once."}'),
          "s2": (["a windmill in a polder", "no idea"], '{"level": "Unknown", "explanation": "Never named."}'),
          "s3": (["purple elephant seventeen"], "I would say it is rather known.")}
LEVELS = {"s0": "strongly_known", "s1": "known", "s2": "unknown"}
GARBAGE = "Sure! A lovely lake, answer: yes"  # the stage-2 reply to the last landmark, asked or re-asked


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`transformers serve MODEL` on 127.0.0.1:port, CPU, one thread; start/stop/pause/resume."""

    def __init__(self, model: Path, log: Path):
        self.model, self.log, self.port, self.proc = model, log, _free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([str(SERVE), "serve", str(self.model), "--host", "127.0.0.1",
                                          "--port", str(self.port), "--device", "cpu"],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, limit_s: float = 600) -> None:
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            try:
                urllib.request.urlopen(f"{self.url}/v1/models", timeout=5)
                return
            except OSError:
                if self.proc.poll() is not None:
                    pytest.fail(self.log.read_text()[-3000:])
                time.sleep(0.5)
        pytest.fail(f"server did not answer within {limit_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self.proc.terminate()
            self.proc.wait(timeout=60)

    def pause(self, paused: bool) -> None:  # SIGSTOP: connections are accepted, nothing is answered
        self.proc.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)


def _chat(prompt_messages: list[dict], reply: str) -> list[dict]:
    return [*prompt_messages, {"role": "assistant", "content": reply}]


def _train(convs: list[list[dict]], folder: Path, max_steps: int = 400):
    """The stand-in recipe at test size: BPE on the texts, Llama-3 template, loss on assistant tokens;
    trained until greedy decoding gives every reply (checked every 20 steps once the loss is low)."""
    tok = wrap_tokenizer(train_bpe(iter([m["content"] for c in convs for m in c]), 2000), "llm", 1024)
    torch.manual_seed(0)
    model = build_llm(LlmTrainConfig(hidden_size=64, layers=2, heads=4, intermediate_size=128, max_length=1024), tok)
    batch = pad_batch(encode_conversations(tok, convs, 1024), tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    learnt = 0
    for step in range(1, max_steps + 1):
        model.train()
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0 and loss.item() < 0.05:
            model.eval()
            learnt = sum(_greedy(tok, model, c[:-1]) == c[-1]["content"] for c in convs)
            if learnt == len(convs):
                break
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return tok, f"{step} steps, last loss {loss.item():.4f}, replies learnt {learnt}/{len(convs)}", learnt == len(convs)


def _greedy(tok, model, messages: list[dict]) -> str:
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=60, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if not SERVE.exists():
        pytest.skip(f"no `transformers serve` at {SERVE} (set EECA_SERVE_BIN to a venv's `transformers` "
                    "binary with transformers[serving] installed: fastapi, uvicorn)")
    root = tmp_path_factory.mktemp("real-server")
    # the judge's questions and the k answers to rate
    test_json = write_llava_json(root / "mgld", n=len(JUDGED))
    gens = root / "generations.jsonl"
    gens.write_text("".join(json.dumps({"id": i, "responses": r}) + "\n" for i, (r, _) in JUDGED.items()))
    truths = load_ground_truth(test_json, None)
    system, user, _ = load_prompt("judge_v1")
    judge_prompts = {i: judge_messages(system, user, r, truths[i]) for i, (r, _) in JUDGED.items()}
    # stage 2 of four landmarks: the prompts eeca mgld stage2 sends (the server keeps their text only)
    world = make_world(root / "world", n=4)
    mgld = from_dict(MgldConfig, world["config"])
    task, questions = load_task("stage2"), load_questions(None)
    samples = load_samples(mgld)
    stage2_prompts = {s.id: task.prompt(landmark_name=s.facts["name"], question=pick_question(questions, mgld.seed, s.id))
                      for s in samples}
    answers = {s.id: json.dumps({"answer": f"This is {s.facts['name']}, a {s.facts['hierarchical_label'] or 'place'}."})
               for s in samples[:-1]}
    garbage_id = samples[-1].id
    first = [{"role": "user", "content": stage2_prompts[garbage_id]}]
    reask = [*_chat(first, GARBAGE), {"role": "user", "content": REASK.format(reason=task.parse(GARBAGE)[1])}]
    convs = [_chat(judge_prompts[i], reply) for i, (_, reply) in JUDGED.items()]
    convs += [_chat([{"role": "user", "content": stage2_prompts[i]}], a) for i, a in answers.items()]
    convs += [_chat(first, GARBAGE), _chat(reask, GARBAGE)]
    t0 = time.perf_counter()
    tok, how, learnt = _train(convs, root / "llm")
    print(f"trained in {time.perf_counter() - t0:.0f} s: {how}")
    assert learnt, f"the tiny Llama did not learn its replies ({how}); raise max_steps"

    def prompt_tokens(messages):  # what the server bills for a prompt: its tokens through the chat template
        return len(tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])

    def reply_tokens(text):  # the reply's tokens and the end-of-turn token that stops it
        return len(tok(text, add_special_tokens=False)["input_ids"]) + 1

    server = Server(root / "llm", root / "serve.log")
    server.start()
    try:
        server.wait_ready()
        yield {"root": root, "server": server, "model": str(root / "llm"), "test_json": test_json, "gens": gens,
               "judge_prompts": judge_prompts, "world": world, "stage2_prompts": stage2_prompts, "answers": answers,
               "garbage_id": garbage_id, "first": first, "reask": reask, "prompt_tokens": prompt_tokens,
               "reply_tokens": reply_tokens}
    finally:
        server.stop()


def _judge(s, out: Path, **over) -> dict:
    settings = {"response_format": "json_schema", "max_tokens": 64, "max_concurrency": 2, "max_retries": 1,
                "timeout_s": 120, "bootstrap_samples": 10, **over}
    cfg = JudgeConfig(generations=s["gens"], test_json=s["test_json"], judge="llm", model=s["model"],
                      base_url=s["server"].url, **settings)
    return run_judge(cfg, out)


def _rows(path: Path) -> dict:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_judge_verdicts_parse_into_the_emitted_levels_garbage_is_a_counted_failure_and_reruns_use_the_cache(served):
    s = served
    out = s["root"] / "judge"
    result = _judge(s, out)
    print(json.dumps(result["summary"], indent=1))
    rows = _rows(out / "judgments.jsonl")
    assert {i: r["level"] for i, r in rows.items()} == {**LEVELS, "s3": None}
    assert {i: r["status"] for i, r in rows.items()} == {"s0": "ok", "s1": "ok", "s2": "ok", "s3": "failed"}
    assert rows["s0"]["explanation"] == "Named with detail twice."
    assert rows["s3"]["explanation"] == "unparseable reply: not JSON: 'I would say it is rather known.'"
    summary = result["summary"]  # one /v1/models check and one chat per question, none retried
    assert (summary["requests"], summary["retries"], summary["cached"], summary["failed"]) == (1 + 4, 0, 0, 1)
    assert summary["prompt_tokens"] == sum(s["prompt_tokens"](m) for m in s["judge_prompts"].values())
    assert summary["completion_tokens"] == sum(s["reply_tokens"](reply) for _, reply in JUDGED.values())
    assert result["metrics"]["n"] == 3 and result["metrics"]["n_failed"] == 1
    cached = [json.loads(x) for x in (out / "verdict_cache.jsonl").read_text().splitlines()]
    assert sorted(c["id"] for c in cached) == ["s0", "s1", "s2"]  # the failure is not cached

    rerun = _judge(s, out)  # the three verdicts come from the cache; only the failed question is asked again
    assert (rerun["summary"]["requests"], rerun["summary"]["cached"], rerun["summary"]["failed"]) == (1 + 1, 3, 1)
    assert {i: r["level"] for i, r in _rows(out / "judgments.jsonl").items()} == {**LEVELS, "s3": None}


def _stage2(s, out: Path, capsys, **annotator) -> tuple[int, dict, dict, str]:
    cfg = dict(s["world"]["config"], out=str(out))
    cfg["annotator"] = {"backend": "openai", "model": s["model"], "base_url": s["server"].url, "max_concurrency": 2,
                        "timeout_s": 120, "max_retries": 1, "backoff_base_s": 0.2, "backoff_max_s": 1.0,
                        "max_reask": 1, "price_input_per_1m": 0, "price_output_per_1m": 0, **annotator}
    path = write_config(out.with_suffix(".yaml"), cfg)
    code = main(["mgld", "stage2", str(path)])
    summary = json.loads((out / "stage2_summary.json").read_text())
    said = capsys.readouterr().out
    with capsys.disabled():  # the summary line and the counts, for the log of a slow run
        print(said.strip(), json.dumps(summary["usage"]), sep="\n")
    return code, _rows(out / "stage2.jsonl"), summary, said


@pytest.mark.slow
def test_annotator_replies_parse_garbage_is_reasked_then_listed_and_a_rerun_asks_only_the_failure(served, capsys):
    s = served
    out = s["root"] / "stage2"
    code, recs, summary, said = _stage2(s, out, capsys)
    assert code == 0 and "3/4 ok" in said
    assert {i: r["answer"] for i, r in recs.items() if r["status"] == "ok"} == \
        {i: json.loads(a)["answer"] for i, a in s["answers"].items()}
    bad = recs[s["garbage_id"]]
    assert bad["status"] == "failed" and "answer" not in bad and bad["attempts"] == 2
    assert bad["reason"] == "no valid reply after 2 tries; last: invalid JSON: Expecting value at char 0"
    failures = _rows(out / "stage2_failures.jsonl")
    assert set(failures) == {s["garbage_id"]}
    usage = summary["usage"]  # health check + one chat per sample + the re-ask of the garbage one
    assert (usage["requests"], usage["retries"], usage["reasks"], usage["cached"]) == (1 + 4 + 1, 0, 1, 0)
    asked = [[{"role": "user", "content": s["stage2_prompts"][i]}] for i in s["answers"]]
    assert usage["prompt_tokens"] == sum(map(s["prompt_tokens"], [*asked, s["first"], s["reask"]]))
    assert usage["completion_tokens"] == sum(map(s["reply_tokens"], [*s["answers"].values(), GARBAGE, GARBAGE]))

    code, recs, summary, said = _stage2(s, out, capsys)  # a rerun: the three answers are kept, the failure re-asked
    assert "3/4 ok (0 new, 3 resumed" in said and recs[s["garbage_id"]]["status"] == "failed"
    assert (summary["usage"]["requests"], summary["usage"]["reasks"]) == (1 + 1 + 1, 1)


@pytest.mark.slow
def test_timeouts_and_a_restarted_server_are_counted_retries_never_a_guess_and_reruns_resume(served, capsys):
    s, server = served, served["server"]
    # a hung server (SIGSTOP: connections accepted, nothing answered): every request times out
    server.pause(True)
    try:
        with pytest.raises(FatalChatError, match=r"health check failed: request timed out \(gave up after 2 attempts\)"):
            _judge(s, s["root"] / "judge-hung", timeout_s=1, cache=s["root"] / "hung-cache.jsonl")
        assert not (s["root"] / "judge-hung" / "judgments.jsonl").exists()  # stopped before any verdict
        code, recs, summary, said = _stage2(s, s["root"] / "stage2-hung", capsys, health_check=False, timeout_s=1,
                                            cache=str(s["root"] / "shared-cache.jsonl"))
    finally:
        server.pause(False)
    assert code == 0 and "0/4 ok" in said
    assert {r["reason"] for r in recs.values()} == {"request timed out (gave up after 2 attempts)"}
    assert all("answer" not in r for r in recs.values())
    assert (summary["usage"]["requests"], summary["usage"]["retries"]) == (4 * 2, 4)

    # mid-run, after the first sample is stored, the server is stopped and started again: the requests that
    # meet the closed port are retried (refused connections, counted) until it answers again
    out = s["root"] / "stage2-restart"
    restart = {"done": threading.Event()}

    def stored() -> int:
        return len((out / "stage2.jsonl").read_text().splitlines()) if (out / "stage2.jsonl").is_file() else 0

    def restart_after_the_first_sample():
        end = time.monotonic() + 300
        while stored() == 0 and time.monotonic() < end:
            time.sleep(0.02)
        restart["stored"] = stored()
        server.stop()
        server.start()
        restart["done"].set()

    threading.Thread(target=restart_after_the_first_sample, daemon=True).start()
    code, recs, summary, said = _stage2(s, out, capsys, max_concurrency=1, delay_s=1.0, max_retries=300,
                                        cache=str(s["root"] / "shared-cache.jsonl"))
    assert restart["done"].is_set() and 1 <= restart["stored"] < 4  # it went away with samples still to do
    usage = summary["usage"]
    assert code == 0 and "3/4 ok (3 new" in said and usage["retries"] >= 1
    assert usage["requests"] - usage["retries"] == 1 + 4 + 1  # first tries: health check, 4 samples, 1 re-ask
    assert {i: r["answer"] for i, r in recs.items() if r["status"] == "ok"} == \
        {i: json.loads(a)["answer"] for i, a in s["answers"].items()}
    assert recs[s["garbage_id"]]["status"] == "failed"

    # another output folder sharing the cache: the three answers cost nothing, the garbage one is asked again
    code, recs, summary, said = _stage2(s, s["root"] / "stage2-shared", capsys,
                                        cache=str(s["root"] / "shared-cache.jsonl"))
    assert "3/4 ok (3 new, 0 resumed, 3 from cache)" in said
    assert (summary["usage"]["requests"], summary["usage"]["cached"]) == (1 + 1 + 1, 3)
