"""Tiny LLaVA parts for the tests and benchmarks: a trained byte-level BPE tokenizer, a processor and a
random ``LlavaForConditionalGeneration`` (CLIP vision 2x32, Llama 2x32), all built from configs.

Built in well under a second so that annotation, training and generation tests run on a CPU without
downloading anything; ``build_tiny_llava`` saves them with ``save_pretrained`` so the code under
test loads them the way it loads a real checkpoint. Each area picks its own tokenizer specials and
chat template (Llama-3 style without unk for training, a left-padding one with unk for generation).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
CORPUS = [
    "Which landmark is shown in this picture? It is the Old Mill of Brekken, a windmill in Vasta.",
    "What is this place called? This is the Grey Tower, a stone tower with twin spires.",
    "Describe the building. A red brick church with a tall bell tower near the lake of Orno.",
    "The bridge crosses the river in Kellby; the waterfall and the castle are close by.",
]


def bpe_tokenizer(corpus: list[str], specials: list[str], vocab_size: int, **tokens) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``corpus``; ``tokens``: bos_token, chat_template, ... ."""
    unk = tokens.get("unk_token")
    tok = Tokenizer(models.BPE(unk_token=unk) if unk else models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus * 4, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                             show_progress=False,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, **tokens)


def tiny_processor(tokenizer, image_size: int = 32, patch: int = 8, chat_template: str | None = None) -> LlavaProcessor:
    ip = CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=patch, chat_template=chat_template,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def tiny_llava(processor: LlavaProcessor, seed: int = 0) -> LlavaForConditionalGeneration:
    """A random tiny LLaVA sized for ``processor`` (its image size, patch and vocabulary)."""
    tok, ip = processor.tokenizer, processor.image_processor
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=ip.crop_size["height"], patch_size=processor.patch_size),
        text_config=LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=2, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        image_token_id=processor.image_token_id, vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


def build_tiny_llava(out: Path, seed: int = 0, image_size: int = 32, patch: int = 8) -> Path:
    """Write a tiny random LLaVA checkpoint + processor (left padding, for generation) to ``out``."""
    tokenizer = bpe_tokenizer(CORPUS, ["<unk>", "<pad>", "<s>", "</s>", "<image>"], 300, unk_token="<unk>",
                              pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                              extra_special_tokens={"image_token": "<image>"}, padding_side="left",
                              chat_template=CHAT_TEMPLATE)
    processor = tiny_processor(tokenizer, image_size, patch)
    out.mkdir(parents=True, exist_ok=True)
    tiny_llava(processor, seed).save_pretrained(out)
    processor.save_pretrained(out)
    return out
