"""CLIP image and text embeddings for the VE-knowledge probe (paper section 3.1, Eq. 2).

Any Hugging Face ``CLIPModel`` with its ``CLIPProcessor`` (a local folder or a hub id): the image
tower with its visual projection and the text tower with its text projection, each L2-normalised, so
that a dot product is the cosine similarity S of the paper.

Images are decoded in ``torch.utils.data.DataLoader`` workers (JPEG decoding, not the model, is the
CPU ceiling) with pinned memory on a GPU, through the toolkit's one image loader
(:mod:`eeca.images`: paths confined to the image root after resolving links, pixel and byte limits,
every PIL mode to RGB). A file that is missing, empty, too large, not an image, truncated or
otherwise undecodable is not an error: it comes back as a skip with its reason, and the batch goes
on without it. Names longer than the text tower's context are truncated and counted.

Two image paths (``fast``):

* exact (``fast=False``): the full-size RGB image through the model's own image processor, which
  returns float32 pixel values;
* fast (``fast=True``, for processors that resize the shorter side and centre-crop, as CLIP's do): a
  JPEG is decoded at the smallest DCT scale whose sides stay >= 1.5 x the input
  (:func:`eeca.images.load_image` with ``min_side``), resized and cropped in uint8 in the worker, and the uint8 batch (4x less to
  pin and copy) is rescaled and normalised on the model's device. Only the reduced-scale decoding
  changes pixels; docs/knowledge.md gives what that changes in S and in ranks.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm
from transformers import CLIPModel, CLIPProcessor

from eeca.images import DEFAULT_LIMITS, ImageError, ImageLimits, image_file, load_image, resize_crop
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


# The fast path decodes a JPEG at a DCT scale whose sides stay >= DRAFT_MARGIN x the model's input, so
# that a bicubic downscale (as in the exact path) still sets the final pixels. At 1.0 an image twice the
# input is decoded straight to the input size, which moved 27% of the ranks on the synthetic world; at
# 1.5 none moved there, and a 1024 x 768 photo is still decoded at 1/2 for a 224 px input
# (docs/knowledge.md, benchmarks/image_path.py).
DRAFT_MARGIN = 1.5


@dataclass(frozen=True)
class _FastPath:
    """What the fast path needs of an image processor: resize, crop, rescale and normalise."""

    shortest_edge: int
    crop: tuple[int, int]  # (h, w)
    resample: int
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, image_processor) -> _FastPath | None:
        """The processor's steps if they are resize-shorter-side + centre-crop + rescale + normalise, else None."""
        size, crop = getattr(image_processor, "size", None) or {}, getattr(image_processor, "crop_size", None) or {}
        flags = [getattr(image_processor, f, False) for f in ("do_resize", "do_center_crop", "do_rescale", "do_normalize")]
        if not (all(flags) and size.get("shortest_edge") and crop.get("height") and crop.get("width")
                and not size.get("longest_edge")):
            return None
        return cls(int(size["shortest_edge"]), (int(crop["height"]), int(crop["width"])), int(image_processor.resample),
                   float(image_processor.rescale_factor), tuple(image_processor.image_mean),
                   tuple(image_processor.image_std))

    def normalise(self, pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """uint8 [b, 3, h, w] on the device -> normalised ``dtype`` pixel values, as the processor computes them."""
        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1)
        return ((pixels.float() * self.scale - mean) / std).to(dtype)


class _ImageFiles(Dataset):
    """Item i = (i, pixel values [3, S, S] (float32, or uint8 on the fast path) or None, skip reason or "")."""

    def __init__(self, paths: list[Path], image_processor, root: Path | None, limits: ImageLimits,
                 fast: _FastPath | None):
        self.paths, self.image_processor, self.root, self.limits, self.fast = paths, image_processor, root, limits, fast

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            path = image_file(self.root, self.paths[i]) if self.root is not None else self.paths[i]
            if self.fast is None:
                rgb = load_image(path, self.limits)
                return i, self.image_processor(images=rgb, return_tensors="pt")["pixel_values"][0], ""
            rgb = load_image(path, self.limits, min_side=math.ceil(DRAFT_MARGIN * self.fast.shortest_edge))
        except ImageError as e:
            return i, None, e.reason
        pixels = resize_crop(rgb, self.fast.shortest_edge, self.fast.crop, self.fast.resample)  # [S, S, 3] uint8
        return i, torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), ""


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
                  num_workers: int, desc: str = "images", root: Path | None = None,
                  limits: ImageLimits = DEFAULT_LIMITS, fast: bool = False) -> ImageEmbeddings:
    """Embed the images at ``paths`` in order; unusable files are returned as skips with their reason.

    ``root``: the paths are relative to it and must stay inside it (links resolved). ``fast``: the
    fast path where the processor allows it (module docstring), else the exact one.
    """
    device = clip.device
    fast_path = _FastPath.of(processor.image_processor) if fast else None
    loader = DataLoader(_ImageFiles(paths, processor.image_processor, root, limits, fast_path), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=_collate, pin_memory=device.type == "cuda")
    embs, index, skipped = [], [], []
    with torch.inference_mode():
        for idx, pixels, skip in tqdm(loader, desc=desc, unit="batch", leave=False):
            skipped += skip
            if pixels is None:
                continue
            if fast_path is None:
                pixels = pixels.to(device, clip.dtype, non_blocking=True)
            else:
                pixels = fast_path.normalise(pixels.to(device, non_blocking=True), clip.dtype)
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
