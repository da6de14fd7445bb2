"""Assemble an untrained EECA (or, with the HR branch off, a plain LLaVA) from a CLIP and an LLM checkpoint.

This is LLaVA's stage-1 starting point (paper App. A): the vision tower from a `CLIPModel` or
`CLIPVisionModel` checkpoint, the LLM and its tokenizer from a Llama checkpoint, fresh projectors,
resampler and heads. The tokenizer gets an `<image>` token (added when missing, embeddings resized)
and an explicit pad token: Llama-3 has no unk token to reuse as pad (LLaVA #371).
Everything loads from local paths; nothing is fetched.
"""

from pathlib import Path

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel

from eeca.model.configuration_eeca import EecaConfig
from eeca.model.modeling_eeca import EecaForConditionalGeneration
from eeca.model.processing_eeca import EecaProcessor

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"


def prepare_tokenizer(tokenizer) -> int:
    """Add `<image>` (special) when missing and a distinct `<pad>` when the pad token is missing or
    is the eos token (pad = eos masks the end of answers wherever padding is masked); returns the
    `<image>` id."""
    additions = {}
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        additions["additional_special_tokens"] = [IMAGE_TOKEN]
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        additions["pad_token"] = PAD_TOKEN
    if additions:
        tokenizer.add_special_tokens(additions, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def eeca_config_from_parts(vision_config, text_config, image_token_id: int, **overrides) -> EecaConfig:
    """An `EecaConfig` around a CLIP vision config and an LLM config; `overrides` set EECA fields."""
    if getattr(vision_config, "model_type", None) == "clip":
        vision_config = vision_config.vision_config
    side = vision_config.image_size // vision_config.patch_size
    return EecaConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=image_token_id,
        image_seq_length=side * side,
        pad_token_id=text_config.pad_token_id,
        **overrides,
    )


def processor_for(config: EecaConfig, image_processor, tokenizer, chat_template: str | None = None) -> EecaProcessor:
    """The processor matching `config` (patch size, feature strategy, HR geometry)."""
    return EecaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,  # CLIP's CLS token, which the "default" strategy drops again
        chat_template=chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None),
        use_hr_branch=config.use_hr_branch,
        hr_grid=config.hr_grid,
        num_hr_latents=config.num_hr_latents,
    )


def build_eeca(
    vision_path: str | Path, llm_path: str | Path, config_overrides: dict | None = None
) -> tuple[EecaForConditionalGeneration, EecaProcessor]:
    """An untrained EECA model + processor from a CLIP checkpoint and an LLM checkpoint (local folders).

    Args:
        vision_path: a `CLIPModel` or `CLIPVisionModel` save_pretrained folder (with its image processor).
        llm_path: a causal-LM save_pretrained folder with its tokenizer (Llama family).
        config_overrides: `EecaConfig` fields (use_hr_branch, loss weights, hierarchical_labels, ...).
    Returns:
        (model, processor); the vision tower and LLM carry the checkpoints' weights, the projectors,
        resampler and heads are freshly initialised, the embeddings are resized to the tokenizer.
    """
    vision_path, llm_path = Path(vision_path), Path(llm_path)
    tokenizer = AutoTokenizer.from_pretrained(llm_path)
    image_token_id = prepare_tokenizer(tokenizer)
    llm = AutoModelForCausalLM.from_pretrained(llm_path, dtype=torch.float32)
    vision = CLIPVisionModel.from_pretrained(vision_path, dtype=torch.float32)
    # grow (never shrink a padded vocabulary) to hold the added tokens
    llm.resize_token_embeddings(max(llm.get_input_embeddings().num_embeddings, len(tokenizer)))
    text_config = llm.config
    text_config.pad_token_id = tokenizer.pad_token_id
    config = eeca_config_from_parts(
        AutoConfig.from_pretrained(vision_path), text_config, image_token_id, **(config_overrides or {})
    )
    model = EecaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(llm.model.state_dict())
    model.lm_head.load_state_dict(llm.lm_head.state_dict())
    image_processor = AutoImageProcessor.from_pretrained(vision_path)
    return model, processor_for(config, image_processor, tokenizer)
