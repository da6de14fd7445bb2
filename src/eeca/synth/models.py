"""Tiny stand-in CLIP, LLM and tokenizer trained on the synthetic world (DESIGN section 8).

The paper's premise (section 2, Figure 1; section 3.1) is a vision encoder that knows some
landmarks (VE-Known) and not others (VE-Unknown), beside a language model that can describe
landmarks in text. This module makes both, by construction, from a world built by
:mod:`eeca.synth.world`:

* a byte-level BPE tokenizer trained with ``tokenizers`` on every text of the testbed (the world's,
  the generic corpus's and MGLD's wording: :func:`eeca.synth.texts.every_text`), wrapped as
  a ``PreTrainedTokenizerFast`` with explicit bos / eos / pad tokens, an ``<image>`` token and a
  Llama-3-style chat template whose assistant turns sit inside ``{% generation %}`` markers (so
  ``apply_chat_template(..., return_assistant_tokens_mask=True)`` gives assistant-only labels);
* a tiny ``CLIPModel`` trained contrastively on (image, name) pairs of the ``clip_seen``
  landmarks only, their held-out images kept aside; the unseen landmarks are VE-Unknown by
  construction. Its ``CLIPProcessor`` pairs a PIL ``CLIPImageProcessor`` with the same BPE
  vocabulary in a CLIP-style wrapping (bos + text + eos; the text tower pools at eos);
* a tiny ``LlamaForCausalLM`` trained on every landmark's text in both directions (name ->
  place and attributes; attributes + place -> name) in the chat template, with the loss on
  assistant tokens only, so the LLM knows landmarks the CLIP never saw.

``OUT/clip`` holds the CLIP model and processor, ``OUT/llm`` the LLM and its tokenizer, each
written by ``save_pretrained`` (safetensors) and loadable offline with ``from_pretrained``. Each
folder is written under a temporary name and renamed when complete, with a ``synth_meta.json``
recording the config and the world it was trained on; a rerun after a kill reuses a finished
folder whose meta matches and retrains the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm import tqdm
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPProcessor,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    get_cosine_schedule_with_warmup,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from eeca.config import to_dict
from eeca.gldv2.paths import image_path
from eeca.io import read_jsonl, readable_like_umask, run_lock, write_json
from eeca.synth.config import ClipTrainConfig, LlmTrainConfig, SynthConfig
from eeca.synth.texts import every_text, training_conversations
from eeca.synth.world import load_synth_config, read_truth

BOS, EOS, PAD, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|eot_id|>"
HEADER_START, HEADER_END = "<|start_header_id|>", "<|end_header_id|>"
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = (BOS, EOS, PAD, HEADER_START, HEADER_END, EOT, IMAGE_TOKEN)

# Llama-3 layout. Content is a string or a list of {"type": "image"} / {"type": "text", "text": ...}
# parts (the form LLaVA processors pass); an image part becomes "<image>\n". The assistant turn,
# its end-of-turn token included, is inside {% generation %} so the model learns to stop.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' -}}"
    "{%- if message['content'] is string -%}{%- set content = message['content'] -%}"
    "{%- else -%}{%- set ns = namespace(text='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{%- set ns.text = ns.text + '<image>\n' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set content = ns.text -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{- content | trim + '<|eot_id|>' -}}{% endgeneration %}"
    "{%- else -%}{{- content | trim + '<|eot_id|>' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}"
)

# ----------------------------------------------------------------------------------------------
# tokenizer


def train_bpe(texts: Iterator[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE (no unknown token: every byte is in the alphabet) with the special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def wrap_tokenizer(bpe: Tokenizer, kind: str, max_length: int) -> PreTrainedTokenizerFast:
    """The BPE as the LLM's tokenizer (``kind="llm"``: bos + text, chat template) or CLIP's (bos + text + eos)."""
    bpe = Tokenizer.from_str(bpe.to_str())  # a copy: the post-processor differs per kind
    bos_id, eos_id = bpe.token_to_id(BOS), bpe.token_to_id(EOS)
    if kind == "llm":
        bpe.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                           special_tokens=[(BOS, bos_id)])
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BOS, eos_token=EOT, pad_token=PAD,
                                      extra_special_tokens={"image_token": IMAGE_TOKEN},
                                      model_max_length=max_length, padding_side="left")
        tok.chat_template = CHAT_TEMPLATE
        return tok
    if kind == "clip":
        # CLIP's text tower pools the hidden state at the first eos, so every text must end with one
        bpe.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", pair=f"{BOS} $A $B {EOS}",
                                                           special_tokens=[(BOS, bos_id), (EOS, eos_id)])
        return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                       model_max_length=max_length, padding_side="right")
    raise ValueError(f"unknown tokenizer kind {kind!r} (llm or clip)")


# ----------------------------------------------------------------------------------------------
# training


def _train(model: torch.nn.Module, batch_fn: Callable[[int], dict], steps: int, lr: float, weight_decay: float,
           desc: str, progress: bool) -> list[float]:
    """AdamW with warmup + cosine decay; ``batch_fn(step)`` gives model kwargs with ``return_loss``/labels."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    sched = get_cosine_schedule_with_warmup(opt, max(1, steps // 20), steps)
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        loss = model(**batch_fn(step)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    return losses


def load_pixels(world: Path, ids: list[str], processor: CLIPProcessor, batch: int = 256) -> torch.Tensor:
    """Pixel values [N, 3, S, S] of images ``ids`` through the CLIP image processor."""
    out = []
    for i in range(0, len(ids), batch):
        imgs = []
        for image_id in ids[i:i + batch]:
            with Image.open(image_path(world, image_id)) as im:
                imgs.append(im.convert("RGB"))
        out.append(processor.image_processor(images=imgs, return_tensors="pt")["pixel_values"])
    return torch.cat(out) if out else torch.zeros(0)


def build_clip(cfg: ClipTrainConfig, tok: PreTrainedTokenizerFast) -> CLIPModel:
    inter = 2 * cfg.hidden_size
    config = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": cfg.hidden_size, "intermediate_size": inter,
                     "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
                     "max_position_embeddings": cfg.max_text_length, "bos_token_id": tok.bos_token_id,
                     "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
        vision_config={"image_size": cfg.image_size, "patch_size": cfg.patch_size, "hidden_size": cfg.hidden_size,
                       "intermediate_size": inter, "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads},
        projection_dim=cfg.projection_dim)
    return CLIPModel(config)


def clip_processor(cfg: ClipTrainConfig, tok: PreTrainedTokenizerFast) -> CLIPProcessor:
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": cfg.image_size},
                                            crop_size={"height": cfg.image_size, "width": cfg.image_size})
    return CLIPProcessor(image_processor=image_processor, tokenizer=tok)


