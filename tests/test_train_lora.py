"""LoRA: adapter + fully trained projectors/resampler/heads saved together; merge-lora gives the same logits."""

import json

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoConfig, AutoProcessor

from eeca.config import from_dict
from eeca.model import EecaForConditionalGeneration
from eeca.train.data import DataConfig, LlavaCollator, LlavaJsonDataset, read_records, resolve_chat_template
from eeca.train.lora import merge_lora_command
from eeca.train.recipes import TrainConfig, run
from train_helpers import save_tiny_eeca, stage3_config, write_llava_json


def test_lora_adapter_round_trip_and_merge(tmp_path, capsys):
    ckpt = save_tiny_eeca(tmp_path / "ckpt")
    data = write_llava_json(tmp_path / "data", n=4)
    cfg = stage3_config(tmp_path, ckpt, data, max_steps=3, learning_rate=1e-2, warmup_ratio=0.0)
    cfg["lora"] = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}
    cfg["data"]["eval_path"] = None
    run(from_dict(TrainConfig, cfg))
    adapter = tmp_path / "out"

    saved = load_file(adapter / "adapter_model.safetensors")
    assert any("language_model" in k and "lora_A" in k for k in saved)
    assert not any("vision_tower" in k and "lora" in k for k in saved)  # LoRA on the LLM only
    for module in ("multi_modal_projector", "hr_projector", "hr_resampler", "hc_head"):
        assert any(f".{module}." in k and "lora" not in k for k in saved), module  # full weights
    assert json.loads((adapter / "config.json").read_text())["hierarchical_labels"] == ["bridge", "church", "tower"]

    merge_lora_command(str(adapter), str(tmp_path / "merged"))
    assert "merged" in capsys.readouterr().out
    card = (tmp_path / "merged" / "README.md").read_text()
    assert f"LoRA adapter `{adapter}` merged" in card and "LoRA: r 4, alpha 8" in card
    assert f"eeca merge-lora {adapter} {tmp_path / 'merged'}" in card
    for folder in (adapter, tmp_path / "merged"):
        mode = (folder / "config.json").stat().st_mode & 0o777
        assert all(p.stat().st_mode & 0o777 == mode for p in folder.iterdir() if p.is_file())

    config = AutoConfig.from_pretrained(adapter)
    base = EecaForConditionalGeneration.from_pretrained(ckpt, config=config).eval()
    processor = AutoProcessor.from_pretrained(adapter)
    records = read_records(data)
    ds = LlavaJsonDataset(records, processor, DataConfig(path=data, image_root=data.parent),
                          resolve_chat_template(processor.tokenizer, "tokenizer"))
    batch = LlavaCollator(processor.tokenizer.pad_token_id)([ds[0], ds[1]])
    batch.pop("labels")
    with torch.no_grad():
        peft_logits = PeftModel.from_pretrained(base, adapter).eval()(**batch).logits
        merged = EecaForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
        merged_logits = merged(**batch).logits
    torch.testing.assert_close(merged_logits, peft_logits, atol=1e-4, rtol=1e-4)
    assert (merged_logits - EecaForConditionalGeneration.from_pretrained(ckpt, config=config)
            .eval()(**batch).logits).abs().max() > 1e-3  # the adapter changed the model
    assert merged.hc_head.out_features == 3
