"""The hf annotator on a tiny LlavaForConditionalGeneration built from configs (random weights)."""

import json

import pytest
import torch

from eeca.mgld.annotators import AnnotatorConfig, HFAnnotator, Request
from eeca.mgld.tasks import load_task
from tiny_llava import bpe_tokenizer, tiny_llava, tiny_processor

CHAT = ("{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}{% else %}"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{{ '\\n' }}{% else %}{{ c['text'] }}"
        "{% endif %}{% endfor %}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A llava-hf style folder: byte-level BPE tokenizer, CLIP image processor, 2-layer model."""
    path = tmp_path_factory.mktemp("tiny-llava")
    tokenizer = bpe_tokenizer(['{"answer": "This is Karvel Tower in Ostrava."}', "user: assistant: Where is this?"],
                              ["<pad>", "<s>", "</s>", "<image>"], 320, bos_token="<s>", eos_token="</s>",
                              pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    processor = tiny_processor(tokenizer, chat_template=CHAT)
    tiny_llava(processor).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture
def requests_(tmp_path):
    from PIL import Image

    # a short prompt keeps the tiny model's sequences (and the test) short
    prompt = tmp_path / "stage2_short.txt"
    prompt.write_text("$question ($landmark_name) Reply in JSON.")
    task = load_task("stage2", prompt)
    out = []
    for i, name in enumerate(["Karvel Tower", "Old windmill by the river", "Blue Lake (Ostrava)"]):
        p = tmp_path / f"{i}.jpg"
        Image.new("RGB", (40 + 8 * i, 30), (60 * i, 90, 20)).save(p)
        out.append(Request(f"{i:016x}", p, task.prompt(landmark_name=name, question="Where is this?"), {}))
    return task, out


def _cfg(checkpoint, **over):
    return AnnotatorConfig(**{"backend": "hf", "model": str(checkpoint), "batch_size": 2, "max_tokens": 8,
                              "max_reask": 1, "device": "cpu", **over})


def test_random_model_gibberish_is_counted_failed_with_reason(checkpoint, requests_):
    task, reqs = requests_
    ann = HFAnnotator(_cfg(checkpoint))
    results = list(ann.annotate(task, reqs))
    assert sorted(r.id for r in results) == sorted(r.id for r in reqs)
    assert all(r.status == "failed" and r.attempts == 2 and r.reason.startswith("no valid reply after 2 tries")
               for r in results)
    assert ann.usage.requests == 6 and ann.usage.reasks == 3  # 3 samples x (first try + one re-ask)
    assert ann.usage.completion_tokens > 0 and ann.usage.prompt_tokens > 0


def test_batched_left_padded_generation_equals_one_at_a_time(checkpoint, requests_):
    from PIL import Image

    task, reqs = requests_
    ann = HFAnnotator(_cfg(checkpoint, batch_size=3))
    convs = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r.prompt}]}] for r in reqs]
    images = [Image.open(r.image).convert("RGB") for r in reqs]
    batched = ann.generate(convs, images)
    single = [ann.generate([c], [im])[0] for c, im in zip(convs, images, strict=True)]
    assert batched == single and len(set(batched)) > 1


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@CUDA
def test_cuda_loads_bf16_and_generates_in_batches(checkpoint, requests_):
    task, reqs = requests_
    ann = HFAnnotator(_cfg(checkpoint, device="auto"))
    results = list(ann.annotate(task, reqs))
    assert ann._model.device.type == "cuda" and ann._model.dtype == torch.bfloat16
    assert len(results) == 3 and all(r.status == "failed" and r.attempts == 2 for r in results)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_valid_replies_after_a_reask_are_ok_and_cached(checkpoint, requests_, tmp_path, device):
    task, reqs = requests_
    ann = HFAnnotator(_cfg(checkpoint, device=device), cache_path=tmp_path / "cache.jsonl")
    ann._load()
    tok = ann._processor.tokenizer
    calls = []

    def fake_generate(input_ids, **kw):
        # row 0 answers nonsense on its first try; every other reply is valid JSON naming its sample
        calls.append(input_ids.shape[0])
        rows = []
        for b in range(input_ids.shape[0]):
            text = "not json" if (len(calls) == 1 and b == 0) else json.dumps({"answer": f"Reply {len(calls)}.{b}"})
            rows.append(tok.encode(text, add_special_tokens=False) + [tok.eos_token_id])
        width = max(map(len, rows))
        new = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows], device=input_ids.device)
        return torch.cat([input_ids, new], dim=1)

    ann._model.generate = fake_generate
    results = {r.id: r for r in ann.annotate(task, reqs)}
    assert calls == [2, 1, 1]  # batch of 2 (one re-asked alone), then the last sample
    assert results[reqs[0].id].reply == {"answer": "Reply 2.0"} and results[reqs[0].id].attempts == 2
    assert results[reqs[1].id].reply == {"answer": "Reply 1.1"} and results[reqs[1].id].attempts == 1
    assert results[reqs[2].id].reply == {"answer": "Reply 3.0"}
    assert ann.usage.reasks == 1
    ann.close()
    again = HFAnnotator(_cfg(checkpoint, device=device), cache_path=tmp_path / "cache.jsonl")
    cached = {r.id: r for r in again.annotate(task, reqs)}
    assert again._model is None and again.usage.cached == 3  # nothing generated, the model never loaded
    assert {k: r.reply for k, r in cached.items()} == {k: r.reply for k, r in results.items()}


def test_a_missing_hf_checkpoint_is_one_line_naming_the_config_field(world, tmp_path, capsys):
    from mgld_world import write_config

    from eeca.cli import main

    cfg = dict(world["config"], annotator={"backend": "hf", "model": str(tmp_path / "no-such-model")})
    path = write_config(tmp_path / "mgld.yaml", cfg)
    assert main(["mgld", "stage2", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{path}: field 'annotator.model': no model folder {tmp_path / 'no-such-model'}" in err
    assert not (tmp_path / "out" / "stage2.jsonl").exists()  # refused before anything is written