def train_clip(world: Path, landmarks: list[dict], images: list[dict], cfg: ClipTrainConfig,
               processor: CLIPProcessor, seed: int, progress: bool = True) -> tuple[CLIPModel, list[float]]:
    """Contrastive training on (image, name) of seen landmarks' ``clip_split == "train"`` images.

    Each batch holds distinct landmarks (one random image each), so no positive pair is ever
    treated as a negative.
    """
    names = {lm["landmark_id"]: lm["name"] for lm in landmarks}
    by_lm: dict[int, list[int]] = {}
    train_ids = [r["id"] for r in images if r["clip_split"] == "train"]
    for i, r in enumerate(r for r in images if r["clip_split"] == "train"):
        by_lm.setdefault(r["landmark_id"], []).append(i)
    if len(by_lm) < 2:
        raise ValueError(f"{world}: fewer than 2 landmarks have CLIP training images; build a larger world")
    pixels = load_pixels(world, train_ids, processor)  # [N, 3, S, S]
    lids = sorted(by_lm)
    texts = processor.tokenizer([names[lid] for lid in lids], padding=True, truncation=True, return_tensors="pt")
    torch.manual_seed(seed)
    model = build_clip(cfg, processor.tokenizer)
    rng = random.Random(seed)
    b = min(cfg.batch_size, len(lids))

    def batch(step: int) -> dict:
        pick = rng.sample(range(len(lids)), b)
        img_idx = [rng.choice(by_lm[lids[j]]) for j in pick]
        px = pixels[img_idx]
        flip = torch.rand(b) < 0.5  # mirrored views: left and right carry no identity here
        px = torch.where(flip[:, None, None, None], px.flip(-1), px)
        return {"input_ids": texts["input_ids"][pick], "attention_mask": texts["attention_mask"][pick],
                "pixel_values": px, "return_loss": True}

    losses = _train(model, batch, cfg.steps, cfg.lr, cfg.weight_decay, "clip", progress)
    return model, losses


def llm_positions(cfg: LlmTrainConfig) -> int:
    """Positions of the stand-in LLM: room for an LVLM prompt (image placeholders + text), not only its texts."""
    return max(256, cfg.max_length)


