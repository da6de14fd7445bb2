"""Tiny tokenizers, checkpoints and LLaVA-JSON data for the training tests (CPU, seconds); the LLaVA parts are tests/tiny_llava.py's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerFast

from eeca.train.data import TEMPLATES_DIR
from tiny_llava import bpe_tokenizer, tiny_llava, tiny_processor

# A plain "User:/Assistant:" format, as a small stand-in LLM's tokenizer would carry.
SIMPLE_TEMPLATE = (
    "{{- bos_token -}}{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}{{- 'Assistant: ' -}}"
    "{%- generation -%}{{- m['content'] + eos_token -}}{%- endgeneration -%}{{- '\\n' -}}"
    "{%- else -%}{{- m['role'] | capitalize + ': ' + m['content'] + '\\n' -}}{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{{- 'Assistant: ' -}}{%- endif -%}")

CORPUS = ["what is this landmark? it is the red tower of northvale, a stone bridge over the river.",
          "describe the church: twin spires, a rose window and a brick facade in old harbour.",
          "Entities: red brick facade, twin spires. User Assistant System"]


def tiny_tokenizer(style: str = "llama3") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (no unk, like Llama-3) with ``<image>`` and a chat template."""
    specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<image>"]
    template = (TEMPLATES_DIR / "llama3.jinja").read_text() if style == "llama3" else SIMPLE_TEMPLATE
    return bpe_tokenizer(CORPUS, specials, 400, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                         extra_special_tokens={"image_token": "<image>"}, chat_template=template)


def write_llava_json(root: Path, n: int = 8, text_only: int = 0, seed: int = 0) -> Path:
    """MGLD-style records with images (and ``text_only`` LLaVA-665k-style text samples, multi-turn)."""
    rng = np.random.default_rng(seed)
    labels = ["tower", "church", "bridge"]
    records = []
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "img" / f"{i}.jpg")
        records.append({
            "id": f"s{i}", "image": f"img/{i}.jpg",
            "conversations": [{"from": "human", "value": "<image>\nwhat is this landmark?"},
                              {"from": "gpt", "value": f"it is the red tower of northvale {i}."}],
            "landmark_id": i, "landmark_name": f"tower {i}",
            "entities": ["red brick facade", "twin spires"][: 1 + i % 2],
            "hierarchical_label": labels[i % 3], "s_gt": 0.3, "rsr": 0.9})
    for i in range(text_only):
        records.append({"id": f"t{i}", "conversations": [
            {"from": "system", "value": "you describe landmarks."},
            {"from": "human", "value": "describe the church"},
            {"from": "gpt", "value": "twin spires and a rose window."},
            {"from": "human", "value": "where is it?"},
            {"from": "gpt", "value": f"in old harbour {i}."}]})
    path = root / "data.json"
    path.write_text(json.dumps(records))
    return path


def save_tiny_llava(root: Path, style: str = "llama3", seed: int = 0) -> Path:
    """A tiny HF LLaVA checkpoint with its processor (a stage-2/3 starting point)."""
    from eeca.train.data import set_pad_token

    tok = tiny_tokenizer(style)
    set_pad_token(tok, None)
    proc = tiny_processor(tok)
    model = tiny_llava(proc, seed=seed)
    model.save_pretrained(root)
    proc.save_pretrained(root)
    return root


def save_tiny_eeca(root: Path, seed: int = 0) -> Path:
    """A tiny EECA checkpoint (HR branch on, 8 HR latents) with its processor: a stage-2 output stand-in."""
    from eeca.model.tiny import tiny_eeca

    model, proc = tiny_eeca(seed=seed)
    model.save_pretrained(root)
    proc.save_pretrained(root)
    return root


def stage3_config(root: Path, checkpoint: Path, data: Path, **optim) -> dict:
    """A stage-3 recipe (all three losses) over ``data`` as a plain dict (YAML-equivalent)."""
    return {
        "stage": 3, "output_dir": str(root / "out"),
        "model": {"checkpoint": str(checkpoint), "architecture": "eeca",
                  "config_overrides": {"hc_loss_weight": 1.0, "eac_loss_weight": 1.0}},
        "data": {"path": str(data), "image_root": str(data.parent), "eval_path": str(data),
                 "entities": True, "hierarchical_labels": True, "max_length": 128},
        "trainable": ["projector", "resampler", "hc_head", "eac_temperature", "llm"],
        "optim": {"per_device_train_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1,
                  "save_steps": 2, "max_steps": 4, "seed": 0, **optim},
    }


def save_clip_and_llm(root: Path, image_size: int = 32) -> tuple[Path, Path]:
    """A tiny CLIP vision tower (+ image processor) and a tiny Llama (+ tokenizer): stage 1's inputs."""
    import torch
    from transformers import CLIPVisionModel, LlamaForCausalLM

    torch.manual_seed(0)
    tok = tiny_tokenizer("llama3")
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                              num_attention_heads=2, image_size=image_size, patch_size=8))
    vision.save_pretrained(root / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": image_size},
                          crop_size={"height": image_size, "width": image_size}).save_pretrained(root / "clip")
    llm = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok),
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    llm.save_pretrained(root / "llm")
    tok.save_pretrained(root / "llm")
    return root / "clip", root / "llm"
