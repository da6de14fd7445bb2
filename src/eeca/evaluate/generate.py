"""k sampled answers per test question, reproducible per question (paper section 3.1, "Evaluation metric").

The paper generates five answers per MGLD test question and lets a judge rate them together; it
does not give the sampling parameters. Ours (``GenerateConfig``; defaults temperature 0.7, top-p
0.9, no top-k, 128 new tokens) are written into every output row as a hash and in full into
``generation_config.json`` beside the answers.

How a batch is generated (``generate_batch``):

1. The processor turns B questions and their images into one left-padded batch (whatever it
   returns, e.g. EECA's ``pixel_values_hr``, is passed to the model untouched).
2. One forward pass ("prefill") runs the vision tower(s) and the LLM over all B prompts except
   their last token; its key/value cache is repeated k times (``Cache.batch_repeat_interleave``).
   ``generate(num_return_sequences=k)`` would instead copy every prompt k times *before* the
   prefill and pay for it k times; here the k samples share it.
3. ``model.generate`` continues from that cache over the B*k rows. Its decoding is greedy over
   scores that :class:`PerRowSampler` has warped (temperature, top-p, top-k, HF's own warpers) and
   perturbed with Gumbel noise. argmax(log p + Gumbel) is an exact draw from p (the Gumbel-max
   trick), and the noise of row (id, j) comes from its own ``torch.Generator`` seeded by
   sha256(seed, id, j).

What is reproducible: the answers of question ``id`` depend on (model weights, prompt, config,
seed, id) and NOT on which other questions share its batch, the batch size, the chunk or process
that ran it, or whether the run was resumed. This holds exactly as long as the model's logits for
a row do not change with its batch; on CPU in float32 they do not (tested with batch sizes 1, 2
and 3). On a GPU, kernels chosen per batch shape can change a logit in its last bits, which flips
a token only at a near-tie of two perturbed scores; the random stream itself never changes.

Resumption and many processes: the test records are cut into ``num_chunks`` contiguous chunks
(times the processes of ``accelerate launch``, each taking its own share); each share appends to
its own ``parts/`` JSONL (``eeca.io.JsonlStore``), so a killed run continues where it stopped.
When every part is complete, ``generations.jsonl`` (DESIGN section 3), ``answers.jsonl`` (one
LLaVA ``model_vqa``-style line per sample) and ``skipped.jsonl`` are written in test-file order.

Images are read by :mod:`eeca.images` (confined to ``image_root`` after resolving links, pixel and
byte limits, every PIL mode to RGB); an unusable image is a skip with its reason in
``skipped.jsonl``. Skips are not final: a rerun tries every skipped record again (the image may
have been fixed or the root corrected). ``generation_config.json`` fingerprints everything the
answers depend on (model, sampling, image limits, ``image_root``, the test file's content); a rerun
with other values into a folder that holds answers is refused. A run in which every record was
skipped is an :class:`~eeca.io.InputError`, not a success.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from tqdm import tqdm

from eeca.config import InputPath, check_inputs, load_config, to_dict
from eeca.images import ImageError, ImageLimits, image_file, load_image
from eeca.io import (
    InputError,
    JsonlStore,
    atomic_write,
    check_checkpoint,
    read_json,
    read_jsonl,
    run_lock,
    write_json,
)
from eeca.mgld.questions import ENTITY_PROMPT, entity_prompt
from eeca.mgld.validate import checked_records

# Bumped whenever a change here changes which tokens a given seed produces.
SAMPLER_VERSION = "gumbel-per-row-v1"


@dataclass(frozen=True)
class GenerateConfig:
    """Generation of k answers per test question; the sampling values are ours (the paper gives none)."""

    model: Path  # (checked by io.check_checkpoint) a save_pretrained folder: LLaVA (llava-hf layout) or EECA, with its processor
    test_json: InputPath  # MGLD test records (DESIGN section 3), a JSON list
    image_root: InputPath  # record["image"] is relative to this folder
    k: int = 5
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 128
    batch_size: int = 8  # questions per forward pass; each becomes k rows while decoding
    seed: int = 0
    entity_prompt: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_question_chars: int = 4000  # a longer question (with its entities) is skipped, counted, never sent
    # how the decoding loop runs (not part of the hash: the answers are the same, see docs/evaluate.md):
    # "hf" = transformers' dynamic cache; "static" = a fixed-shape cache whose decoding step is
    # compiled with torch.compile when ``compile`` is true
    backend: Literal["hf", "static"] = "hf"
    compile: bool = True
    images: ImageLimits = ImageLimits()  # pixel and byte limits per image file (larger ones are skips)

    def __post_init__(self):
        if self.max_question_chars < 1:
            raise ValueError("max_question_chars must be >= 1")
        if self.k < 1:
            raise ValueError("k must be >= 1")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (sampling; the paper's judge needs k different answers)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("top_k must be >= 0, max_new_tokens and batch_size >= 1")

    def sampling(self) -> dict:
        """The values that decide the answers for a given model and question (batch size does not)."""
        return {"k": self.k, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed, "entity_prompt": self.entity_prompt,
                "entity_prompt_template": ENTITY_PROMPT if self.entity_prompt else None,
                "dtype": self.dtype, "sampler": SAMPLER_VERSION}

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.sampling(), sort_keys=True).encode()).hexdigest()[:16]


def row_seed(seed: int, record_id: str, j: int) -> int:
    """The seed of sample ``j`` of question ``record_id``: independent of batch and process."""
    digest = hashlib.sha256(f"{seed}\x00{record_id}\x00{j}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


class PerRowSampler:
    """A logits processor that makes greedy decoding draw row r from its own seeded random stream.

    Applies temperature, top-k and top-p with transformers' warpers, then adds Gumbel(0, 1) noise
    drawn from row r's generator; the argmax that greedy decoding takes is then a sample from the
    warped distribution (Gumbel-max), and filtered tokens (-inf) stay impossible.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float, top_k: int, device: torch.device):
        from transformers import (
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        warpers = [TemperatureLogitsWarper(temperature)]
        if top_k > 0:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        self.warpers = LogitsProcessorList(warpers)
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = self.warpers(input_ids, scores.float())  # (R, V)
        if scores.shape[0] != len(self.generators):
            raise RuntimeError(f"sampler made for {len(self.generators)} rows got {scores.shape[0]}")
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators])
        tiny = torch.finfo(u.dtype).tiny
        gumbel = -torch.log(-torch.log(u.clamp(min=tiny, max=1 - 1e-7)))  # (R, V)
        return scores + gumbel


