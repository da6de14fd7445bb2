"""Tiny EECA models built purely from configs: the test fixture for every area of the project.

`tiny_eeca()` returns (model, processor) with a 2-layer CLIP vision tower (width 32, 32 px images,
patch 8 -> 16 LR tokens), a 2-layer Llama (width 64), a word-level tokenizer made in memory with
`tokenizers` (with `<image>`, `<pad>`, `<s>`, `</s>`, `<unk>` and a chat template that marks the
assistant spans), and by default 8 HR latents from a 2 x 2 grid (64 px HR view): 24 placeholders
per image. Deterministic for a given `seed`; forward + backward takes milliseconds on a CPU.
"""

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerFast

from eeca.model.build import IMAGE_TOKEN, PAD_TOKEN, eeca_config_from_parts, processor_for
from eeca.model.modeling_eeca import EecaForConditionalGeneration
from eeca.model.processing_eeca import EecaProcessor

WORDS = (
    "what is this landmark ? it is the a an of in and with red brick facade twin spires tower church bridge "
    "castle lighthouse mountain lake waterfall statue windmill stone white tall old located town country "
    "user assistant describe image name where , . : i do not know"
).split()
SPECIAL = [PAD_TOKEN, "<unk>", "<s>", "</s>", IMAGE_TOKEN]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}user : {{ message['content'] }} "
    "{% else %}assistant : {% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %} {% endif %}"
    "{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a small landmark vocabulary; `<image>` is one special token."""
    vocab = {token: index for index, token in enumerate(SPECIAL + list(dict.fromkeys(WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.add_special_tokens(SPECIAL)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token=PAD_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_eeca(
    *, seed: int = 0, image_size: int = 32, num_hr_latents: int = 8, **config_overrides
) -> tuple[EecaForConditionalGeneration, EecaProcessor]:
    """A tiny, randomly initialised EECA model and its processor (the project's test fixture).

    Args:
        seed: torch seed for the weights.
        image_size: the vision tower's input size (patch 8).
        num_hr_latents: P.
        config_overrides: any `EecaConfig` field (use_hr_branch, loss weights, hierarchical_labels, ...).
    """
    tokenizer = tiny_tokenizer()
    vision_config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=8, projection_dim=32,
    )
    text_config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    overrides = {"resampler_heads": 2, "resampler_head_dim": 16, "num_hr_latents": num_hr_latents}
    overrides.update(config_overrides)
    config = eeca_config_from_parts(vision_config, text_config, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), **overrides)
    torch.manual_seed(seed)
    model = EecaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return model, processor_for(config, image_processor, tokenizer)
