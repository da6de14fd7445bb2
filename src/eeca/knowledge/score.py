"""``eeca score``: S and RSR of every image against all landmark names (paper section 3.1).

Reads ``images.parquet`` (rows with status ``ok``) and ``landmarks.parquet`` (DESIGN section 3),
embeds every image and every landmark name with a CLIP model (:mod:`eeca.knowledge.encode`) and
ranks each image's ground-truth name among all names (:mod:`eeca.knowledge.rank`). Writes under OUT:

* ``emb/image-NNNNN.npy`` (float16, L2-normalised) + ``emb/image-NNNNN.parquet`` (id, landmark_id in
  the same order); ``emb/name-NNNNN.npy`` + ``emb/name-NNNNN.parquet`` (landmark_id, text);
* ``scores.parquet``: id, landmark_id, s_gt float32, rank int64, rsr float64, top1_landmark_id,
  top1_sim float32; row order = input order, skipped images left out;
* ``skipped.csv`` (id, path, reason) and ``score_summary.json``.

Images are read by :mod:`eeca.images` (paths confined to ``image_root`` after resolving links, the
pixel and byte limits of ``ScoreConfig.images``); with ``fast_images`` (the default) JPEGs are
decoded at reduced scale (:mod:`eeca.knowledge.encode`). A run in which no image could be scored is
an :class:`~eeca.io.InputError` (a wrong ``image_root`` makes every file "missing"), not a success.

Resume: work is cut into shards of ``shard_size`` rows. A shard's ``.parquet`` is written last and
atomically, so it marks the shard finished and a rerun skips it; a shard killed half-way is simply
redone, and since its batches are the same the result is identical. A finished shard with "missing
file" skips is redone when one of those files now exists (after a wrong ``image_root``, or a
download that was completed), so no skip of a missing file is permanent. ``emb/run.json``
fingerprints the model, template, dtype, shard size, image path and limits, and the inputs, and a
rerun with different ones is refused rather than mixed with old shards.

Many processes (``accelerate launch -m eeca score ...``): shard k belongs to process
``k % num_processes``. Each process embeds its name and image shards, waits for the others, ranks
its own image shards against all names into ``parts/scores-NNNNN.parquet``, and the main process
merges the parts in shard order. One process or eight, the files are the same.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import torch
from accelerate import PartialState
from tqdm import tqdm

from eeca.config import dump_config, from_dict, load_config, to_dict
from eeca.images import MISSING_FILE, ImageLimits
from eeca.io import (
    InputError,
    atomic_path,
    check_checkpoint,
    read_json,
    read_parquet,
    run_lock,
    write_json,
    write_parquet,
)
from eeca.knowledge.encode import encode_images, encode_texts, load_clip
from eeca.knowledge.rank import streaming_scores

SCORES_SCHEMA = pa.schema([("id", pa.string()), ("landmark_id", pa.int64()), ("s_gt", pa.float32()),
                           ("rank", pa.int64()), ("rsr", pa.float64()), ("top1_landmark_id", pa.int64()),
                           ("top1_sim", pa.float32())])
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ScoreConfig:
    """How ``eeca score`` embeds and ranks (paths to the data are command arguments)."""

    model: str  # a local CLIPModel + CLIPProcessor folder, or a hub id
    image_batch_size: int = 64
    text_batch_size: int = 256
    num_workers: int = 2  # DataLoader processes decoding images
    block_size: int = 4096  # images per similarity block (eeca.knowledge.rank)
    name_block_size: int | None = None  # names per similarity block; None = automatic
    name_template: str = "{name}"  # text given to CLIP for a landmark; {name} is its name
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    shard_size: int = 50_000  # rows per embedding shard: the unit of resume and of work split
    local_files_only: bool = False  # load `model` from disk only (as HF_HUB_OFFLINE=1 does)
    fast_images: bool = True  # reduced-scale JPEG decoding, uint8 to the device (False: the processor's exact path)
    images: ImageLimits = ImageLimits()  # pixel and byte limits per image file (larger ones are skips)

    def __post_init__(self):
        for name in ("image_batch_size", "text_batch_size", "block_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.name_block_size is not None and self.name_block_size < 1:
            raise ValueError(f"name_block_size must be >= 1, got {self.name_block_size}")
        if "{name}" not in self.name_template:
            raise ValueError(f"name_template must contain '{{name}}', got {self.name_template!r}")
        try:
            self.name_template.format(name="x")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"name_template {self.name_template!r} is not a format string with only "
                             f"{{name}}: {e}") from None

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return _DTYPES[self.dtype]


def score_command(images: str, landmarks: str, image_root: str, out: str, config: str | None = None,
                  model: str | None = None, overrides: list[str] | None = None) -> int:
    """Score every image: CLIP similarity S to its landmark name and its RSR among all names.

    Args:
        images: images.parquet from `eeca gldv2 ingest` (rows with status ok are scored).
        landmarks: landmarks.parquet from `eeca gldv2 ingest` (every name is a candidate).
        out: output folder (emb/, parts/, scores.parquet, skipped.csv, score_summary.json).
        image_root: the GLDv2 root the image paths are relative to (ROOT of `eeca gldv2 ingest`).
        config: a ScoreConfig YAML (configs/synth/score.yaml, configs/paper/score.yaml).
        model: CLIP model folder or hub id (overrides the config's model).
        overrides: config overrides, e.g. image_batch_size=256 num_workers=8.
    """
    overrides = list(overrides or []) + ([f"model={model}"] if model else [])
    cfg = (load_config(ScoreConfig, config, overrides) if config
           else from_dict(ScoreConfig, {}, source="<command line>", overrides=overrides))
    with run_lock(out, "score"):
        summary = run_score(cfg, Path(images), Path(landmarks), Path(image_root), Path(out))
    if summary is not None:
        skipped = ", ".join(f"{n} {r}" for r, n in summary["skipped_by_reason"].items()) or "none"
        print(f"eeca score: {summary['scored']} images scored against {summary['names']} names "
              f"({summary['names_truncated']} truncated); skipped {summary['skipped']} ({skipped}); "
              f"{summary['not_ok_status']} rows without status ok; shards encoded "
              f"{summary['shards_encoded']}, reused {summary['shards_reused']}; "
              f"median RSR {summary['median_rsr']:.3f} -> {out}/scores.parquet")
    return 0


def run_score(cfg: ScoreConfig, images_path: Path, landmarks_path: Path, image_root: Path,
              out: Path) -> dict | None:
    """Run the whole stage in this process's share; returns the summary on the main process."""
    state = PartialState()
    t0 = time.time()
    names, lm_ids = _read_landmarks(landmarks_path)
    img = _read_images(images_path)
    gt_of = {int(lid): i for i, lid in enumerate(lm_ids)}
    emb_dir, parts_dir = out / "emb", out / "parts"
    n_image_shards = len(_shards(len(img["id"]), cfg.shard_size))
    reused = sum((emb_dir / f"image-{k:05d}.parquet").exists() for k in range(n_image_shards))
    if reused < n_image_shards or not (emb_dir / "name-00000.parquet").exists():  # the model is needed
        check_checkpoint(cfg.model, "model", cfg.local_files_only)  # before anything is written
    if state.is_main_process:
        _check_fingerprint(emb_dir / "run.json", cfg, img, lm_ids, names)
        for k in range(n_image_shards):
            _reopen_if_files_appeared(emb_dir, parts_dir, k, image_root)
    state.wait_for_everyone()
    reused = sum((emb_dir / f"image-{k:05d}.parquet").exists() for k in range(n_image_shards))

    device = state.device
    model = functools.cache(lambda: load_clip(cfg.model, cfg.torch_dtype(device), device,  # only if needed
                                              cfg.local_files_only))
    mine = lambda k: k % state.num_processes == state.process_index  # noqa: E731

    name_shards = _shards(len(names), cfg.shard_size)
    for k, (s, e) in enumerate(name_shards):
        marker = emb_dir / f"name-{k:05d}.parquet"
        if not mine(k) or marker.exists():
            continue
        texts = [cfg.name_template.format(name=n) for n in names[s:e]]
        clip, processor = model()
        emb, n_trunc = encode_texts(clip, processor, texts, cfg.text_batch_size, desc=f"name shard {k}")
        _write_shard(emb_dir, f"name-{k:05d}", emb, {"landmark_id": lm_ids[s:e], "text": texts},
                     {"truncated": n_trunc})

    ids, paths, lids = img["id"], img["path"], img["landmark_id"]
    image_shards = _shards(len(ids), cfg.shard_size)
    for k, (s, e) in enumerate(image_shards):
        marker = emb_dir / f"image-{k:05d}.parquet"
        if not mine(k) or marker.exists():
            continue
        todo, pre_skips = [], []  # positions in the shard to decode; (position, reason) not to
        for j in range(s, e):
            if lids[j] not in gt_of:
                pre_skips.append((j - s, f"landmark_id not in landmarks.parquet ({lids[j]})"))
            else:
                todo.append(j - s)
        clip, processor = model()
        res = encode_images(clip, processor, [paths[s + j] for j in todo], cfg.image_batch_size,
                            cfg.num_workers, desc=f"image shard {k}/{len(image_shards)}", root=image_root,
                            limits=cfg.images, fast=cfg.fast_images)
        rows = [s + todo[i] for i in res.index]
        skips = sorted(pre_skips + [(todo[i], r) for i, r in res.skipped])
        _write_shard(emb_dir, f"image-{k:05d}", res.emb,
                     {"id": [ids[r] for r in rows], "landmark_id": [lids[r] for r in rows]},
                     {"skipped": [[ids[s + j], paths[s + j], r] for j, r in skips]})
    clip = processor = None
    model.cache_clear()  # free the towers before ranking
    state.wait_for_everyone()

    name_emb = torch.from_numpy(np.concatenate([np.load(emb_dir / f"name-{k:05d}.npy")
                                                for k in range(len(name_shards))])).to(device)  # [M, d]
    for k in tqdm(range(len(image_shards)), desc="rank", unit="shard", leave=False):
        part = parts_dir / f"scores-{k:05d}.parquet"
        if not mine(k) or part.exists():
            continue
        meta = read_parquet(emb_dir / f"image-{k:05d}.parquet")
        x = torch.from_numpy(np.load(emb_dir / f"image-{k:05d}.npy")).to(device)  # [n, d]
        shard_lids = meta.column("landmark_id").to_pylist()
        gt = torch.tensor([gt_of[lid] for lid in shard_lids], dtype=torch.int64)
        r = streaming_scores(x, name_emb, gt, block_size=cfg.block_size, name_block_size=cfg.name_block_size)
        write_parquet(part, pa.Table.from_pydict({
            "id": meta.column("id"), "landmark_id": shard_lids, "s_gt": r.s_gt.numpy(), "rank": r.rank.numpy(),
            "rsr": r.rsr.numpy(), "top1_landmark_id": np.asarray(lm_ids, np.int64)[r.top1_index.numpy()],
            "top1_sim": r.top1_sim.numpy()},
            schema=SCORES_SCHEMA))
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return _merge(out, len(name_shards), len(image_shards), img, len(names), reused, time.time() - t0)


def _merge(out: Path, n_name_shards: int, n_image_shards: int, img: dict, n_names: int, reused: int,
           seconds: float) -> dict:
    emb_dir = out / "emb"
    scores = pa.concat_tables([SCORES_SCHEMA.empty_table()] +
                              [read_parquet(out / "parts" / f"scores-{k:05d}.parquet")
                               for k in range(n_image_shards)])
    skipped = [row for k in range(n_image_shards)
               for row in read_json(emb_dir / f"image-{k:05d}.json")["skipped"]]
    truncated = sum(read_json(emb_dir / f"name-{k:05d}.json")["truncated"] for k in range(n_name_shards))
    write_parquet(out / "scores.parquet", scores)
    skip_table = pa.table({"id": [r[0] for r in skipped], "path": [r[1] for r in skipped],
                           "reason": [r[2] for r in skipped]},
                          schema=pa.schema([("id", pa.string()), ("path", pa.string()), ("reason", pa.string())]))
    with atomic_path(out / "skipped.csv") as tmp:
        pacsv.write_csv(skip_table, tmp)
    rsr = scores.column("rsr").to_numpy()
    summary = {
        "scored": scores.num_rows, "names": n_names, "names_truncated": truncated,
        "skipped": len(skipped), "skipped_by_reason": dict(sorted(Counter(_reason_kind(r[2]) for r in skipped).items())),
        "not_ok_status": img["not_ok"], "shards_encoded": n_image_shards - reused, "shards_reused": reused,
        "median_rsr": float(np.median(rsr)) if len(rsr) else float("nan"), "seconds": round(seconds, 2)}
    write_json(out / "score_summary.json", summary)
    if not scores.num_rows:
        kinds = ", ".join(f"{n} {r}" for r, n in summary["skipped_by_reason"].items()) or "no row with status ok"
        raise InputError(f"{out}: no image was scored ({kinds}; see {out / 'skipped.csv'}); is the image root right?")
    return summary


def _reason_kind(reason: str) -> str:
    """The reason without its per-file detail, for counting."""
    return reason.split(" (")[0]


def _shards(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _write_shard(emb_dir: Path, stem: str, emb: np.ndarray, columns: dict, meta: dict) -> None:
    """Embeddings, then side facts, then the id parquet last: its presence marks the shard done."""
    with atomic_path(emb_dir / f"{stem}.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, emb)
    write_json(emb_dir / f"{stem}.json", meta)
    write_parquet(emb_dir / f"{stem}.parquet", columns)


def _reopen_if_files_appeared(emb_dir: Path, parts_dir: Path, k: int, image_root: Path) -> None:
    """Mark image shard ``k`` unfinished (and drop its ranks) if a file it skipped as missing now exists."""
    marker = emb_dir / f"image-{k:05d}.parquet"
    if not marker.exists():
        return
    missing = [path for _, path, reason in read_json(emb_dir / f"image-{k:05d}.json")["skipped"]
               if reason == MISSING_FILE]
    if any((image_root / path).exists() for path in missing):
        marker.unlink()
        (parts_dir / f"scores-{k:05d}.parquet").unlink(missing_ok=True)


def _read_landmarks(path: Path) -> tuple[list[str], list[int]]:
    t = read_parquet(path, columns=["landmark_id", "name"])
    lm_ids = t.column("landmark_id").to_pylist()
    names = t.column("name").to_pylist()
    for i, (lid, name) in enumerate(zip(lm_ids, names, strict=True)):
        if lid is None or not isinstance(name, str) or not name.strip():
            raise ValueError(f"{path}: row {i}: landmark_id {lid!r} has no usable name ({name!r})")
    if len(set(lm_ids)) != len(lm_ids):
        dup = next(lid for lid, n in Counter(lm_ids).items() if n > 1)
        raise ValueError(f"{path}: field landmark_id: {dup} appears more than once")
    if not lm_ids:
        raise ValueError(f"{path}: no landmarks: there is nothing to rank against")
    return names, lm_ids


def _read_images(path: Path) -> dict:
    t = read_parquet(path, columns=["id", "landmark_id", "path", "status"])
    ok = t.filter(pc.equal(t.column("status"), "ok"))
    ids = ok.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise ValueError(f"{path}: field id: {dup!r} appears more than once")
    return {"id": ids, "landmark_id": ok.column("landmark_id").to_pylist(), "path": ok.column("path").to_pylist(),
            "not_ok": t.num_rows - ok.num_rows}


def _check_fingerprint(path: Path, cfg: ScoreConfig, img: dict, lm_ids: list[int], names: list[str]) -> None:
    """Refuse to resume over shards made from another model, template, dtype, sharding or input."""
    h = hashlib.sha256()
    for part in (img["id"], img["landmark_id"], img["path"], lm_ids, names):
        h.update(json.dumps(part).encode())
    keep = {k: v for k, v in to_dict(cfg).items()
            if k in ("model", "name_template", "dtype", "shard_size", "fast_images", "images")}
    fp = {"config": keep, "inputs_sha256": h.hexdigest()}
    if path.exists():
        old = read_json(path)
        if old != fp:
            raise ValueError(f"{path}: this output folder holds shards of a different run "
                             f"({old} != {fp}); use a new --out or delete it\nconfig:\n{dump_config(cfg)}")
        return
    write_json(path, fp)
