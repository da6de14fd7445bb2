"""LLaVA-JSON dataset and collator for the three training stages (paper section 5.1, App. A; DESIGN 5-6).

Reads LLaVA-style records (MGLD records and LLaVA-665k style: ``{"id", "image"?, "conversations":
[{"from": "human"|"gpt"|"system", "value"}...]}``; text-only and multi-turn samples too) and turns
each into model inputs:

* Labels are assistant-only and come from the chat template's own spans: the template marks the
  assistant turns with ``{% generation %}`` and ``apply_chat_template(..., return_assistant_tokens_mask=True)``
  returns which tokens they cover. No string splitting with fixed offsets (LLaVA #1166, #779): a
  template without ``{% generation %}`` is an error, since it would silently give an all-masked loss.
* Images are read by :mod:`eeca.images` (inside ``image_root`` after resolving links, pixel and
  byte limits, every PIL mode to RGB); an unusable image is an error naming the record. Images go
  through the processor, which gives ``pixel_values`` (LR) and, for EECA,
  ``pixel_values_hr``; each ``<image>`` token is expanded to as many placeholders as the processor
  expands it to (576 for LLaVA, 704 for EECA with the HR branch). Placeholders count in the maximum
  length and are never truncated: a sample whose placeholders would be cut is an error naming it.
* For L_EAC the record's ``entities`` are tokenised into ``entity_ids`` / ``entity_mask`` ([M, L]);
  for L_HC its ``hierarchical_label`` becomes an index into a vocabulary built from the data
  (saved with the model as ``config.hierarchical_labels``).
* The Table 2 "Entity Prompt" baselines append the entities to the first question
  (:func:`eeca.mgld.questions.entity_prompt`, the same function generation uses).

Collation pads text on the right with the tokenizer's explicit pad token (Llama-3 has no unk token,
so ``pad = unk`` is never used) and stacks pixels. Rows of ``pixel_values``, ``pixel_values_hr``,
``entity_ids``, ``entity_mask`` and ``hc_labels`` follow the images of the batch in order (one per
image; MGLD samples have exactly one image each).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from eeca.config import InputPath
from eeca.images import ImageError, ImageLimits, image_file, load_image
from eeca.io import InputError, read_parquet
from eeca.mgld.questions import entity_prompt
from eeca.mgld.validate import checked_records

IMAGE_TOKEN = "<image>"
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
TEMPLATES_DIR = Path(__file__).with_name("templates")


class DataError(InputError):
    """A training record is malformed or cannot be encoded; the message names file, record and field."""


@dataclass(frozen=True)
class DataConfig:
    """Where the training data is and how it is encoded.

    ``path`` is a LLaVA JSON list or a JSONL file; ``image_root`` the folder record images are
    relative to. ``selection``: a selection manifest of ``eeca select`` (a parquet with an ``id``
    column): only those records of ``path`` are trained on, in the manifest's order (HDS-50k of MGLD
    train, say), and an id ``path`` does not hold is an error. ``entities`` / ``hierarchical_labels`` turn on the L_EAC / L_HC inputs (stage 3).
    ``entity_prompt``: ``train_and_infer`` appends the entities to the first question at training
    (paper Table 2, "Entity Prompt (Training + Inference)"); ``none`` leaves questions as they are.
    ``chat_template``: ``tokenizer`` uses the tokenizer's own template (it must contain
    ``{% generation %}``), ``llama3`` the shipped Llama-3 template, anything else a path to a Jinja file.
    """

    path: InputPath
    image_root: InputPath | None = None
    selection: InputPath | None = None
    eval_path: InputPath | None = None
    max_length: int = 2048
    entities: bool = False
    hierarchical_labels: bool = False
    max_entities: int = 8
    max_entity_tokens: int = 16
    entity_prompt: str = "none"
    chat_template: str = "tokenizer"
    pad_token: str | None = None
    images: ImageLimits = ImageLimits()  # pixel and byte limits per image file

    def __post_init__(self):
        if self.entity_prompt not in ("none", "train_and_infer"):
            raise ValueError(f"entity_prompt must be 'none' or 'train_and_infer', got {self.entity_prompt!r}")
        if self.max_length < 1 or self.max_entities < 1 or self.max_entity_tokens < 1:
            raise ValueError("max_length, max_entities and max_entity_tokens must be >= 1")


def read_records(path: str | Path) -> list[dict]:
    """LLaVA records from a JSON list or a JSONL file, checked by the package's one record validator
    (:func:`eeca.mgld.validate.checked_records`, the rules of ``eeca mgld validate``): a file with a
    blank answer, turns out of order, a repeated id or a mistyped field is refused, naming the record."""
    try:
        return checked_records(path, "llava")
    except InputError as e:
        raise DataError(str(e)) from None


def select_records(records: list[dict], manifest: str | Path, source: str) -> list[dict]:
    """The records of ``source`` whose ids the selection manifest ``manifest`` lists, in its order."""
    try:
        ids = [str(i) for i in read_parquet(manifest, columns=["id"]).column("id").to_pylist()]
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{manifest}: cannot read a selection manifest with an 'id' column: {e}") from None
    by_id = {str(r.get("id")): r for r in records}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"{manifest}: field 'id': {len(missing)} of its {len(ids)} ids are not records of {source} "
                        f"(first: {missing[0]!r}); select from the same pool the records come from")
    return [by_id[i] for i in ids]


def image_paths(record: dict) -> list[str]:
    image = record.get("image")
    return [] if image is None else [image] if isinstance(image, str) else list(image)


def build_label_vocabulary(records: Sequence[dict]) -> list[str]:
    """Sorted distinct hierarchical labels of the records (the L_HC classes)."""
    return sorted({r["hierarchical_label"] for r in records if r.get("hierarchical_label")})


def resolve_chat_template(tokenizer, choice: str) -> str:
    """The Jinja chat template to train with; it must mark assistant turns with ``{% generation %}``."""
    if choice == "tokenizer":
        template = tokenizer.chat_template
        origin = "the tokenizer's chat template"
    else:
        path = TEMPLATES_DIR / f"{choice}.jinja" if (TEMPLATES_DIR / f"{choice}.jinja").exists() else Path(choice)
        if not path.exists():
            raise DataError(f"chat_template {choice!r}: neither a shipped template "
                            f"({', '.join(p.stem for p in TEMPLATES_DIR.glob('*.jinja'))}) nor a file")
        template = path.read_text(encoding="utf-8")
        origin = str(path)
    if not isinstance(template, str) or not _GENERATION_TAG.search(template):
        raise DataError(f"{origin} has no {{% generation %}} block, so assistant tokens cannot be found "
                        "from the template; set data.chat_template to 'llama3' or to a template file that has one")
    return template


def set_pad_token(tokenizer, pad_token: str | None) -> bool:
    """Make sure the tokenizer has an explicit pad token; returns True when a new token was added.

    Never falls back to unk (Llama-3 has none, LLaVA #371) nor to eos (padding would then be
    indistinguishable from the end of an answer in the labels' neighbourhood).
    """
    if pad_token is not None:
        added = pad_token not in tokenizer.get_vocab()
        tokenizer.add_special_tokens({"pad_token": pad_token})
        return added
    if tokenizer.pad_token is not None:
        return False
    for candidate in ("<|finetune_right_pad_id|>", "<pad>"):  # Llama-3's reserved pad token first
        if candidate in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"pad_token": candidate})
            return False
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return True


class LlavaJsonDataset(Dataset):
    """Encodes LLaVA records lazily: tokens, assistant-only labels, pixels, entities, hc label."""

    def __init__(self, records: list[dict], processor, cfg: DataConfig, chat_template: str,
                 label_vocabulary: Sequence[str] = (), source: str = "<records>"):
        self.records, self.processor, self.cfg = records, processor, cfg
        self.tokenizer = processor.tokenizer if hasattr(processor, "tokenizer") else processor
        self.chat_template, self.source = chat_template, source
        self.label_index = {name: i for i, name in enumerate(label_vocabulary)}
        self.image_token = getattr(processor, "image_token", IMAGE_TOKEN)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        if self.tokenizer.pad_token_id is None:
            raise DataError("the tokenizer has no pad token; call set_pad_token first")

    def __len__(self) -> int:
        return len(self.records)

    def where(self, i: int) -> str:
        return f"{self.source}: record {i} (id {self.records[i].get('id')!r})"

    def modality_lengths(self) -> list[int]:
        """Approximate lengths, negative for text-only samples (for modality-grouped sampling)."""
        out = []
        for r in self.records:
            words = sum(len(t["value"].split()) for t in r["conversations"])
            out.append(words + 128 if image_paths(r) else -words)
        return out

    def messages(self, record: dict) -> list[dict]:
        """Chat messages of a record: roles mapped, ``<image>`` kept, entities appended when asked."""
        msgs = [{"role": ROLES[t["from"]], "content": t["value"]} for t in record["conversations"]]
        if self.cfg.entity_prompt == "train_and_infer" and record.get("entities"):
            first_user = next(m for m in msgs if m["role"] == "user")
            first_user["content"] = entity_prompt(first_user["content"], list(record["entities"]))
        return msgs

    def __getitem__(self, i: int) -> dict[str, Any]:
        record, where = self.records[i], self.where(i)
        msgs = self.messages(record)
        enc = self.tokenizer.apply_chat_template(
            msgs, chat_template=self.chat_template, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True)
        ids, assistant = list(enc["input_ids"]), list(enc["assistant_masks"])
        paths = image_paths(record)
        n_tags = ids.count(self.image_token_id)
        if n_tags != len(paths):
            raise DataError(f"{where}: {n_tags} {self.image_token} token(s) in the conversation but "
                            f"{len(paths)} image(s) in field 'image'")
        item: dict[str, Any] = {}
        n_placeholders = 0
        if paths:
            images = [self._load_image(p, where) for p in paths]
            px = self.processor(images=images, text=[self.image_token * len(images)], return_tensors="pt")
            n_placeholders = int((px["input_ids"] == self.image_token_id).sum()) // len(images)
            item["pixel_values"] = px["pixel_values"]  # [n_img, 3, S, S]
            if px.get("pixel_values_hr") is not None:
                item["pixel_values_hr"] = px["pixel_values_hr"]  # [n_img, G*G, 3, S, S]
        input_ids, labels = [], []
        for tok, is_assistant in zip(ids, assistant, strict=True):
            if tok == self.image_token_id:
                input_ids += [tok] * n_placeholders
                labels += [-100] * n_placeholders
            else:
                input_ids.append(tok)
                labels.append(tok if is_assistant else -100)
        if len(input_ids) > self.cfg.max_length:
            last_placeholder = max((k for k, t in enumerate(input_ids) if t == self.image_token_id), default=-1)
            if last_placeholder >= self.cfg.max_length:
                raise DataError(f"{where}: {len(input_ids)} tokens with image placeholders up to position "
                                f"{last_placeholder}; max_length {self.cfg.max_length} would cut through them "
                                "(raise data.max_length or shorten the sample)")
            input_ids, labels = input_ids[: self.cfg.max_length], labels[: self.cfg.max_length]
        item["input_ids"] = torch.tensor(input_ids)
        item["labels"] = torch.tensor(labels)
        if paths and (self.cfg.entities or self.cfg.hierarchical_labels):
            # L_EAC / L_HC rows follow the images; text-only samples contribute none
            if len(paths) != 1:
                raise DataError(f"{where}: L_EAC / L_HC need one image per sample, got {len(paths)}")
            if self.cfg.entities:
                item["entity_ids"], item["entity_mask"] = self._entities(record)
            if self.cfg.hierarchical_labels:
                label = record.get("hierarchical_label")
                if label and label not in self.label_index:
                    raise DataError(f"{where}: field 'hierarchical_label': {label!r} is not in the model's "
                                    f"label vocabulary ({len(self.label_index)} labels)")
                item["hc_labels"] = torch.tensor([self.label_index[label] if label else -100])
        return item

    def _load_image(self, rel: str, where: str) -> Image.Image:
        """The record's image through :mod:`eeca.images`: inside ``image_root``, within the limits, RGB."""
        root = Path(self.cfg.image_root) if self.cfg.image_root else Path(".")
        try:
            return load_image(image_file(root, rel), self.cfg.images)
        except ImageError as e:
            raise DataError(f"{where}: field 'image': {rel}: {e.reason}") from None

    def _entities(self, record: dict) -> tuple[torch.Tensor, torch.Tensor]:
        names = (record.get("entities") or [])[: self.cfg.max_entities]
        toks = [self.tokenizer(e, add_special_tokens=False)["input_ids"][: self.cfg.max_entity_tokens]
                for e in names]
        toks = [t for t in toks if t]
        width = max((len(t) for t in toks), default=1)
        ids = torch.full((1, max(len(toks), 1), width), self.tokenizer.pad_token_id)  # [1, M, L]
        mask = torch.zeros_like(ids, dtype=torch.bool)
        for m, t in enumerate(toks):
            ids[0, m, : len(t)] = torch.tensor(t)
            mask[0, m, : len(t)] = True
        return ids, mask


@dataclass
class LlavaCollator:
    """Pads token rows on the right (explicit pad id, labels -100) and stacks per-image tensors."""

    pad_token_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(it["input_ids"]) for it in items)
        batch = {
            "input_ids": torch.full((len(items), length), self.pad_token_id),  # [B, T]
            "attention_mask": torch.zeros(len(items), length, dtype=torch.long),
            "labels": torch.full((len(items), length), -100),
        }
        for b, it in enumerate(items):
            n = len(it["input_ids"])
            batch["input_ids"][b, :n] = it["input_ids"]
            batch["attention_mask"][b, :n] = 1
            batch["labels"][b, :n] = it["labels"]
        for key in ("pixel_values", "pixel_values_hr", "hc_labels"):
            rows = [it[key] for it in items if key in it]
            if rows:
                batch[key] = torch.cat(rows)
        if any("entity_ids" in it for it in items):
            ents = [it for it in items if "entity_ids" in it]
            m = max(it["entity_ids"].shape[1] for it in ents)
            w = max(it["entity_ids"].shape[2] for it in ents)
            ids = torch.full((len(ents), m, w), self.pad_token_id)  # [B_img, M, L]
            mask = torch.zeros(len(ents), m, w, dtype=torch.bool)
            for b, it in enumerate(ents):
                _, mi, wi = it["entity_ids"].shape
                ids[b, :mi, :wi] = it["entity_ids"][0]
                mask[b, :mi, :wi] = it["entity_mask"][0]
            batch["entity_ids"], batch["entity_mask"] = ids, mask
        return batch