def build_llm(cfg: LlmTrainConfig, tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                         num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                         max_position_embeddings=llm_positions(cfg), bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model


def encode_conversations(tok: PreTrainedTokenizerFast, convs: list[list[dict]], max_length: int) -> list[dict]:
    """input_ids and labels (assistant tokens only, from the template's generation spans) per conversation."""
    out = []
    for conv in convs:
        enc = tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = enc["input_ids"], enc["assistant_masks"]
        if len(ids) > max_length:
            raise ValueError(f"conversation of {len(ids)} tokens exceeds llm.max_length={max_length}: "
                             f"{conv[0]['content'][:60]!r}; raise llm.max_length")
        out.append({"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask, strict=True)]})
    return out


def pad_batch(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a training batch: input_ids / labels / attention_mask [B, T]."""
    t = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), t), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), t), -100, dtype=torch.long)
    attn = torch.zeros((len(examples), t), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        attn[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attn}


def train_llm(landmarks: list[dict], cfg: LlmTrainConfig, tok: PreTrainedTokenizerFast, seed: int,
              progress: bool = True) -> tuple[LlamaForCausalLM, list[float]]:
    """Causal-LM training on every landmark's conversations (both directions), assistant tokens only."""
    data = encode_conversations(tok, [c for lm in landmarks for c in training_conversations(lm)], cfg.max_length)
    torch.manual_seed(seed)
    model = build_llm(cfg, tok)
    rng = random.Random(seed)
    order: list[int] = []

    def batch(step: int) -> dict:
        # epochs of shuffled examples, so every conversation is seen equally often
        while len(order) < cfg.batch_size:
            perm = list(range(len(data)))
            rng.shuffle(perm)
            order.extend(perm)
        pick = [order.pop() for _ in range(cfg.batch_size)]
        return pad_batch([data[i] for i in pick], tok.pad_token_id)

    losses = _train(model, batch, cfg.steps, cfg.lr, cfg.weight_decay, "llm", progress)
    return model, losses


# ----------------------------------------------------------------------------------------------
# the verb


def _world_fingerprint(world: Path) -> str:
    h = hashlib.sha256()
    for name in ("truth/landmarks.jsonl", "truth/images.jsonl", "train.csv"):
        h.update((world / name).read_bytes())
    return h.hexdigest()


def _finished(folder: Path, meta: dict) -> bool:
    path = folder / "synth_meta.json"
    if not path.exists():
        return False
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    return {k: old.get(k) for k in meta} == meta


def _save(folder: Path, meta: dict, *parts) -> None:
    """save_pretrained every part into a temporary folder, then swap it in for ``folder``."""
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for p in parts:
        p.save_pretrained(tmp)
    write_json(tmp / "synth_meta.json", meta)
    readable_like_umask(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def build_models(world: str | Path, out: str | Path, cfg: SynthConfig | None = None, progress: bool = True) -> dict:
    """Train the tokenizer, the stand-in CLIP and the stand-in LLM on ``world``; write ``out/clip``, ``out/llm``."""
    cfg = cfg or SynthConfig()
    world, out = Path(world), Path(out)
    torch.set_num_threads(cfg.threads)
    landmarks = read_truth(world)
    images = read_jsonl(world / "truth" / "images.jsonl")
    bpe = train_bpe(every_text(landmarks), cfg.tokenizer.vocab_size)
    base = {"world": _world_fingerprint(world), "seed": cfg.seed, "tokenizer": to_dict(cfg.tokenizer),
            "vocab": hashlib.sha256(bpe.to_str().encode()).hexdigest()}
    summary: dict = {"vocab_size": bpe.get_vocab_size()}
    t0 = time.perf_counter()
    clip_meta = {**base, "clip": to_dict(cfg.clip)}
    if _finished(out / "clip", clip_meta):
        summary["clip"] = "reused"
    else:
        processor = clip_processor(cfg.clip, wrap_tokenizer(bpe, "clip", cfg.clip.max_text_length))
        clip, losses = train_clip(world, landmarks, images, cfg.clip, processor, cfg.seed, progress)
        _save(out / "clip", {**clip_meta, "loss_first": losses[0], "loss_last": float(np.mean(losses[-20:]))},
              clip, processor)
        summary["clip"] = {"loss_first": round(losses[0], 4), "loss_last": round(float(np.mean(losses[-20:])), 4),
                           "seconds": round(time.perf_counter() - t0, 1)}
    t1 = time.perf_counter()
    llm_meta = {**base, "llm": to_dict(cfg.llm)}
    if _finished(out / "llm", llm_meta):
        summary["llm"] = "reused"
    else:
        tok = wrap_tokenizer(bpe, "llm", llm_positions(cfg.llm))
        llm, losses = train_llm(landmarks, cfg.llm, tok, cfg.seed, progress)
        _save(out / "llm", {**llm_meta, "loss_first": losses[0], "loss_last": float(np.mean(losses[-20:]))}, llm, tok)
        summary["llm"] = {"loss_first": round(losses[0], 4), "loss_last": round(float(np.mean(losses[-20:])), 4),
                          "seconds": round(time.perf_counter() - t1, 1)}
    return summary


def models_command(world: str = "runs/demo/world", out: str = "runs/demo/models", config: str | None = None,
                   overrides: list[str] | None = None) -> int:
    """Train the tiny stand-in CLIP, LLM and tokenizer on a synthetic world.

    Args:
        world: world folder written by `eeca synth world`
        out: output folder; gets clip/ (CLIPModel + CLIPProcessor) and llm/ (LlamaForCausalLM + tokenizer)
        config: YAML with `world`, `tokenizer`, `clip`, `llm` sections (default: configs/synth/world.yaml's values)
        overrides: config overrides such as clip.steps=100 llm.steps=200
    """
    cfg = load_synth_config(config, overrides or [])
    t0 = time.perf_counter()
    with run_lock(out, "synth models"):
        s = build_models(world, out, cfg)

    def said(part: str) -> str:
        v = s[part]
        return v if isinstance(v, str) else f"loss {v['loss_first']:.2f} -> {v['loss_last']:.2f} in {v['seconds']:.0f}s"

    print(f"synth models: tokenizer {s['vocab_size']} tokens; clip {said('clip')}; llm {said('llm')} "
          f"-> {out}/clip, {out}/llm in {time.perf_counter() - t0:.0f}s")
    return 0

