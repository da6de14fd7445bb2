"""The stand-in tokenizer, CLIP and LLM: chat template masks, training, save/load round trips."""

import dataclasses
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, CLIPModel, CLIPProcessor, LlamaForCausalLM

from eeca.synth.check import evaluate_standins, format_table
from eeca.synth.config import ClipTrainConfig, LlmTrainConfig, SynthConfig, TokenizerConfig, WorldConfig
from eeca.synth.models import (
    BOS,
    EOS,
    EOT,
    IMAGE_TOKEN,
    PAD,
    build_models,
    encode_conversations,
    train_bpe,
    train_clip,
    train_llm,
    wrap_tokenizer,
)
from eeca.synth.texts import every_text, training_conversations
from eeca.synth.world import build_world, read_truth

TINY = SynthConfig(
    world=WorldConfig(landmarks=16, image_size=64, images_median=4.0, images_max=8),
    tokenizer=TokenizerConfig(vocab_size=600),
    clip=ClipTrainConfig(image_size=32, patch_size=8, hidden_size=32, layers=1, heads=2, projection_dim=32,
                         steps=40, batch_size=8, lr=3e-3),
    llm=LlmTrainConfig(hidden_size=32, layers=1, heads=2, intermediate_size=64, max_length=160, steps=40, batch_size=16,
                        lr=5e-3),
    threads=1,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_world(out, seed=0, cfg=TINY.world, progress=False)
    return out


@pytest.fixture(scope="module")
def bpe(world):
    return train_bpe(every_text(read_truth(world)), TINY.tokenizer.vocab_size)


def test_tokenizer_special_tokens(bpe):
    tok = wrap_tokenizer(bpe, "llm", 96)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS, EOT, PAD)
    ids = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.convert_tokens_to_ids(IMAGE_TOKEN)}
    assert None not in ids and len(ids) == 4
    assert tok("Karvel Tower")["input_ids"][0] == tok.bos_token_id
    assert tok.decode(tok("Karvel Tower", add_special_tokens=False)["input_ids"]) == "Karvel Tower"
    assert tok(f"{IMAGE_TOKEN}\nWhat", add_special_tokens=False)["input_ids"][0] == tok.convert_tokens_to_ids(IMAGE_TOKEN)
    clip_tok = wrap_tokenizer(bpe, "clip", 24)
    ids = clip_tok("Karvel Tower")["input_ids"]
    assert ids[0] == clip_tok.bos_token_id and ids[-1] == clip_tok.convert_tokens_to_ids(EOS)


def test_chat_template_assistant_masks(world, bpe):
    """Every unmasked label token decodes to assistant text; nothing of the question leaks in."""
    tok = wrap_tokenizer(bpe, "llm", 96)
    for lm in read_truth(world)[:4]:
        convs = training_conversations(lm)
        for conv, enc in zip(convs, encode_conversations(tok, convs, 160), strict=True):
            labelled = [t for t in enc["labels"] if t != -100]
            assert tok.decode(labelled) == conv[1]["content"] + EOT
            assert enc["input_ids"][0] == tok.bos_token_id
    # LLaVA-style content parts: the image part becomes the <image> token on its own line
    text = tok.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == (f"{BOS}<|start_header_id|>user<|end_header_id|>\n\n{IMAGE_TOKEN}\nWhere?{EOT}"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_too_long_conversation_is_an_error(world, bpe):
    tok = wrap_tokenizer(bpe, "llm", 96)
    with pytest.raises(ValueError, match="exceeds llm.max_length=8"):
        encode_conversations(tok, training_conversations(read_truth(world)[0]), 8)


def test_training_lowers_loss_and_weights_round_trip(world, bpe, tmp_path):
    lms = read_truth(world)
    cfg = dataclasses.replace(TINY.llm, steps=60)
    tok = wrap_tokenizer(bpe, "llm", 96)
    llm, losses = train_llm(lms, cfg, tok, seed=0, progress=False)
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10
    llm.save_pretrained(tmp_path / "llm")
    ids = torch.tensor([tok("Describe it.")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(LlamaForCausalLM.from_pretrained(tmp_path / "llm")(ids).logits, llm(ids).logits)
    from eeca.io import read_jsonl
    from eeca.synth.models import clip_processor

    proc = clip_processor(TINY.clip, wrap_tokenizer(bpe, "clip", 24))
    _, losses = train_clip(world, lms, read_jsonl(world / "truth" / "images.jsonl"), TINY.clip, proc, 0, False)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10


def test_build_save_load_round_trip_and_reuse(world, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "models"
    s = build_models(world, out, TINY, progress=False)
    assert isinstance(s["clip"], dict) and isinstance(s["llm"], dict)
    assert sorted(os.listdir(out)) == ["clip", "llm"]

    clip = CLIPModel.from_pretrained(out / "clip")
    proc = CLIPProcessor.from_pretrained(out / "clip")
    names = [lm["name"] for lm in read_truth(world)[:3]]
    batch = proc(text=names, images=[torch.zeros(3, 64, 64).numpy().transpose(1, 2, 0).astype("uint8")] * 2,
                 return_tensors="pt", padding=True)
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    with torch.no_grad():
        o = clip(**batch)
    assert o.logits_per_image.shape == (2, 3)

    llm = LlamaForCausalLM.from_pretrained(out / "llm")
    tok = AutoTokenizer.from_pretrained(out / "llm")
    assert tok.chat_template and tok.pad_token == PAD and llm.config.pad_token_id == tok.pad_token_id
    assert llm.generation_config.eos_token_id == tok.convert_tokens_to_ids(EOT)
    enc = tok.apply_chat_template([[{"role": "user", "content": "Describe it."}]] * 2, add_generation_prompt=True,
                                  return_dict=True, padding=True, return_tensors="pt")
    gen = llm.generate(**enc, max_new_tokens=4, do_sample=False)
    assert gen.shape[0] == 2

    # a rerun reuses finished folders; changing the LLM's config retrains only the LLM
    assert build_models(world, out, TINY, progress=False) == {**s, "clip": "reused", "llm": "reused"}
    s2 = build_models(world, out, dataclasses.replace(TINY, llm=dataclasses.replace(TINY.llm, steps=5)), progress=False)
    assert s2["clip"] == "reused" and isinstance(s2["llm"], dict)

    r = evaluate_standins(world, out)
    c = r["clip"]
    assert c["chance_top1"] == pytest.approx(1 / 16)
    assert c["split=heldout"]["n"] + c["split=unseen"]["n"] + c["split=train"]["n"] == \
        sum(1 for _ in (world / "truth" / "images.jsonl").open())
    for key in ("describe_trained", "describe_new", "name_trained", "name_new"):
        assert all(0.0 <= v <= 1.0 for v in r["llm"][key].values())
    assert "chance 1/M" in format_table(r)


@pytest.mark.slow
def test_default_standins_know_what_they_should(tmp_path):
    """Full size (minutes): seen landmarks well above chance, unseen near it; the LLM knows its text."""
    build_world(tmp_path / "w", seed=0, progress=False)
    build_models(tmp_path / "w", tmp_path / "m", progress=False)
    r = evaluate_standins(tmp_path / "w", tmp_path / "m")
    c, k = r["clip"], r["llm"]
    assert c["split=heldout"]["top1"] > 10 * c["chance_top1"]
    assert c["split=unseen"]["top1"] < c["split=heldout"]["top1"] / 3
    assert k["describe_trained"]["place"] > 5 * k["describe_trained"]["place_shuffled_truth"] + 0.1
    assert k["name_trained"]["name"] > 5 * k["name_trained"]["name_shuffled_truth"] + 0.1