def load_model(path: Path, dtype: str, device: torch.device):
    """Model and processor from a save_pretrained folder (llava-hf layout or EECA), offline."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import eeca.model  # noqa: F401  (registers the EECA classes with the Auto mappings)

    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"  # decoding appends on the right
    if processor.tokenizer.pad_token is None:
        raise InputError(f"{path}: the tokenizer has no pad token; batched generation needs one")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
    return model, processor


def build_prompt(processor, human_value: str) -> str:
    """The model's prompt for one user turn (``<image>\\n<question>``), via the chat template."""
    messages = [{"role": "user", "content": human_value}]
    if getattr(processor.tokenizer, "chat_template", None):
        return processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if getattr(processor, "chat_template", None):  # llava-hf: the template lives on the processor
        question = human_value.replace(processor.image_token, "").strip()
        content = [{"type": "image"}, {"type": "text", "text": question}]
        return processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    raise ValueError("neither the tokenizer nor the processor has a chat template; cannot build a prompt")


@torch.no_grad()
def generate_batch(model, processor, prompts: list[str], images: list[Image.Image], ids: list[str],
                   cfg: GenerateConfig) -> list[list[str]]:
    """k answers for each of B prompts, sharing one prefill per prompt (see the module docstring)."""
    from transformers import GenerationConfig, LogitsProcessorList

    device = model.device
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    inputs = {name: t.to(device) for name, t in inputs.items()}
    input_ids = inputs.pop("input_ids")  # (B, T), left padded
    attention_mask = inputs.pop("attention_mask")  # (B, T)
    for name, t in inputs.items():  # pixel inputs follow the model's dtype
        if t.is_floating_point():
            inputs[name] = t.to(model.dtype)
    image_token_id = getattr(model.config, "image_token_id", None)
    if image_token_id is not None and (input_ids[:, -1] == image_token_id).any():
        raise ValueError("a prompt ends with an image placeholder; the shared prefill needs text after the image")
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T); pads sit at 0
    # Prefill all but the last prompt token: generate() then feeds that token against the cache.
    out = model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                position_ids=position_ids[:, :-1], use_cache=True, **inputs)
    cache = out.cache
    cache.batch_repeat_interleave(cfg.k)  # (B*k) rows, row b*k + j = sample j of prompt b
    compile_config = None  # None: generate() compiles nothing (a dynamic cache is never compiled anyway)
    if cfg.backend == "static":
        # rounded up, so that batches whose prompts differ a little in length reuse one compiled step
        max_cache_len = -(-(input_ids.shape[1] - 1 + cfg.max_new_tokens) // 64) * 64
        cache, compile_config = static_decoding_cache(model, cache, max_cache_len, cfg.compile)
    seeds = [row_seed(cfg.seed, i, j) for i in ids for j in range(cfg.k)]
    sampler = PerRowSampler(seeds, cfg.temperature, cfg.top_p, cfg.top_k, device)
    tok = processor.tokenizer
    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.pad_token_id,
                               eos_token_id=model.generation_config.eos_token_id or tok.eos_token_id,
                               compile_config=compile_config, disable_compile=compile_config is None)
    sequences = model.generate(input_ids=input_ids.repeat_interleave(cfg.k, 0),
                               attention_mask=attention_mask.repeat_interleave(cfg.k, 0), cache=cache,
                               generation_config=gen_cfg, logits_processor=LogitsProcessorList([sampler]))
    texts = tok.batch_decode(sequences[:, input_ids.shape[1]:], skip_special_tokens=True)  # (B*k)
    return [[t.strip() for t in texts[b * cfg.k:(b + 1) * cfg.k]] for b in range(len(prompts))]


