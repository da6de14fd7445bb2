"""Image-encoding throughput of ``eeca score`` vs a plain loop with Hugging Face ``CLIPModel``.

Both embed the same generated JPEGs with the same tiny random CLIP (built from a config; no
download) and the same processor, batch size and device:

* ``plain``: for each batch, open and convert the images with PIL, call the processor on the
  batch, ``get_image_features``, L2-normalise;
* ``eeca score``: ``eeca.knowledge.encode.encode_images`` (DataLoader, per-file error handling),
  with 0 and with N decode workers.

Prints images/s and the ratio to the plain loop (goal >= 1.0 with 0 workers; more with workers).
    python benchmarks/clip_encode.py --images 512 --workers 2
    python benchmarks/clip_encode.py --images 4096 --workers 8 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from eeca.knowledge.encode import encode_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from knowledge_helpers import make_tiny_clip  # noqa: E402


def plain_loop(model: CLIPModel, processor: CLIPProcessor, paths: list[Path], batch_size: int) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for s in range(0, len(paths), batch_size):
            images = [Image.open(p).convert("RGB") for p in paths[s:s + batch_size]]
            pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(model.device, model.dtype)
            f = model.get_image_features(pixel_values=pixels).pooler_output.float()
            out.append((f / f.norm(dim=-1, keepdim=True)).cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--width", type=int, default=640, help="JPEG width (height = 3/4); decode cost grows with it")
    ap.add_argument("--image-size", type=int, default=64, help="CLIP input resolution")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the model's device; decoding is on CPU)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_dir = make_tiny_clip(tmp / "clip", image_size=a.image_size)
        model = CLIPModel.from_pretrained(clip_dir).eval().to(a.device)
        processor = CLIPProcessor.from_pretrained(clip_dir)
        rng = np.random.default_rng(0)
        paths = []
        for i in range(a.images):
            p = tmp / f"{i:05d}.jpg"
            base = rng.integers(0, 256, size=(a.width * 3 // 32, a.width // 8, 3), dtype=np.uint8)
            Image.fromarray(base).resize((a.width, a.width * 3 // 4)).save(p, quality=90)
            paths.append(p)
        plain_loop(model, processor, paths[: a.batch_size], a.batch_size)  # warm-up
        t0 = time.perf_counter()
        ref = plain_loop(model, processor, paths, a.batch_size)
        t_plain = time.perf_counter() - t0
        print(f"plain HF loop: {a.images / t_plain:.1f} images/s", flush=True)
        for workers in sorted({0, a.workers}):
            t0 = time.perf_counter()
            res = encode_images(model, processor, paths, a.batch_size, workers)
            t = time.perf_counter() - t0
            assert len(res.index) == a.images and not res.skipped
            err = float(np.abs(res.emb.astype(np.float32) - ref).max())
            print(f"eeca score, {workers} workers: {a.images / t:.1f} images/s, ratio {t_plain / t:.2f} "
                  f"(goal >= 1.0); max |diff| to plain {err:.1e} (float16 storage)", flush=True)


if __name__ == "__main__":
    main()
