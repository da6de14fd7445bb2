"""CLIP image and text embeddings for the VE-knowledge probe (paper section 3.1, Eq. 2).

Any Hugging Face ``CLIPModel`` with its ``CLIPProcessor`` (a local folder or a hub id): the image
tower with its visual projection and the text tower with its text projection, each L2-normalised, so
that a dot product is the cosine similarity S of the paper.

Images are decoded in ``torch.utils.data.DataLoader`` workers (JPEG decoding, not the model, is the
CPU ceiling) with pinned memory on a GPU. A file that is missing, empty, not an image, truncated or
otherwise undecodable is not an error: it comes back as a skip with its reason, and the batch goes
on without it. Names longer than the text tower's context are truncated and counted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm
from transformers import CLIPModel, CLIPProcessor

from eeca.io import offline_requested


def load_clip(model: str, dtype: torch.dtype, device: torch.device,
              local_files_only: bool = False) -> tuple[CLIPModel, CLIPProcessor]:
    """A ``CLIPModel`` (eval mode, on ``device`` in ``dtype``) and its processor, from a path or hub id
    (from disk only with ``local_files_only`` or ``HF_HUB_OFFLINE=1``)."""
    offline = offline_requested(local_files_only)
    clip = CLIPModel.from_pretrained(model, dtype=dtype, local_files_only=offline).to(device).eval()
    return clip, CLIPProcessor.from_pretrained(model, local_files_only=offline)


def _unit(features: torch.Tensor) -> np.ndarray:
    """L2-normalise in float32 (bf16 model outputs included), store as float16."""
    f = features.float()
    return (f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy().astype(np.float16)


class _ImageFiles(Dataset):
    """Item i = (i, pixel_values [3, S, S] or None, skip reason or "")."""

    def __init__(self, paths: list[Path], image_processor):
        self.paths = paths
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        if not path.is_file():
            return i, None, "missing file"
        if path.stat().st_size == 0:
            return i, None, "empty file (0 bytes)"
        try:
            with Image.open(path) as im:
                im.load()  # decode now: a truncated file fails here, not later in the processor
                rgb = im.convert("RGB")
        except Image.UnidentifiedImageError:
            return i, None, "not an image (unidentified format)"
        except (OSError, SyntaxError, ValueError) as e:  # PIL's truncated / corrupt-data errors
            return i, None, f"corrupt or truncated image ({e})"
        pixels = self.image_processor(images=rgb, return_tensors="pt")["pixel_values"][0]
        return i, pixels, ""


def _collate(items):
    ok = [(i, p) for i, p, _ in items if p is not None]
    skipped = [(i, reason) for i, p, reason in items if p is None]
    index = [i for i, _ in ok]
    pixels = torch.stack([p for _, p in ok]) if ok else None  # [b, 3, S, S]
    return index, pixels, skipped


@dataclass
class ImageEmbeddings:
    emb: np.ndarray  # [n_ok, d] float16, L2-normalised
    index: list[int]  # position in the input list of each embedding row, ascending
    skipped: list[tuple[int, str]]  # (position, reason), ascending


def encode_images(clip: CLIPModel, processor: CLIPProcessor, paths: list[Path], batch_size: int,
                  num_workers: int, desc: str = "images") -> ImageEmbeddings:
    """Embed the images at ``paths`` in order; undecodable files are returned as skips."""
    device = clip.device
    loader = DataLoader(_ImageFiles(paths, processor.image_processor), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=_collate, pin_memory=device.type == "cuda")
    embs, index, skipped = [], [], []
    with torch.inference_mode():
        for idx, pixels, skip in tqdm(loader, desc=desc, unit="batch", leave=False):
            skipped += skip
            if pixels is None:
                continue
            pixels = pixels.to(device, clip.dtype, non_blocking=True)
            embs.append(_unit(clip.get_image_features(pixel_values=pixels).pooler_output))  # [b, d]
            index += idx
    dim = clip.config.projection_dim
    emb = np.concatenate(embs) if embs else np.zeros((0, dim), np.float16)
    return ImageEmbeddings(emb, index, sorted(skipped))


def encode_texts(clip: CLIPModel, processor: CLIPProcessor, texts: list[str], batch_size: int,
                 desc: str = "names") -> tuple[np.ndarray, int]:
    """Embed ``texts`` in order; returns ([n, d] float16, how many were truncated to the context)."""
    tokenizer = processor.tokenizer
    max_len = clip.config.text_config.max_position_embeddings
    lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
    n_truncated = sum(n > max_len for n in lengths)
    if n_truncated:
        warnings.warn(f"{n_truncated} of {len(texts)} names are longer than the text tower's {max_len} tokens "
                      f"and were truncated", stacklevel=2)
    embs = []
    with torch.inference_mode():
        for s in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", leave=False):
            enc = tokenizer(texts[s:s + batch_size], padding=True, truncation=True, max_length=max_len,
                            return_tensors="pt").to(clip.device)
            embs.append(_unit(clip.get_text_features(**enc).pooler_output))  # [b, d]
    dim = clip.config.projection_dim
    return (np.concatenate(embs) if embs else np.zeros((0, dim), np.float16)), n_truncated
