"""Tiny inputs for the knowledge tests and benchmarks: a random CLIPModel from a config with its
processor, and a small landmark set in the images.parquet / landmarks.parquet formats (DESIGN 3)."""

import string
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

from eeca.gldv2.paths import image_relpath

try:  # the PIL backend needs no torchvision (transformers >= 5.2x splits the backends)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as ImageProcessor
except ImportError:
    from transformers import CLIPImageProcessor as ImageProcessor


def make_tiny_clip(path: Path, image_size: int = 32, max_text_len: int = 16, seed: int = 0) -> Path:
    """Save a 2-layer, width-32 CLIPModel and a character-level CLIPProcessor to ``path``."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted(set(string.ascii_lowercase + string.digits + "'-.,()&")):
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    layers = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = CLIPConfig(text_config=dict(**layers, vocab_size=len(vocab), max_position_embeddings=max_text_len,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=1),
                     vision_config=dict(**layers, image_size=image_size, patch_size=8), projection_dim=16)
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(path)
    image_processor = ImageProcessor(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def make_landmarks(root: Path, n_landmarks: int = 6, per_landmark: int = 4, size: int = 40, seed: int = 0,
                   names: list[str] | None = None) -> tuple[Path, Path]:
    """JPEGs under ``root/train/a/b/c/<id>.jpg`` plus images.parquet and landmarks.parquet in ``root``."""
    rng = np.random.default_rng(seed)
    names = names or [f"landmark {chr(97 + i % 26)}{i}" for i in range(n_landmarks)]
    ids, lids, paths = [], [], []
    for k in range(n_landmarks * per_landmark):
        image_id = f"{rng.integers(0, 2**63):016x}"
        rel = image_relpath(image_id)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size, size + 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / rel, quality=90)
        ids.append(image_id)
        lids.append(100 + k % n_landmarks)
        paths.append(rel)
    images = root / "images.parquet"
    pq.write_table(pa.table({"id": ids, "landmark_id": pa.array(lids, pa.int64()), "url": [""] * len(ids),
                             "path": paths, "status": ["ok"] * len(ids)}), images)
    landmarks = root / "landmarks.parquet"
    pq.write_table(pa.table({"landmark_id": pa.array([100 + i for i in range(n_landmarks)], pa.int64()),
                             "name": names, "hierarchical_label": [["tower", "lake"][i % 2] for i in range(n_landmarks)]}),
                   landmarks)
    return images, landmarks