def static_decoding_cache(model, cache, max_cache_len: int, compile: bool):
    """The ``static`` backend: the prefill's key/value cache copied into a ``StaticCache`` of fixed
    shape [B*k, heads, max_cache_len, head_dim], and the settings under which ``model.generate``
    compiles its one-token decoding step with ``torch.compile`` (None with ``compile`` off).

    ``generate`` compiles the step by itself for a static cache on a GPU; on a CPU only when asked,
    which this does. Fixed shapes are what let the compiled step (CUDA graphs on a GPU) replay
    without recompiling for every new length; the prefill is never compiled.
    """
    from transformers import CompileConfig, StaticCache

    static = StaticCache(config=model.config, max_cache_len=max_cache_len)
    for source, target in zip(cache.layers, static.layers, strict=True):
        target.update(source.keys, source.values)  # allocates the static tensors, fills positions 0..T-2
    if not compile:
        return static, None
    compile_config = CompileConfig(mode="reduce-overhead" if model.device.type == "cuda" else "default")
    compile_config._compile_all_devices = model.device.type != "cuda"
    return static, compile_config


def load_test_records(path: Path) -> list[dict]:
    """MGLD test records (a JSON list), checked by the package's record validator
    (:func:`eeca.mgld.validate.checked_records`); each must also have an image and open with the
    question. Any problem is an :class:`InputError` naming the file, record and field."""
    data = checked_records(path, "llava")
    for n, rec in enumerate(data):
        if "image" not in rec or rec["conversations"][0]["from"] != "human":
            field = "image" if "image" not in rec else "conversations[0].from"
            raise InputError(f"{path}: record {n} (id={rec['id']}): {field}: generation needs an image and "
                             "a first turn from 'human'")
    return data


def human_turn(rec: dict, with_entities: bool) -> str:
    """The user turn sent to the model: the record's question, with its entities if asked for."""
    value = rec["conversations"][0]["value"]
    if with_entities:
        value = entity_prompt(value, rec.get("entities") or [])
    return value


def chunk_bounds(n: int, num_chunks: int, idx: int) -> tuple[int, int]:
    """Contiguous [start, end) of chunk ``idx`` of ``num_chunks`` over n items (sizes differ by <= 1)."""
    return n * idx // num_chunks, n * (idx + 1) // num_chunks


