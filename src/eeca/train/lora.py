"""Merging a LoRA adapter trained by ``eeca train`` back into a full model (paper 5.1 with LoRA; LLaVA #852, #808).

The adapter folder holds the LoRA weights of the LLM and, via PEFT's ``modules_to_save``, the full
weights of the projectors, the resampler and the L_HC head; the model config saved beside it carries
the label vocabulary, so the head is rebuilt at its trained size before the weights are loaded.
"""

from __future__ import annotations

from pathlib import Path

from eeca.io import run_lock


def merged_model(adapter_dir: str | Path):
    """The base checkpoint with the adapter merged in (an ordinary, PEFT-free model)."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoConfig

    from eeca.train.recipes import model_class

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json (not a LoRA output of eeca train)")
    base_path = PeftConfig.from_pretrained(adapter_dir).base_model_name_or_path
    if not base_path or not Path(base_path).exists():
        raise FileNotFoundError(f"{adapter_dir}/adapter_config.json: base model {base_path!r} is not a local folder")
    import eeca.model  # noqa: F401  (registers model_type "eeca" with AutoConfig)

    config = AutoConfig.from_pretrained(adapter_dir if (adapter_dir / "config.json").exists() else base_path)
    base = model_class(config.model_type).from_pretrained(base_path, config=config)
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def merge_lora_command(adapter: str, out: str) -> None:
    """Merge a LoRA adapter (with its fully trained projectors, resampler and heads) into a full model.

    Args:
        adapter: an eeca train output_dir (or checkpoint) trained with lora.enabled
        out: folder for the merged model and its processor
    """
    import shlex

    from transformers import AutoProcessor

    from eeca.config import load_config
    from eeca.io import readable_like_umask
    from eeca.train.card import read_summary, write_model_card
    from eeca.train.recipes import CONFIG_NAME, TrainConfig

    with run_lock(out, "merge-lora"):
        model = merged_model(adapter)
        model.save_pretrained(out)
        AutoProcessor.from_pretrained(adapter).save_pretrained(out)
        recipe = Path(adapter) / CONFIG_NAME
        if recipe.exists():
            (Path(out) / CONFIG_NAME).write_bytes(recipe.read_bytes())
            write_model_card(out, load_config(TrainConfig, recipe), model.config, summary=read_summary(Path(adapter)),
                             merged_from=Path(adapter), command=shlex.join(["eeca", "merge-lora", adapter, out]))
        readable_like_umask(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"merged {adapter} into its base: {n:,} parameters -> {out}")
