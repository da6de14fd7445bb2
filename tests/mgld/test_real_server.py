"""The LLM judge against a real OpenAI-compatible server (`transformers serve`, FastAPI + uvicorn) serving a
tiny random Llama on CPU: its replies are not verdicts, so every verdict must be a counted failure, never
a guessed level, and never cached; requests that time out are retried and end as counted failures (or,
when the /v1/models check itself times out, a stopped run). Slow: it starts a server."""

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from eeca.evaluate.judge import JudgeConfig, run_judge
from eeca.llm_client import FatalChatError
from tiny_llava import bpe_tokenizer
from train_helpers import write_llava_json

SERVE = Path(os.environ.get("EECA_SERVE_BIN", "/work/venvs/lmms/bin/transformers"))
TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")


def _tiny_llm(folder: Path) -> Path:
    tok = bpe_tokenizer(['{"level": "Known", "explanation": "named"}', "Strongly Known Weakly Unknown"],
                        ["<s>", "</s>", "<pad>"], 300, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                        chat_template=TEMPLATE)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=len(tok), max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    if not SERVE.exists():
        pytest.skip(f"no `transformers serve` at {SERVE} (set EECA_SERVE_BIN; needs transformers[serving])")
    model = _tiny_llm(tmp_path / "llm")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(SERVE), "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=5)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail((tmp_path / "serve.log").read_text()[-3000:])
                time.sleep(1)
        else:
            pytest.fail("server did not answer within 600 s")
        yield url, str(model)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


@pytest.mark.slow
def test_llm_judge_against_a_real_server_counts_every_non_verdict_as_failed(tmp_path, server):
    url, model = server
    data = write_llava_json(tmp_path / "mgld", n=3)
    gens = tmp_path / "generations.jsonl"
    gens.write_text("".join(json.dumps({"id": f"s{i}", "responses": [f"it is tower {i}.", "no idea"]}) + "\n"
                            for i in range(3)))
    cfg = JudgeConfig(generations=gens, test_json=data, judge="llm", model=model, base_url=url,
                      structured="json_schema", max_tokens=16, max_concurrency=1, max_retries=1, timeout_s=120)
    result = run_judge(cfg, tmp_path / "judge")
    print(json.dumps(result["summary"], indent=1))
    rows = [json.loads(line) for line in (tmp_path / "judge" / "judgments.jsonl").read_text().splitlines()]
    assert {r["status"] for r in rows} == {"failed"} and {r["level"] for r in rows} == {None}  # nothing guessed
    assert all(r["explanation"].startswith(("unparseable reply", "reply cut at max_tokens")) for r in rows)
    summary = result["summary"]  # requests: the /v1/models check and one chat per question
    assert (summary["requests"], summary["retries"], summary["failed"]) == (1 + 3, 0, 3)
    assert result["metrics"]["n"] == 0 and result["metrics"]["n_failed"] == 3
    assert not (tmp_path / "judge" / "verdict_cache.jsonl").read_text().strip()  # failures are never cached

    # a 1 ms timeout: whatever times out is retried and ends as a counted failure or a stopped run, never a level
    quick = JudgeConfig(generations=gens, test_json=data, judge="llm", model=model, base_url=url,
                        structured="none", max_tokens=16, max_concurrency=1, max_retries=2, timeout_s=0.001)
    try:
        result = run_judge(quick, tmp_path / "judge-timeouts")
    except FatalChatError as e:  # the /v1/models check timed out on every try
        assert "health check failed" in str(e)
        assert not (tmp_path / "judge-timeouts" / "judgments.jsonl").exists()
    else:
        print(json.dumps(result["summary"], indent=1))
        rows = [json.loads(line) for line in (tmp_path / "judge-timeouts" / "judgments.jsonl").read_text().splitlines()]
        assert {r["level"] for r in rows} == {None} and result["summary"]["failed"] == 3
        summary = result["summary"]  # each chat tried 1 + max_retries times; the models check may have retried too
        assert summary["retries"] >= 3 * 2 and summary["requests"] == 1 + 3 + summary["retries"]