def part_paths(out: Path, idx: int, total: int) -> tuple[Path, Path]:
    stem = f"{idx:05d}-of-{total:05d}"
    return out / "parts" / f"generations.{stem}.jsonl", out / "parts" / f"skipped.{stem}.jsonl"


def run_generate(cfg: GenerateConfig, out: Path, num_chunks: int = 1, chunk_idx: int = 0,
                 source: str | None = None) -> dict:
    """Generate this process's share of the test set into ``out/parts``; merge when all parts are done.

    ``source`` (the config file) is named in the error when the model is missing."""
    from accelerate import PartialState

    # Without an accelerator the processes of `accelerate launch` / torchrun coordinate over gloo on CPU.
    state = PartialState(cpu=not torch.accelerator.is_available())
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise InputError(f"--chunk-idx {chunk_idx} --num-chunks {num_chunks}: need num_chunks >= 1 and "
                         f"0 <= chunk_idx < num_chunks")
    total = num_chunks * state.num_processes
    share = chunk_idx * state.num_processes + state.process_index
    records = load_test_records(cfg.test_json)
    model_field = f"{source}: field 'model'" if source else "model"
    check_checkpoint(cfg.model, model_field, local_files_only=True)  # a saved folder; before out/ is made
    _check_run_config(cfg, out, state.is_main_process)
    start, end = chunk_bounds(len(records), total, share)
    gen_path, skip_path = part_paths(out, share, total)
    with JsonlStore(gen_path) as store, JsonlStore(skip_path) as skips:
        todo = [r for r in records[start:end] if str(r["id"]) not in store]  # skips are tried again
        model = processor = None
        n_tokens, t0 = 0, time.perf_counter()
        bar = tqdm(total=len(todo), desc=f"generate {share + 1}/{total}", unit="q", disable=not todo)
        for b in range(0, len(todo), cfg.batch_size):
            batch, images = [], []
            for rec in todo[b:b + cfg.batch_size]:
                if len(human_turn(rec, cfg.entity_prompt)) > cfg.max_question_chars:
                    skips.append({"id": str(rec["id"]), "image": rec["image"],
                                  "reason": f"question longer than max_question_chars={cfg.max_question_chars}"})
                    continue
                try:
                    images.append(load_image(image_file(cfg.image_root, rec["image"]), cfg.images))
                    batch.append(rec)
                except ImageError as e:
                    skips.append({"id": str(rec["id"]), "image": rec["image"], "reason": e.reason})
            if batch:
                if model is None:
                    model, processor = load_model(cfg.model, cfg.dtype, state.device)
                prompts = [build_prompt(processor, human_turn(r, cfg.entity_prompt)) for r in batch]
                ids = [str(r["id"]) for r in batch]
                answers = generate_batch(model, processor, prompts, images, ids, cfg)
                for rec, responses in zip(batch, answers, strict=True):
                    n_tokens += sum(len(processor.tokenizer(x, add_special_tokens=False).input_ids) for x in responses)
                    store.append(generation_row(rec, responses, cfg))
            bar.update(len(todo[b:b + cfg.batch_size]))
        bar.close()
        elapsed = time.perf_counter() - t0
    state.wait_for_everyone()
    merged = merge_parts(records, out, total, cfg) if state.is_main_process or num_chunks > 1 else False
    return {"share": share, "of": total, "generated": len(todo), "tokens": n_tokens,
            "seconds": round(elapsed, 2), "merged": merged}


def generation_row(rec: dict, responses: list[str], cfg: GenerateConfig) -> dict:
    """One generations JSONL row (DESIGN section 3)."""
    return {"id": str(rec["id"]), "question": human_turn(rec, cfg.entity_prompt).replace("<image>", "").strip(),
            "responses": responses, "model": str(cfg.model), "seed": cfg.seed, "gen_config_hash": cfg.hash()}


