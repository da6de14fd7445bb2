"""One-run performance check of eeca's heavy code paths on one GPU, at paper geometry, random weights.

Every model is built from a config (no download): CLIP ViT-L/14-336 (vision 1024 x 24 layers,
text tower 768 x 12), Llama-3-8B (4096 x 32, GQA 8, MLP 14336, vocab 128256) and a Llama-3.2-1B
geometry (2048 x 16, GQA 8, MLP 8192, tied embeddings). The parts, each with a time cap, each
recorded as ok / oom / timeout / error without stopping the others:

1. ``clip_encode`` (paper 3.1, ``eeca score``'s image path): images/s and MFU of
   ``eeca.knowledge.encode.encode_images`` from JPEG files with DataLoader decode workers, against a
   plain HF loop (PIL decode + processor + ``CLIPModel.get_image_features`` per batch) and against the
   model alone on pre-decoded pixels; same batch size, same dtype.
2. ``streaming_rank`` (paper 3.1, S / rank / RSR): ``eeca.knowledge.rank.streaming_scores`` over
   N images x 203,094 names x 768, against the plain matmul rate of its own block shapes; projected
   to GLDv2's 4,132,914 images.
3. ``train_8b_lora`` / ``train_1b_full`` (paper 4.2, 5.1, stage 3): the recipe of
   ``configs/paper/stage3.yaml`` (``eeca.train``: dataset, collator, ``EecaTrainer``, LoRA as the recipe
   applies it, gradient checkpointing, bf16) with the HR branch on (5 x 576 CLIP features -> 128
   latents) and all three losses (L_LM, L_HC, L_EAC): tokens/s, MFU, peak memory.
4. ``generate_k5`` (paper 3.1, k = 5 answers per question): ``eeca.evaluate.generate.generate_batch``
   (batched, k samples sharing one prefill) against HF ``generate`` one sequence at a time.

    python benchmarks/gpu/check.py --out runs/gpu-check.json          # GPU, about 5 minutes
    python benchmarks/gpu/check.py --smoke --out /tmp/smoke.json      # CPU, tiny shapes, seconds

The README beside this file says what each number means.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    TrainerCallback,
)

from eeca.config import load_config  # noqa: E402
from eeca.evaluate.generate import GenerateConfig, build_prompt, generate_batch  # noqa: E402
from eeca.io import write_json  # noqa: E402
from eeca.knowledge.encode import encode_images  # noqa: E402
from eeca.knowledge.rank import rsr_from_rank, streaming_ranks, streaming_scores  # noqa: E402
from eeca.knowledge.score import ScoreConfig  # noqa: E402
from eeca.model.build import IMAGE_TOKEN, eeca_config_from_parts, processor_for  # noqa: E402
from eeca.model.modeling_eeca import EecaForConditionalGeneration  # noqa: E402
from eeca.model.tiny import WORDS, tiny_tokenizer  # noqa: E402
from eeca.train.data import LlavaCollator, LlavaJsonDataset, build_label_vocabulary, read_records  # noqa: E402
from eeca.train.recipes import TrainConfig, apply_lora, set_trainable, training_arguments  # noqa: E402
from eeca.train.trainer import EecaTrainer  # noqa: E402

# name fragment -> (bf16 dense tensor TFLOP/s, fp32 non-tensor TFLOP/s, memory TB/s), vendor datasheets;
# first match wins, so the PCIe / NVL variants come before the SXM "H100".
PEAKS = (
    ("H200", 989e12, 67e12, 4.8e12),
    ("H100 PCIe", 756e12, 51e12, 2.0e12),
    ("H100 NVL", 835e12, 60e12, 3.9e12),
    ("H100", 989e12, 67e12, 3.35e12),
)

# Paper geometry (GPU) and the same structure at toy size (--smoke, CPU).
FULL = dict(
    vision=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                patch_size=14, image_size=336, projection_dim=768),
    clip_text=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                   vocab_size=49408, max_position_embeddings=77, projection_dim=768),
    llm_8b=dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=14336, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192),
    llm_1b=dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=8192, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192,
                tie_word_embeddings=True),
    eeca=dict(num_hr_latents=128, resampler_heads=16, resampler_head_dim=64),
    images=2048, encode_paths=16384,
    rank=dict(n=1_000_000, m=203_094, d=768, project_n=4_132_914),
    text_tokens=128, train_batch=16, train_steps=3, train_workers=8,
    gen=dict(prompts=8, naive_prompts=2, k=5, new_tokens=128),
    caps=dict(clip_encode=80, streaming_rank=90, train_8b_lora=130, train_1b_full=70, generate_k5=90),
)
SMOKE = dict(
    vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                patch_size=8, image_size=32, projection_dim=16),
    clip_text=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   vocab_size=49408, max_position_embeddings=16, projection_dim=16),
    llm_8b=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, vocab_size=256, max_position_embeddings=512),
    llm_1b=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=64, vocab_size=256, max_position_embeddings=512, tie_word_embeddings=True),
    eeca=dict(num_hr_latents=8, resampler_heads=2, resampler_head_dim=16),
    images=16, encode_paths=32, encode_batch=8, workers=0,
    rank=dict(n=3000, m=700, d=16, project_n=12000, block=512, name_block=256),
    text_tokens=32, train_batch=2, train_steps=2, train_workers=0,
    gen=dict(prompts=2, naive_prompts=1, k=5, new_tokens=4),
    caps=dict(clip_encode=60, streaming_rank=60, train_8b_lora=60, train_1b_full=60, generate_k5=60),
)
LABELS = ["tower", "church", "bridge", "castle", "lighthouse", "waterfall"]
ENTITIES = ["red brick facade", "twin spires", "tall white tower", "old stone bridge", "lake"]


class PartTimeout(Exception):
    """A part ran past its time cap."""


@dataclasses.dataclass
class Env:
    """What every part runs with: the geometry, the device and its peaks, the shared JPEGs."""

    geo: dict
    device: torch.device
    dtype: torch.dtype  # compute dtype of the models (bf16 on GPU, fp32 on CPU)
    peak_bf16: float | None  # FLOP/s, None when the card is not in PEAKS (CPU)
    peak_fp32: float | None
    bandwidth: float | None  # bytes/s
    images: list[Path]  # the shared synthetic JPEGs
    tmp: Path


# ---- small helpers --------------------------------------------------------------------------------
def sync(env: Env) -> None:
    if env.device.type == "cuda":
        torch.cuda.synchronize()


def mfu(flops_per_s: float, peak: float | None) -> float | None:
    return None if peak is None else flops_per_s / peak


def vit_image_flops(v: CLIPVisionConfig) -> float:
    """Forward FLOPs of one image through a ViT tower (all layers), multiply-add = 2 FLOPs.

    n = (S/p)^2 + 1 tokens, d width, f MLP width, L layers:
    2 n L (4 d^2 + 2 d f) [QKV, out, MLP] + 4 n^2 d L [QK^T and AV] + 2 (n - 1) 3 p^2 d [patch embedding].
    CLIP ViT-L/14-336: 381.9 GFLOPs.
    """
    n = (v.image_size // v.patch_size) ** 2 + 1
    d, f, layers = v.hidden_size, v.intermediate_size, v.num_hidden_layers
    return 2 * n * layers * (4 * d * d + 2 * d * f) + 4 * n * n * d * layers + 2 * (n - 1) * 3 * v.patch_size**2 * d


def write_jpegs(folder: Path, count: int, side: int) -> list[Path]:
    """``count`` smooth random JPEGs of side x 4/3 side pixels (a natural-photo aspect ratio)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        base = rng.integers(0, 256, size=(side // 8, side // 6, 3), dtype=np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(base).resize((side * 4 // 3, side), Image.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths


def build_on(env: Env, cls, config, dtype: torch.dtype):
    """A randomly initialised ``cls`` built directly on the device (an 8B model initialises in seconds)."""
    with torch.device(env.device):
        return cls._from_config(config, dtype=dtype, attn_implementation="sdpa").eval()


def eeca_config(env: Env, llm: str, hierarchical_labels: list[str] | None = None):
    """EecaConfig at the geometry of ``env.geo[llm]`` with the tiny word-level tokenizer's special ids."""
    tok = tiny_tokenizer()
    text = LlamaConfig(**env.geo[llm], pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id)
    vision = CLIPVisionConfig(**env.geo["vision"])
    cfg = eeca_config_from_parts(vision, text, tok.convert_tokens_to_ids(IMAGE_TOKEN), use_hr_branch=True,
                                 hierarchical_labels=hierarchical_labels, **env.geo["eeca"])
    return cfg, tok


def image_processor(env: Env) -> CLIPImageProcessorPil:
    s = env.geo["vision"]["image_size"]
    return CLIPImageProcessorPil(size={"shortest_edge": s}, crop_size={"height": s, "width": s})


def llm_matmul_params(model) -> int:
    """N of the 6NT count: the LLM's decoder-layer parameters and the LM head (not the embedding lookup,
    not LoRA adapters)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = sum(p.numel() for n, p in base.model.language_model.named_parameters()
                 if "embed_tokens" not in n and "lora_" not in n)
    return layers + base.lm_head.weight.numel()


def shm_workers(wanted: int, batch_bytes: float) -> int:
    """DataLoader workers whose in-flight batches (2 per worker) fit in half of the free /dev/shm.

    Workers hand batches over through shared memory; a container's small /dev/shm would kill them
    with a bus error, so fewer workers run instead (the JSON says how many).
    """
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return wanted
    return max(0, min(wanted, int(free * 0.5 // (2 * batch_bytes))))


def score_settings() -> dict:
    """Batch, decode workers and similarity blocks of ``configs/paper/score.yaml`` (what ``eeca score`` runs)."""
    cfg = load_config(ScoreConfig, REPO / "src/eeca/configs/paper/score.yaml")
    # eeca.knowledge.rank's rule for name_block_size None: the widest block whose float32 result fits 256 MiB
    name_block = cfg.name_block_size or (256 * 2**20 // 4) // cfg.block_size
    return {"encode_batch": cfg.image_batch_size, "workers": min(cfg.num_workers, os.cpu_count() or 1),
            "rank": dict(FULL["rank"], block=cfg.block_size, name_block=name_block)}


# ---- 1. CLIP image encoding ---------------------------------------------------------------------
def part_clip_encode(env: Env, out: dict) -> None:
    geo = env.geo
    cfg = CLIPConfig(vision_config=geo["vision"], text_config=geo["clip_text"],
                     projection_dim=geo["vision"]["projection_dim"])
    clip = build_on(env, CLIPModel, cfg, env.dtype)
    processor = CLIPProcessor(image_processor=image_processor(env), tokenizer=tiny_tokenizer())
    paths, bs = env.images, geo["encode_batch"]
    # the eeca path cycles through the files so that every decode worker gets several batches
    # (steady state, not worker start-up); repeated files come from the page cache, decoding is redone
    cycled = [paths[i % len(paths)] for i in range(geo["encode_paths"])]
    flops = vit_image_flops(cfg.vision_config)
    side = geo["vision"]["image_size"]
    workers = shm_workers(geo["workers"], bs * 3 * side * side * 4)  # float32 pixel batches
    out.update(jpeg_files=len(paths), images_eeca_path=len(cycled), batch_size=bs, decode_workers=workers,
               gflops_per_image=round(flops / 1e9, 1))

    def rate(n: int, seconds: float) -> dict:
        ips = n / seconds
        return {"images_per_s": round(ips, 1), "mfu": mfu(ips * flops, env.peak_bf16), "seconds": round(seconds, 2)}

    # (a) the model alone: one pre-decoded batch, repeated
    pixels = processor.image_processor(images=[Image.open(p).convert("RGB") for p in paths[:bs]],
                                       return_tensors="pt")["pixel_values"].to(env.device, env.dtype)  # [bs, 3, S, S]
    n_batches = -(-len(cycled) // bs) // 2
    with torch.inference_mode():
        clip.get_image_features(pixel_values=pixels)  # warm-up
        sync(env)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            clip.get_image_features(pixel_values=pixels)
        sync(env)
    model_only = out["model_only"] = rate(n_batches * len(pixels), time.perf_counter() - t0)

    # (b) a plain HF loop over the files: PIL decode + processor + get_image_features, one process
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(paths), bs):
            images = [Image.open(p).convert("RGB") for p in paths[s:s + bs]]
            px = processor(images=images, return_tensors="pt")["pixel_values"].to(env.device, env.dtype)
            f = clip.get_image_features(pixel_values=px).pooler_output.float()
            (f / f.norm(dim=-1, keepdim=True)).cpu()
    sync(env)
    plain = out["plain_hf_files"] = rate(len(paths), time.perf_counter() - t0)

    # (c) eeca score's path: DataLoader decode workers, pinned memory, per-file error handling, and its
    # default fast image path (reduced-scale JPEG decoding, uint8 to the device, normalised there)
    t0 = time.perf_counter()
    res = encode_images(clip, processor, cycled, bs, workers, desc="clip encode", fast=True)
    sync(env)
    eeca = rate(len(res.index), time.perf_counter() - t0)
    if res.skipped or len(res.index) != len(cycled):
        raise RuntimeError(f"encode_images skipped {len(res.skipped)} of {len(cycled)} synthetic JPEGs")
    bound = "decode-bound" if eeca["images_per_s"] < 0.8 * model_only["images_per_s"] else "model-bound"
    out.update(eeca_encode_images=eeca, speedup_vs_plain=round(eeca["images_per_s"] / plain["images_per_s"], 2),
               verdict=f"{bound} (eeca path at {eeca['images_per_s'] / model_only['images_per_s']:.0%} "
                       f"of the model-only rate, {workers} decode workers)")


# ---- 2. streaming S / rank / RSR ------------------------------------------------------------------
def matmul_rate(env: Env, rows: int, cols: int, d: int, dtype: torch.dtype, tf32: bool, reps: int) -> float:
    """FLOP/s of ``[rows, d] @ [d, cols]`` in ``dtype`` (the shapes of one streaming block)."""
    a = torch.randn(rows, d, device=env.device).to(dtype)
    b = torch.randn(cols, d, device=env.device).to(dtype)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        for _ in range(2):
            a @ b.T
        sync(env)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b.T
        sync(env)
        return 2 * rows * cols * d * reps / (time.perf_counter() - t0)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def part_streaming_rank(env: Env, deadline: float, out: dict) -> None:
    """``streaming_ranks`` (S, rank; RSR from rank) on N x M x d, then ``streaming_scores`` (+ top-1, what
    ``eeca score`` writes) when time is left; each on all N when it fits the cap, else on whole blocks."""
    g = env.geo["rank"]
    n, m, d, blk, nblk = g["n"], g["m"], g["d"], g["block"], g["name_block"]
    gen = torch.Generator(device=env.device).manual_seed(0)

    def unit(rows: int) -> torch.Tensor:  # [rows, d] random unit vectors, stored in half precision
        x = torch.randn(rows, d, device=env.device, generator=gen)
        return (x / x.norm(dim=1, keepdim=True)).to(env.dtype)

    names = unit(m)
    images = torch.cat([unit(min(blk * 16, n - s)) for s in range(0, n, blk * 16)])  # [n, d]
    gt = torch.randint(0, m, (n,), generator=torch.Generator().manual_seed(0))
    out.update(rows_target=n, names=m, dim=d, block_size=blk, name_block_size=nblk)

    def ranks(rows: int):  # the paper's S, rank and RSR
        _s_gt, rank = streaming_ranks(images[:rows], names, gt[:rows], block_size=blk, name_block_size=nblk)
        return rank, rsr_from_rank(rank, m)

    def scores(rows: int):  # eeca score's pass: S, rank, RSR and top-1
        r = streaming_scores(images[:rows], names, gt[:rows], block_size=blk, name_block_size=nblk)
        return r.rank, r.rsr

    def timed(fn, rows: int):
        sync(env)
        t0 = time.perf_counter()
        rank, _ = fn(rows)
        sync(env)
        return time.perf_counter() - t0, rank

    def fitting_rows(per_image: float, share: float) -> int:
        """All N when ``share`` of the time left covers them, else the whole blocks that fit."""
        budget = max(deadline - time.monotonic() - 5.0, 1.0) * share
        return n if per_image * n <= budget else min(n, max(blk, int(budget / per_image) // blk * blk))

    pilot = min(n, blk * 8)
    timed(ranks, pilot)  # warm-up (allocator, kernels)
    t_pilot, _ = timed(ranks, pilot)
    out.update(pilot_rows=pilot, pilot_s=round(t_pilot, 3))
    fp32 = matmul_rate(env, blk, nblk, d, torch.float32, tf32=False, reps=50)
    half = matmul_rate(env, blk, nblk, d, env.dtype, tf32=False, reps=50)
    out.update({"plain_matmul_fp32_tflops": round(fp32 / 1e12, 3),
                f"plain_matmul_{str(env.dtype).split('.')[-1]}_tflops": round(half / 1e12, 3),
                "note": "fp32 products with TF32 off (exact ranks, see eeca.knowledge.rank); "
                        "projections scale the measured time per image linearly"})

    rows = fitting_rows(t_pilot / pilot, 0.5)  # half the time left: streaming_scores runs after it
    seconds, rank = timed(ranks, rows)
    flops = 2.0 * rows * m * d
    eff = flops / seconds
    bw_floor = 8.0 * rows * m / env.bandwidth if env.bandwidth else None  # write + read each fp32 similarity once
    out.update({"shape": f"{rows} x {m} x {d}", "rows_run": rows, "fraction_run": round(rows / n, 4),
                "seconds": round(seconds, 2), "effective_tflops": round(eff / 1e12, 3),
                "vs_plain_fp32_matmul": round(eff / fp32, 3), "fp32_peak_fraction": mfu(eff, env.peak_fp32),
                "matmul_floor_s": round(flops / fp32, 2),
                "bandwidth_floor_s": None if bw_floor is None else round(bw_floor, 2),
                "projected_s_target": round(seconds / rows * n, 1),
                "projected_s_gldv2": round(seconds / rows * g["project_n"], 1), "gldv2_images": g["project_n"]})

    # spot check against the definition in float64: a name within 1e-5 of the ground truth's similarity
    # may fall on either side under float32 rounding, so the rank must lie in [lo, hi]
    spot = torch.linspace(0, rows - 1, min(256, rows)).long()  # [s] rows spread over the run
    sims = images[spot.to(env.device)].double() @ names.double().T  # [s, M]
    s_gt = sims[torch.arange(len(spot)), gt[spot].to(env.device)][:, None]  # [s, 1]
    lo = 1 + (sims > s_gt + 1e-5).sum(1).cpu()
    hi = (sims > s_gt - 1e-5).sum(1).cpu()  # 1 + count - 1: the ground truth itself is in the band
    outside = int(((rank[spot] < lo) | (rank[spot] > hi)).sum())
    out.update(spot_check_rows=len(spot), spot_check_ranks_outside_float64_band=outside)
    del sims

    rows_s = fitting_rows(seconds / rows, 0.8)
    seconds_s, _ = timed(scores, rows_s)
    out.update({"scores_rows_run": rows_s, "scores_seconds": round(seconds_s, 2),
                "scores_effective_tflops": round(2.0 * rows_s * m * d / seconds_s / 1e12, 3),
                "scores_projected_s_gldv2": round(seconds_s / rows_s * g["project_n"], 1)})


# ---- 3. stage-3 training step -----------------------------------------------------------------------
class StepTimer(TrainerCallback):
    """Wall time between consecutive optimizer steps (data loading included); step 1 is the warm-up."""

    def __init__(self, env: Env):
        self.env, self.ends = env, []

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.env)
        self.ends.append(time.perf_counter())


def training_records(env: Env, folder: Path, n: int) -> Path:
    """``n`` MGLD-style stage-3 records (one image, entities, hierarchical label, ~text_tokens of text)."""
    rng = np.random.default_rng(0)
    answer_words = env.geo["text_tokens"] - 14  # the chat template and the question take ~14 tokens
    records = [{"id": f"r{i}", "image": env.images[i % len(env.images)].name,
                "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\nwhat is this landmark ?"},
                                  {"from": "gpt", "value": " ".join(rng.choice(WORDS, answer_words))}],
                "entities": ENTITIES, "hierarchical_label": LABELS[i % len(LABELS)]} for i in range(n)]
    path = folder / "records.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def train_once(env: Env, llm: str, lora: bool, batch: int) -> dict:
    """One stage-3 run of ``train_steps`` optimizer steps through the recipe's own pieces."""
    steps, on_gpu = env.geo["train_steps"], env.device.type == "cuda"
    side = env.geo["vision"]["image_size"]
    workers = shm_workers(env.geo["train_workers"], batch * 5 * 3 * side * side * 4)  # LR + 4 HR crops, float32
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()  # this attempt's peak, not an earlier out-of-memory one's
    work = Path(tempfile.mkdtemp(dir=env.tmp))
    data = training_records(env, work, batch * steps)
    cfg = load_config(TrainConfig, REPO / "src/eeca/configs/paper/stage3.yaml", [
        f"output_dir={work / 'out'}", f"data.path={data}", f"data.image_root={env.images[0].parent}",
        "data.eval_path=null", "data.chat_template=tokenizer", f"lora.enabled={str(lora).lower()}",
        "optim.deepspeed=null", f"optim.max_steps={steps}", f"optim.per_device_train_batch_size={batch}",
        "optim.save_steps=1000000", f"optim.logging_steps={steps}", f"optim.bf16={str(on_gpu).lower()}",
        f"optim.dataloader_num_workers={workers}"])
    records = read_records(cfg.data.path)
    labels = build_label_vocabulary(records)
    config, tok = eeca_config(env, llm, labels)
    # LoRA: frozen base in bf16, fp32 adapters (PEFT's default upcast); full fine-tune: fp32 master weights
    # under the Trainer's bf16 autocast, as mixed-precision training keeps them
    model = build_on(env, EecaForConditionalGeneration, config, env.dtype if lora else torch.float32)
    processor = processor_for(config, image_processor(env), tok)
    dataset = LlavaJsonDataset(records, processor, cfg.data, tok.chat_template, labels, str(data))
    counts = set_trainable(model, cfg.trainable, cfg.freeze)
    model.enable_input_require_grads()  # frozen embeddings would otherwise cut the checkpointed graph
    if lora:
        model = apply_lora(model, cfg)
    timer = StepTimer(env)
    trainer = EecaTrainer(model=model, args=training_arguments(cfg, False), train_dataset=dataset,
                          data_collator=LlavaCollator(tok.pad_token_id), callbacks=[timer])
    out = trainer.train()
    seq = len(dataset[0]["input_ids"])
    step_s = float(np.mean(np.diff(timer.ends)))  # steps 2..n
    tokens = batch * seq
    n_llm = llm_matmul_params(trainer.model)
    vis = vit_image_flops(config.vision_config) * batch * (1 + config.hr_grid**2)
    flops = 6 * n_llm * tokens + vis
    trained = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    log = [e for e in trainer.state.log_history if "loss" in e]
    return {"batch_size": batch, "dataloader_workers": workers, "seq_len": seq, "visual_tokens": config.num_visual_tokens,
            "images_per_sample": 1 + config.hr_grid**2, "step_s": round(step_s, 3),
            "tokens_per_s": round(tokens / step_s, 1), "samples_per_s": round(batch / step_s, 2),
            "llm_matmul_params": n_llm, "trainable_params": trained,
            "trainable_by_group_before_lora": counts, "mfu": mfu(flops / step_s, env.peak_bf16),
            "mfu_formula": "(6 * llm_matmul_params * batch * seq_len + vision_fwd_flops * batch * 5) / step_s / peak_bf16",
            "loss_terms_logged": sorted(k for k in (log[-1] if log else {}) if k.startswith("loss")),
            "train_loss": out.training_loss,
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if on_gpu else None}


def part_train(env: Env, llm: str, lora: bool, out: dict) -> None:
    """``train_once`` at the paper's per-device batch, halved on out-of-memory until it fits."""
    batch = env.geo["train_batch"]
    out["batches_out_of_memory"] = []
    while True:
        try:
            out.update(train_once(env, llm, lora, batch))
            return
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            out["batches_out_of_memory"].append(batch)
        free_memory()  # outside the except block: the traceback no longer holds the failed step's tensors
        batch //= 2


# ---- 4. k = 5 generation ------------------------------------------------------------------------------
def part_generate(env: Env, out: dict) -> None:
    g = env.geo["gen"]
    config, tok = eeca_config(env, "llm_1b")
    model = build_on(env, EecaForConditionalGeneration, config, env.dtype)
    processor = processor_for(config, image_processor(env), tok)
    processor.tokenizer.padding_side = "left"
    prompt = build_prompt(processor, f"{IMAGE_TOKEN}\nwhat is this landmark ?")
    images = [Image.open(p).convert("RGB") for p in env.images[:g["prompts"]]]
    prompt_tokens = processor(images=images[:1], text=[prompt], return_tensors="pt")["input_ids"].shape[1]
    ids = [f"q{i}" for i in range(len(images))]
    dtype_name = str(env.dtype).split(".")[-1]
    cfg = GenerateConfig(model=Path("."), test_json=Path("."), image_root=Path("."), k=g["k"],
                         max_new_tokens=g["new_tokens"], batch_size=len(images), dtype=dtype_name)

    def batched(c: GenerateConfig) -> float:
        sync(env)
        t0 = time.perf_counter()
        answers = generate_batch(model, processor, [prompt] * len(images), images, ids, c)
        sync(env)
        assert len(answers) == len(images) and all(len(a) == c.k for a in answers)
        return time.perf_counter() - t0

    batched(dataclasses.replace(cfg, max_new_tokens=2))  # warm-up
    t_batched = batched(cfg)
    tok_batched = len(images) * g["k"] * g["new_tokens"]
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bound = (lambda r: round(r * env.bandwidth / weight_bytes, 1)) if env.bandwidth else (lambda r: None)
    out.update({"k": g["k"], "new_tokens": g["new_tokens"], "prompt_tokens": prompt_tokens,
                "batched_prompts": len(images), "batched_tokens_per_s": round(tok_batched / t_batched, 1),
                "batched_seconds": round(t_batched, 2), "weight_gb": round(weight_bytes / 1e9, 2),
                "weight_read_bound_tokens_per_s_batched": bound(len(images) * g["k"]),
                "weight_read_bound_tokens_per_s_naive": bound(1),
                "note": "batched tokens count B*k*new_tokens decode slots (random weights never emit EOS in practice)"})

    def naive(n_prompts: int, new_tokens: int) -> float:
        sync(env)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for img in images[:n_prompts]:
                inputs = processor(images=[img], text=[prompt], return_tensors="pt").to(env.device)
                inputs = {k: v.to(env.dtype) if v.is_floating_point() else v for k, v in inputs.items()}
                for _ in range(g["k"]):
                    model.generate(**inputs, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                                   max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=tok.pad_token_id)
        sync(env)
        return time.perf_counter() - t0

    naive(1, 2)  # warm-up
    t_naive = naive(g["naive_prompts"], g["new_tokens"])
    tok_naive = g["naive_prompts"] * g["k"] * g["new_tokens"]
    out.update({"naive_sequences": g["naive_prompts"] * g["k"], "naive_tokens_per_s": round(tok_naive / t_naive, 1),
                "naive_seconds": round(t_naive, 2),
                "speedup": round((tok_batched / t_batched) / (tok_naive / t_naive), 2)})


# ---- running the parts ------------------------------------------------------------------------------
def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def time_cap(seconds: int):
    """Raise PartTimeout in the main thread after ``seconds`` (SIGALRM; the part is abandoned there)."""
    def _raise(signum, frame):
        raise PartTimeout(f"ran past its {seconds} s cap")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_part(name: str, fn, env: Env, cap: int) -> dict:
    free_memory()
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    record: dict = {"cap_s": cap, "metrics": {}}  # a part fills metrics as it goes: a failure keeps what it measured
    try:
        with time_cap(cap):
            fn(record["metrics"])
            record["status"] = "ok"
    except torch.OutOfMemoryError as e:
        record.update(status="oom", error=str(e).splitlines()[0])
    except PartTimeout as e:
        record.update(status="timeout", error=str(e))
    except Exception as e:  # a broken part is recorded and the next one still runs
        record.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=6))
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    if env.device.type == "cuda":
        record["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    free_memory()
    print(f"[{name}] {record['status']} in {record['wall_s']} s", flush=True)
    return record


def environment(env: Env) -> dict:
    import accelerate
    import peft

    name = torch.cuda.get_device_name() if env.device.type == "cuda" else platform.processor() or "cpu"
    return {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "cpu_count": os.cpu_count(), "dtype": str(env.dtype),
            "shm_free_gb": round(shutil.disk_usage("/dev/shm").free / 1e9, 1) if Path("/dev/shm").exists() else None,
            "peak_bf16_dense_tflops": env.peak_bf16 and env.peak_bf16 / 1e12,
            "peak_fp32_tflops": env.peak_fp32 and env.peak_fp32 / 1e12,
            "memory_bandwidth_tbps": env.bandwidth and env.bandwidth / 1e12}


def headline(name: str, m: dict) -> str:
    """One line of the table per part."""
    pct = lambda x: "n/a" if x is None else f"{x:.1%}"  # noqa: E731
    if name == "clip_encode":
        return (f"eeca {m['eeca_encode_images']['images_per_s']} img/s (MFU {pct(m['eeca_encode_images']['mfu'])}); "
                f"plain HF {m['plain_hf_files']['images_per_s']} img/s; model only {m['model_only']['images_per_s']} "
                f"img/s (MFU {pct(m['model_only']['mfu'])}); {m['verdict']}")
    if name == "streaming_rank":
        return (f"{m['shape']} in {m['seconds']} s = {m['effective_tflops']} TFLOP/s "
                f"({m['vs_plain_fp32_matmul']:.0%} of plain fp32 matmul {m['plain_matmul_fp32_tflops']}); "
                f"{m['rows_target']} -> {m['projected_s_target']} s, {m['gldv2_images']} -> {m['projected_s_gldv2']} s; "
                f"with top-1 (eeca score) {m['scores_effective_tflops']} TFLOP/s, {m['gldv2_images']} -> "
                f"{m['scores_projected_s_gldv2']} s")
    if name.startswith("train"):
        return (f"batch {m['batch_size']} x {m['seq_len']} tok: {m['tokens_per_s']} tok/s, {m['step_s']} s/step, "
                f"MFU {pct(m['mfu'])}, losses {','.join(m['loss_terms_logged'])}")
    return (f"batched {m['batched_tokens_per_s']} tok/s vs naive {m['naive_tokens_per_s']} tok/s "
            f"(x{m['speedup']}), k={m['k']}, {m['new_tokens']} new tokens")


def gaps(env: dict, parts: dict) -> list[str]:
    """One sentence per measured figure: how far it is from the card's limit (matrix rate, bandwidth)."""
    pct = lambda x: "n/a" if x is None else f"{x:.0%}"  # noqa: E731
    bf16, fp32, bw = env["peak_bf16_dense_tflops"], env["peak_fp32_tflops"], env["memory_bandwidth_tbps"]
    ok = {k: v["metrics"] for k, v in parts.items() if v["status"] == "ok"}
    out = []
    if "clip_encode" in ok:
        m = ok["clip_encode"]
        out.append(f"CLIP encoding: the model alone runs at {pct(m['model_only']['mfu'])} of the {bf16} TFLOP/s bf16 "
                   f"peak ({m['gflops_per_image']} GFLOPs/image); eeca score's file path at "
                   f"{pct(m['eeca_encode_images']['mfu'])}, {m['verdict']}.")
    if "streaming_rank" in ok:
        m = ok["streaming_rank"]
        out.append(f"Streaming rank: {m['effective_tflops']} TFLOP/s is {pct(m['fp32_peak_fraction'])} of the "
                   f"{fp32} TFLOP/s fp32 peak and {pct(m['vs_plain_fp32_matmul'])} of a plain fp32 matmul of its block "
                   f"shape here; {m['seconds']} s against a matmul floor of {m['matmul_floor_s']} s and a "
                   f"bandwidth floor of {m['bandwidth_floor_s']} s ({bw} TB/s).")
    work = {"train_8b_lora": ("Llama-3-8B LoRA", "for LoRA with gradient checkpointing that is the work done: "
                              "forward, recomputed forward, input gradients, no weight gradients of the frozen base"),
            "train_1b_full": ("1B full fine-tune", "gradient checkpointing recomputes the forward, so the card "
                              "does about 8/6 of that work")}
    for name, (what, why) in work.items():
        if name in ok:
            m = ok[name]
            out.append(f"{what} stage-3 step: MFU {pct(m['mfu'])} of {bf16} TFLOP/s by the 6NT convention ({why}); "
                       f"peak memory {m['peak_memory_gb']} GB at batch {m['batch_size']}.")
    if "generate_k5" in ok:
        m = ok["generate_k5"]
        out.append(f"k = 5 generation: batched {m['batched_tokens_per_s']} tokens/s against a weight-read bound of "
                   f"{m['weight_read_bound_tokens_per_s_batched']} ({m['weight_gb']} GB of weights per decode step at "
                   f"{bw} TB/s), naive {m['naive_tokens_per_s']} against {m['weight_read_bound_tokens_per_s_naive']}.")
    return out


def markdown(report: dict, command: str, table: str) -> str:
    """The RESULTS.md section of one run: card, date, command, table and the gap sentences."""
    env = report["env"]
    lines = [f"## {env['device']}, {time.strftime('%Y-%m-%d', time.gmtime())}", "",
             f"`{command}` (torch {env['torch']}, transformers {env['transformers']}, CUDA {env['cuda']}, "
             f"{env['cpu_count']} CPUs; total {report['total_s']} s)", "", "```", table, "```", ""]
    return "\n".join(lines + [f"- {g}" for g in gaps(env, report["parts"])]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu-check.json", help="results JSON")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (the test of this script)")
    ap.add_argument("--parts", nargs="*", default=None, choices=sorted(SMOKE["caps"]),
                    help="run only these parts (default: all)")
    ap.add_argument("--markdown", default=None, help="also write the run as a RESULTS.md section here")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    on_gpu = torch.cuda.is_available() and not a.smoke
    device = torch.device("cuda" if on_gpu else "cpu")
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True  # model matmuls; eeca.knowledge.rank turns it off for ranks
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name() if on_gpu else ""
    peaks = next((p[1:] for p in PEAKS if p[0] in name), (None, None, None))
    geo = SMOKE if a.smoke else dict(FULL, **score_settings())
    if a.smoke:
        torch.set_num_threads(1)  # toy shapes: threads only add contention on a shared CPU
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="eeca-gpu-check-") as tmp:
        t0 = time.perf_counter()
        images = write_jpegs(Path(tmp) / "images", geo["images"], geo["vision"]["image_size"])
        env = Env(geo, device, torch.bfloat16 if on_gpu else torch.float32, *peaks, images, Path(tmp))
        info = environment(env)
        info["jpeg_write_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(info, indent=1), flush=True)
        parts = {
            "clip_encode": lambda out: part_clip_encode(env, out),
            "streaming_rank": lambda out: part_streaming_rank(env, time.monotonic() + geo["caps"]["streaming_rank"], out),
            "train_8b_lora": lambda out: part_train(env, "llm_8b", True, out),
            "train_1b_full": lambda out: part_train(env, "llm_1b", False, out),
            "generate_k5": lambda out: part_generate(env, out),
        }
        results = {}
        for part, fn in parts.items():
            if a.parts is None or part in a.parts:
                results[part] = run_part(part, fn, env, geo["caps"][part])
    report = {"env": info, "smoke": a.smoke, "parts": results, "total_s": round(time.perf_counter() - t_start, 1)}
    write_json(Path(a.out), report)
    rows = [f"{'part':<15} {'status':<8} {'wall s':>7}  result"]
    for part, r in results.items():
        line = headline(part, r["metrics"]) if r["status"] == "ok" else r["error"]
        rows.append(f"{part:<15} {r['status']:<8} {r['wall_s']:>7}  {line}")
    table = "\n".join(rows)
    print("\n" + table + "\n\n" + "\n".join(gaps(info, results)))
    if a.markdown:
        command = "python benchmarks/gpu/check.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(a.markdown).write_text(markdown(report, command, table), encoding="utf-8")
    print(f"\n{info['device']}, torch {info['torch']}, transformers {info['transformers']}; "
          f"total {report['total_s']} s -> {a.out}")
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
