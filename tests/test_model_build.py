"""build_eeca from a CLIP checkpoint and a Llama-3-like checkpoint (no `<image>`, no pad, no unk)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from eeca.config import ConfigError, load_config
from eeca.model.build import build_eeca, prepare_tokenizer
from eeca.model.spec import ModelConfig, eeca_config_for, model_summary


def save_parts(root):
    words = ["<|begin|>", "<|end|>", "[x]", "what", "is", "this", "landmark", "?", "a", "tower"]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[x]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin|>", eos_token="<|end|>")
    assert tokenizer.pad_token is None and tokenizer.unk_token is None
    torch.manual_seed(1)
    llm = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, vocab_size=len(words), tie_word_embeddings=False))
    llm.save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    clip = CLIPModel(CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        projection_dim=8,
    ))
    clip.save_pretrained(root / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    return llm, clip


def test_build_adds_image_and_pad_tokens_and_keeps_weights(tmp_path):
    llm, clip = save_parts(tmp_path)
    model, processor = build_eeca(tmp_path / "clip", tmp_path / "llm",
                                  {"num_hr_latents": 4, "resampler_heads": 2, "resampler_head_dim": 8,
                                   "hierarchical_labels": ["tower", "lake"]})
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert model.config.image_token_id == image_id and processor.image_token_id == image_id
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id not in (tokenizer.eos_token_id, image_id)
    assert model.config.text_config.pad_token_id == tokenizer.pad_token_id
    rows = model.get_input_embeddings().weight
    assert rows.shape[0] >= len(tokenizer)
    old = llm.get_input_embeddings().weight
    torch.testing.assert_close(rows[: old.shape[0]], old)
    torch.testing.assert_close(model.lm_head.weight[: old.shape[0]], llm.lm_head.weight)
    torch.testing.assert_close(
        model.model.vision_tower.encoder.layers[1].mlp.fc1.weight,
        clip.vision_model.encoder.layers[1].mlp.fc1.weight,
    )
    assert processor.num_image_tokens == 4 + 4  # P + (32 / 16)^2

    image = Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype("uint8"))
    inputs = processor(images=[image], text=["what is this <image> landmark ?"], return_tensors="pt")
    out = model(**inputs, labels=inputs["input_ids"], hc_labels=torch.tensor([0]))
    assert torch.isfinite(out.loss) and out.loss_hc is not None


REPO = Path(__file__).resolve().parents[1]


def test_paper_config_summary_on_meta_device(run_eeca):
    result = run_eeca("model", "summary", str(REPO / "src/eeca/configs/paper/model.yaml"))
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert "2880 HR features -> 128 HR tokens + 576 LR tokens = 704 visual tokens per image" in last


def test_synth_config_points_at_checkpoints_and_rejects_bad_fields(tmp_path):
    save_parts(tmp_path)
    overrides = [f"vision={tmp_path / 'clip'}", f"llm={tmp_path / 'llm'}"]
    cfg = load_config(ModelConfig, REPO / "src/eeca/configs/synth/model.yaml", overrides)
    tokens = model_summary(eeca_config_for(cfg))["tokens"]
    assert tokens == {"lr_tokens": 4, "hr_features": 5 * 4, "hr_tokens": 16, "visual_tokens_per_image": 20,
                      "hr_image_size": 64}
    with pytest.raises(ConfigError, match="eac_negatives"):
        load_config(ModelConfig, REPO / "src/eeca/configs/synth/model.yaml", ["eeca.eac_negatives=all"])
    with pytest.raises(ConfigError, match="unknown EECA field"):
        load_config(ModelConfig, REPO / "src/eeca/configs/synth/model.yaml", ["eeca.num_latents=3"])


def test_pad_equal_to_eos_is_replaced_by_a_distinct_pad():
    backend = Tokenizer(models.WordLevel(vocab={"<|begin|>": 0, "<|end|>": 1, "[x]": 2}, unk_token="[x]"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin|>", eos_token="<|end|>",
                                        pad_token="<|end|>")
    image_id = prepare_tokenizer(tokenizer)
    assert tokenizer.pad_token == "<pad>" and len({tokenizer.pad_token_id, tokenizer.eos_token_id, image_id}) == 3
    assert tokenizer.convert_ids_to_tokens(tokenizer("[x] <image>", add_special_tokens=False)["input_ids"]) == [
        "[x]", "<image>"]