def _check_run_config(cfg: GenerateConfig, out: Path, write: bool) -> None:
    """Refuse to mix answers made from other inputs (model, sampling, images, test file) into one folder.

    A folder that holds no answer yet (every record was skipped, e.g. under a wrong ``image_root``)
    takes the new run's values.
    """
    path = out / "generation_config.json"
    inputs = {"model": str(cfg.model), "gen_config_hash": cfg.hash(), "image_root": str(Path(cfg.image_root).resolve()),
              "test_json_sha256": hashlib.sha256(Path(cfg.test_json).read_bytes()).hexdigest(),
              "images": to_dict(cfg.images)}
    meta = {"config": to_dict(cfg), "sampling": cfg.sampling(), **inputs}
    if path.exists():
        old = read_json(path)
        changed = {k: (old.get(k), v) for k, v in inputs.items() if old.get(k) != v}
        if not changed:
            return
        if any(p.stat().st_size for p in (out / "parts").glob("generations.*.jsonl")):
            what = "; ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
            raise InputError(f"{out}: holds answers made from other inputs ({what}). Use another --out.")
    if write:
        write_json(path, meta)


def merge_parts(records: list[dict], out: Path, total: int, cfg: GenerateConfig) -> bool:
    """Write the merged files in test-file order once every part covers its chunk; False if not yet."""
    rows: dict[str, dict] = {}
    skipped: dict[str, dict] = {}
    for idx in range(total):
        gen_path, skip_path = part_paths(out, idx, total)
        if gen_path.exists():
            rows.update({str(r["id"]): r for r in read_jsonl(gen_path)})
        if skip_path.exists():
            skipped.update({str(r["id"]): r for r in read_jsonl(skip_path)})
    ids = [str(r["id"]) for r in records]
    if any(i not in rows and i not in skipped for i in ids):
        return False
    gens = [rows[i] for i in ids if i in rows]
    if ids and not gens:
        reasons = sorted({skipped[i]["reason"].split(" (")[0] for i in ids})
        raise InputError(f"{cfg.test_json}: every one of {len(ids)} records was skipped ({', '.join(reasons)}; "
                         f"see {out / 'parts'}); is image_root {cfg.image_root} right?")
    atomic_write(out / "generations.jsonl", "".join(_line(r) for r in gens))
    atomic_write(out / "skipped.jsonl", "".join(_line(skipped[i]) for i in ids if i in skipped and i not in rows))
    answers = [{"question_id": r["id"], "sample": j, "prompt": r["question"], "text": text,
                "answer_id": f"{r['id']}-{j}", "model_id": r["model"], "metadata": {"gen_config_hash": r["gen_config_hash"]}}
               for r in gens for j, text in enumerate(r["responses"])]
    atomic_write(out / "answers.jsonl", "".join(_line(a) for a in answers))
    return True


def _line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n"


def generate_command(config: Path, out: Path, num_chunks: int = 1, chunk_idx: int = 0,
                     overrides: list[str] = ()) -> int:
    """Generate k sampled answers per MGLD test question (resumable; chunks and accelerate launch).

    Args:
        config: YAML file of GenerateConfig (configs/synth/generate.yaml, configs/paper/generate.yaml).
        out: output folder: generations.jsonl, answers.jsonl, skipped.jsonl, generation_config.json, parts/.
        num_chunks: split the test set into this many chunks (one process or job each).
        chunk_idx: which chunk this process runs (0-based).
        overrides: config overrides such as k=5 seed=1 entity_prompt=true.
    """
    cfg = load_config(GenerateConfig, config, list(overrides))
    check_inputs(cfg, config)
    # chunks (and the processes of accelerate launch) share the folder; each holds its own lock
    with run_lock(out, "generate", scope=f"chunk{chunk_idx}-of-{num_chunks}-rank{os.environ.get('RANK', '0')}"):
        stats = run_generate(cfg, Path(out), num_chunks, chunk_idx, source=str(config))
    tps = stats["tokens"] / stats["seconds"] if stats["seconds"] else 0.0
    merged = f"merged into {Path(out) / 'generations.jsonl'}" if stats["merged"] else "waiting for other chunks to merge"
    print(f"generate: share {stats['share'] + 1}/{stats['of']}: {stats['generated']} questions x {cfg.k} answers, "
          f"{stats['tokens']} tokens in {stats['seconds']} s ({tps:.1f} tokens/s); config {cfg.hash()}; {merged}")
    return 0


__all__ = ["GenerateConfig", "PerRowSampler", "generate_batch", "run_generate", "generate_command"]
