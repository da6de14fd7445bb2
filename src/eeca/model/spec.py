"""The model YAML (`configs/*/model.yaml`) and `eeca model summary` (paper App. A geometry).

A `ModelConfig` names the two checkpoints EECA starts from (a CLIP vision encoder and an LLM) and the
EECA switches (any `EecaConfig` field: HR branch, resampler geometry, loss weights, L_EAC choices).
For a model whose checkpoints are not at hand (the paper's CLIP ViT-L/14-336 + Llama-3-8B), the
`vision_geometry` / `text_geometry` sections describe the architectures; `eeca model summary` then
instantiates the model on the meta device and reports parameter and token counts without weights.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, CLIPVisionConfig, LlamaConfig

from eeca.config import ModelPath, check_inputs, load_config
from eeca.model.build import eeca_config_from_parts
from eeca.model.configuration_eeca import EECA_FIELDS, EecaConfig
from eeca.model.modeling_eeca import EecaForConditionalGeneration


@dataclass(frozen=True)
class VisionGeometry:
    """A CLIP vision tower's shape (for configs without a checkpoint)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int


@dataclass(frozen=True)
class TextGeometry:
    """A Llama-family LLM's shape (for configs without a checkpoint)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int


@dataclass(frozen=True)
class ModelConfig:
    """Which checkpoints EECA starts from, and its switches.

    vision: a CLIPModel / CLIPVisionModel folder (save_pretrained), or None with `vision_geometry`.
    llm: a causal-LM folder with its tokenizer, or None with `text_geometry`.
    eeca: `EecaConfig` fields (use_hr_branch, hr_grid, num_hr_latents, resampler_*, *_loss_weight,
        eac_negatives, eac_sigma, entity_stop_gradient, eac_logit_scale_init, eac_max_logit_scale,
        hierarchical_labels); checked by `EecaConfig` when the file is loaded.
    """

    vision: ModelPath | None = None
    llm: ModelPath | None = None
    eeca: dict[str, bool | int | float | str | list[str] | None] = field(default_factory=dict)
    vision_geometry: VisionGeometry | None = None
    text_geometry: TextGeometry | None = None

    def __post_init__(self):
        unknown = sorted(set(self.eeca) - set(EECA_FIELDS))
        if unknown:
            raise ValueError(f"eeca.{unknown[0]}: unknown EECA field (known: {', '.join(EECA_FIELDS)})")
        if self.vision is None and self.vision_geometry is None:
            raise ValueError("give vision (a CLIP checkpoint folder) or vision_geometry")
        if self.llm is None and self.text_geometry is None:
            raise ValueError("give llm (an LLM checkpoint folder) or text_geometry")
        EecaConfig(**self.eeca)  # rejects bad values with the field's name


def eeca_config_for(cfg: ModelConfig) -> EecaConfig:
    """The `EecaConfig` a `ModelConfig` describes (checkpoint configs read from disk, no weights)."""
    if cfg.vision is not None:
        vision = AutoConfig.from_pretrained(cfg.vision)
    else:
        vision = CLIPVisionConfig(**vars(cfg.vision_geometry))
    if cfg.llm is not None:
        text = AutoConfig.from_pretrained(cfg.llm)
    else:
        text = LlamaConfig(**vars(cfg.text_geometry))
    # build_eeca appends `<image>` after the LLM's vocabulary
    image_token_id = text.vocab_size
    text.vocab_size += 1
    return eeca_config_from_parts(vision, text, image_token_id, **cfg.eeca)


def model_summary(config: EecaConfig) -> dict:
    """Parameter counts per component and visual-token counts per image, built on the meta device."""
    with torch.device("meta"):
        model = EecaForConditionalGeneration(config)
    inner = model.model
    parts = {
        "vision_tower": inner.vision_tower,
        "lr_projector": inner.multi_modal_projector,
        "hr_resampler": inner.hr_resampler,
        "hr_projector": inner.hr_projector,
        "llm": inner.language_model,
        "lm_head": model.lm_head,
        "hc_head": model.hc_head,
    }
    params = {name: sum(p.numel() for p in module.parameters()) if module is not None else 0
              for name, module in parts.items()}
    params["total"] = sum(p.numel() for p in model.parameters())
    vision = config.vision_config
    per_sub_image = (vision.image_size // vision.patch_size) ** 2
    hr = config.use_hr_branch
    tokens = {
        "lr_tokens": config.num_visual_tokens - (config.num_hr_latents if hr else 0),
        "hr_features": (1 + config.hr_grid**2) * per_sub_image if hr else 0,
        "hr_tokens": config.num_hr_latents if hr else 0,
        "visual_tokens_per_image": config.num_visual_tokens,
        "hr_image_size": config.hr_grid * vision.image_size if hr else vision.image_size,
    }
    return {"params": params, "tokens": tokens}


def summary_command(config: Path, overrides: list[str] | None = None) -> dict:
    """Report an EECA model's parameter and visual-token counts without loading weights.

    Args:
        config: a model YAML (configs/paper/model.yaml, configs/synth/model.yaml).
        overrides: field=value changes, e.g. eeca.use_hr_branch=false eeca.eac_loss_weight=0.
    """
    cfg = load_config(ModelConfig, config, overrides)
    check_inputs(cfg, config)
    summary = model_summary(eeca_config_for(cfg))
    for name, count in summary["params"].items():
        print(f"{name:<14} {count:>15,d} parameters")
    tokens = summary["tokens"]
    for name, count in tokens.items():
        print(f"{name:<24} {count:>6d}")
    print(
        f"eeca model summary: {summary['params']['total']:,d} parameters; {tokens['hr_features']} HR features -> "
        f"{tokens['hr_tokens']} HR tokens + {tokens['lr_tokens']} LR tokens = {tokens['visual_tokens_per_image']} "
        "visual tokens per image"
    )
    return summary
