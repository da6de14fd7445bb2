"""MGLD stages 2 and 3 and the dataset export: ``eeca mgld stage2`` / ``eeca mgld stage3``.

Paper 3.1 and App. B.3-B.4. Input: the stage-1 choice (``eeca mgld stage1``: one image per
landmark, columns ``landmark_id, id, s_gt, rsr``), ``landmarks.parquet`` and the image root.

* Stage 2 asks the annotator the sample's question (seeded per sample, :mod:`eeca.mgld.questions`)
  with the landmark name as a reference and keeps the answer.
* Stage 3 asks for the landmark's entities and a refined hierarchical label, with the question,
  the stage-2 answer and the original GLDv2 label as references, then writes MGLD (DESIGN
  section 3) split into train and test by landmark (:mod:`eeca.mgld.split`).

Both stages append one record per sample to ``stage{2,3}.jsonl`` (:class:`eeca.io.JsonlStore`) as
results arrive, so ``kill -9`` loses at most the requests in flight; a rerun skips samples done
with the same fingerprint (annotator settings, prompt version, filled prompt), retries the failed
ones, and redoes any whose inputs changed. Failures are listed with their reason in
``stage{2,3}_failures.jsonl``; a stage-3 sample whose stage 2 failed is listed there too. Final
files are written atomically, in stage-1 order, so a resumed run ends byte-identical to an
uninterrupted one.

Output folder (``out``):
  stage2.jsonl, stage3.jsonl          per-sample results (resume state)
  stage2_failures.jsonl, stage3_failures.jsonl   id, landmark_id, reason (rewritten every run)
  stage2_summary.json, stage3_summary.json       counts, requests, tokens, cost, seconds
  cache.jsonl                         model replies by request hash (``annotator.cache`` moves it)
  train.json, test.json               MGLD records (DESIGN section 3)
  test_eval.json                      the test records the tables are computed on (``split.eval_count``,
                                      default 2,500 of the 5k, seeded: paper Tables 6-7)
  llava_train.json, llava_test.json   the same conversations as plain LLaVA records
  split.parquet                       id, landmark_id, split ("train" | "test"), every stage-1 sample
  test_ids.txt                        the test image ids, one per line (for ``eeca select``)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from eeca.config import InputPath, check_inputs, load_config, to_dict
from eeca.gldv2.paths import image_relpath
from eeca.io import (
    InputError,
    JsonlStore,
    atomic_write,
    check_checkpoint,
    read_jsonl,
    read_parquet,
    run_lock,
    write_json,
    write_parquet,
)
from eeca.llm_client import FatalChatError
from eeca.mgld.annotators import AnnotatorConfig, Request, build_annotator
from eeca.mgld.questions import load_questions, pick_question
from eeca.mgld.split import eval_subset, split_by_landmark
from eeca.mgld.tasks import Task, load_task

STAGE1_COLUMNS = ("landmark_id", "id", "s_gt", "rsr")


@dataclass(frozen=True)
class SplitConfig:
    """Test split size: ``test_count`` samples, or ``test_fraction`` of them (set exactly one)."""

    test_count: int | None = 5000
    test_fraction: float | None = None
    seed: int = 0
    eval_count: int | None = 2500  # test_eval.json: this many test records, seeded (Tables 6-7); None = all

    def __post_init__(self):
        if (self.test_count is None) == (self.test_fraction is None):
            raise ValueError("set exactly one of test_count and test_fraction (the other to null)")
        if self.eval_count is not None and self.eval_count < 1:
            raise ValueError("eval_count must be >= 1 (or null: evaluate every test record)")
        if self.test_count is not None and self.test_count < 0:
            raise ValueError("test_count must be >= 0")
        if self.test_fraction is not None and not 0.0 <= self.test_fraction < 1.0:
            raise ValueError("test_fraction must be in [0, 1)")


@dataclass(frozen=True)
class MgldConfig:
    """Inputs, annotator and split of MGLD stages 2-3.

    ``image_root`` holds GLDv2's ``train/a/b/c/<id>.jpg``; with ``images`` (``images.parquet``)
    each image's ``path`` column is used instead. ``truth`` is the synthetic world's
    ``truth/landmarks.jsonl`` (facts for the template annotator). ``seed`` fixes the question of
    every sample and the template's phrasings.
    """

    stage1: InputPath
    landmarks: InputPath
    image_root: InputPath
    out: Path
    images: InputPath | None = None
    truth: InputPath | None = None
    questions: InputPath | None = None
    stage2_prompt: InputPath | None = None
    stage3_prompt: InputPath | None = None
    seed: int = 0
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass(frozen=True)
class Sample:
    """One stage-1 row joined with its landmark's metadata."""

    id: str
    landmark_id: int
    s_gt: float
    rsr: float
    image: str  # relative to image_root (LLaVA's image folder)
    original_label: str | None  # GLDv2's hierarchical_label, the reference stage 3 refines
    facts: dict  # name, hierarchical_label, supercategory, natural_or_human_made, [+ truth fields]


def stage2_command(config: Path, overrides: list[str], strict: bool = False, dry_run: bool = False) -> int:
    """MGLD stage 2: answer each sample's question about its image (resumable).

    Args:
        config: MGLD YAML (configs/synth/mgld.yaml, configs/paper/mgld.yaml).
        overrides: field=value pairs applied over the YAML (e.g. annotator.max_concurrency=16).
        strict: exit with status 1 when any sample failed (they are listed either way).
        dry_run: print the requests, estimated tokens and cost at the annotator's prices; send nothing.
    """
    return _command("stage2", config, overrides, strict, dry_run)


def stage3_command(config: Path, overrides: list[str], strict: bool = False, dry_run: bool = False) -> int:
    """MGLD stage 3: entities and refined hierarchical labels, then the train/test MGLD files.

    Args:
        config: the same MGLD YAML as stage 2.
        overrides: field=value pairs applied over the YAML.
        strict: exit with status 1 when any sample failed (they are listed either way).
        dry_run: print the requests, estimated tokens and cost at the annotator's prices; send nothing.
    """
    return _command("stage3", config, overrides, strict, dry_run)


def _command(stage: str, config: Path, overrides: list[str], strict: bool, dry_run: bool = False) -> int:
    cfg = load_config(MgldConfig, config, overrides)
    check_inputs(cfg, config)
    if cfg.annotator.backend == "hf":  # the model is a checkpoint folder (for openai, a served name)
        check_checkpoint(cfg.annotator.model, f"{config}: field 'annotator.model'")
    if dry_run:
        from eeca.mgld.estimate import dry_run_line

        print(dry_run_line(cfg, stage))
        return 0
    try:
        with run_lock(cfg.out, f"mgld {stage}"):  # stage 2 and 3 share the folder: one at a time
            summary = run_stage2(cfg) if stage == "stage2" else run_stage3(cfg)
    except FatalChatError as e:
        print(f"eeca mgld {stage}: stopped: {e} (finished samples are kept; rerun to continue)")
        return 2
    print(summary["line"])
    return 1 if strict and summary["failed"] else 0


def load_samples(cfg: MgldConfig) -> list[Sample]:
    """Stage-1 rows joined with ``landmarks.parquet`` (and ``truth``), in stage-1 order.

    Missing columns, duplicate ids, unknown landmarks, ids that are not GLDv2 ids and image paths
    that leave the image root are errors naming the file, row and field.
    """
    stage1 = _read_table(cfg.stage1, STAGE1_COLUMNS)
    landmarks = _read_table(cfg.landmarks, ("landmark_id", "name"))
    meta = {}
    optional = [c for c in ("hierarchical_label", "supercategory", "natural_or_human_made")
                if c in landmarks.column_names]
    for i, row in enumerate(landmarks.select(["landmark_id", "name", *optional]).to_pylist()):
        if row["landmark_id"] is None or not row["name"]:
            field_ = "landmark_id" if row["landmark_id"] is None else "name"
            raise InputError(f"{cfg.landmarks}: row {i}: field {field_!r} is empty")
        meta[int(row["landmark_id"])] = {k: v for k, v in row.items() if k != "landmark_id" and v not in (None, "")}
    truth = {}
    if cfg.truth is not None:
        for lineno, rec in enumerate(read_jsonl(cfg.truth), 1):
            if "landmark_id" not in rec:
                raise InputError(f"{cfg.truth}: line {lineno}: field 'landmark_id' is missing")
            truth[int(rec["landmark_id"])] = rec
    paths = None
    if cfg.images is not None:
        images = _read_table(cfg.images, ("id", "path"))
        paths = dict(zip(images.column("id").to_pylist(), images.column("path").to_pylist(), strict=True))
    # float32 scores print as their shortest float32 decimal (0.3, not 0.30000001192092896)
    as_float = {c: (lambda v: float(str(np.float32(v)))) if pa.types.is_float32(stage1.schema.field(c).type)
                else float for c in ("s_gt", "rsr")}
    samples, seen = [], {}
    for i, row in enumerate(stage1.select(list(STAGE1_COLUMNS)).to_pylist()):
        where = f"{cfg.stage1}: row {i}"
        sid, lm = str(row["id"]), row["landmark_id"]
        if sid in seen:
            raise InputError(f"{where}: field 'id': duplicate id {sid!r} (first at row {seen[sid]})")
        seen[sid] = i
        if lm is None or int(lm) not in meta:
            raise InputError(f"{where}: field 'landmark_id': {lm!r} is not in {cfg.landmarks}")
        for name in ("s_gt", "rsr"):
            if row[name] is None:
                raise InputError(f"{where}: field {name!r} is null")
        facts = {**meta[int(lm)]}
        # the world's ground truth adds what GLDv2 lacks (place, entities, description) and its
        # true category; the name stays GLDv2's, and the original label stays in original_label
        t = truth.get(int(lm), {})
        facts.update({k: t[k] for k in ("hierarchical_label", "place", "entities", "description", "aliases")
                      if t.get(k)})
        samples.append(Sample(sid, int(lm), as_float["s_gt"](row["s_gt"]), as_float["rsr"](row["rsr"]),
                              _image_path(cfg, sid, paths, where), meta[int(lm)].get("hierarchical_label"),
                              facts))
    return samples


def _read_table(path: Path, required: tuple[str, ...]) -> pa.Table:
    try:
        table = read_parquet(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path}: cannot read parquet: {e}") from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing} (has {table.column_names})")
    return table


def _image_path(cfg: MgldConfig, sample_id: str, paths: dict | None, where: str) -> str:
    if paths is None:
        try:
            return image_relpath(sample_id)
        except ValueError:
            raise InputError(f"{where}: field 'id': {sample_id!r} is not a GLDv2 id "
                             "(16 lowercase hex characters)") from None
    if sample_id not in paths or not paths[sample_id]:
        raise InputError(f"{where}: field 'id': {sample_id!r} has no path in {cfg.images}")
    rel = str(paths[sample_id])
    root = cfg.image_root.resolve()
    if Path(rel).is_absolute() or not (root / rel).resolve().is_relative_to(root):
        raise InputError(f"{cfg.images}: id {sample_id!r}: field 'path': {rel!r} leaves the image root")
    return rel


def run_stage2(cfg: MgldConfig) -> dict:
    """Annotate every stage-1 sample's Q-A pair; returns the summary (also written to JSON)."""
    samples = load_samples(cfg)
    questions = load_questions(cfg.questions)
    task = load_task("stage2", cfg.stage2_prompt)

    def fields(s: Sample) -> dict[str, str]:
        return {"landmark_name": s.facts["name"], "question": pick_question(questions, cfg.seed, s.id)}

    def record(s: Sample, f: dict, reply: dict) -> dict:
        return {"question": f["question"], "answer": reply["answer"]}

    return _run_stage(cfg, task, samples, fields, record, blocked={})


def run_stage3(cfg: MgldConfig) -> dict:
    """Annotate entities and hierarchical labels, then write the MGLD files; returns the summary."""
    samples = load_samples(cfg)
    task = load_task("stage3", cfg.stage3_prompt)
    stage2_path = cfg.out / "stage2.jsonl"
    if not stage2_path.exists():
        raise InputError(f"{stage2_path} does not exist: run `eeca mgld stage2` with this config first")
    with JsonlStore(stage2_path) as store:
        qa = dict(store.records)
    blocked = {}
    for s in samples:
        rec = qa.get(s.id)
        if rec is None or rec["status"] != "ok":
            blocked[s.id] = "stage 2 not done" + (f": {rec['reason']}" if rec else "")

    def fields(s: Sample) -> dict[str, str]:
        return {"landmark_name": s.facts["name"], "original_label": s.original_label or "(none)",
                "question": qa[s.id]["question"], "answer": qa[s.id]["answer"]}

    def record(s: Sample, f: dict, reply: dict) -> dict:
        return {**reply}

    summary = _run_stage(cfg, task, samples, fields, record, blocked)
    summary.update(export_mgld(cfg, samples, qa))
    summary["line"] += (f"; MGLD train {summary['train']}, test {summary['test']} (evaluated: {summary['test_eval']}, "
                        f"test_eval.json) -> {cfg.out}")
    write_json(cfg.out / "stage3_summary.json", {k: v for k, v in summary.items() if k != "line"})
    return summary


def _run_stage(cfg: MgldConfig, task: Task, samples: list[Sample], fields: Callable[[Sample], dict],
               record: Callable[[Sample, dict, dict], dict], blocked: dict[str, str]) -> dict:
    """The loop both stages share: resume, annotate what is missing, list failures, summarise."""
    start = time.monotonic()
    stage = task.name
    cache = cfg.annotator.cache or cfg.out / "cache.jsonl"
    annotator = build_annotator(cfg.annotator, cache, seed=cfg.seed)
    store = JsonlStore(cfg.out / f"{stage}.jsonl")
    todo, resumed = [], 0
    for s in samples:
        if s.id in blocked:
            continue
        done = store.get(s.id)
        if done is not None and done["status"] == "ok" and \
                done["fingerprint"] == annotator.fingerprint(task, task.prompt(**fields(s))):
            resumed += 1
        else:
            todo.append(s)
    # requests are built as the annotator asks for them: prompts of 200k samples stay off the heap
    requests = (Request(s.id, cfg.image_root / s.image, task.prompt(**fields(s)), fields(s), s.facts) for s in todo)
    by_id = {s.id: s for s in samples}
    new_ok = 0
    try:
        bar = tqdm(annotator.annotate(task, requests), total=len(todo), desc=f"mgld {stage}", unit="sample")
        for r in bar:
            s = by_id[r.id]
            rec = {"id": r.id, "landmark_id": s.landmark_id, "status": r.status, "fingerprint": r.fingerprint,
                   "attempts": r.attempts, "cached": r.cached}
            if r.status == "ok":
                rec.update(record(s, fields(s), r.reply))
                new_ok += 1
            else:
                rec["reason"] = r.reason
            store.append(rec)
    finally:
        store.close()
        annotator.close()
        failed = _write_failures(cfg.out / f"{stage}_failures.jsonl", samples, store, blocked)
    usage = annotator.summary()
    seconds = time.monotonic() - start
    summary = {
        "stage": stage, "samples": len(samples), "ok": len(samples) - failed, "failed": failed,
        "new": new_ok, "resumed": resumed, "blocked": len(blocked), "seconds": round(seconds, 2),
        "prompt_version": task.version, "annotator": annotator.settings(), "usage": usage,
    }
    write_json(cfg.out / f"{stage}_summary.json", summary)
    tokens = f"{usage['prompt_tokens']:,} in / {usage['completion_tokens']:,} out"
    summary["line"] = (
        f"mgld {stage}: {summary['ok']}/{len(samples)} ok ({new_ok} new, {resumed} resumed, "
        f"{usage['cached']} from cache), {failed} failed"
        + (f" (listed in {cfg.out / f'{stage}_failures.jsonl'}; rerun to retry)" if failed else "")
        + f"; {usage['requests']} requests, {usage['retries']} retries, {usage['reasks']} re-asks; "
        f"tokens {tokens}; ${usage['cost_usd']:.4f}; {seconds:.1f} s")
    return summary


def _write_failures(path: Path, samples: list[Sample], store: JsonlStore, blocked: dict[str, str]) -> int:
    """List every sample without a valid result, with its reason; returns how many."""
    lines = []
    for s in samples:
        rec = store.get(s.id)
        reason = blocked.get(s.id) or (rec["reason"] if rec is not None and rec["status"] != "ok" else None)
        if reason is None and rec is None:
            reason = "not attempted (the run stopped first)"
        if reason is not None:
            lines.append(json.dumps({"id": s.id, "landmark_id": s.landmark_id, "reason": reason}, ensure_ascii=False))
    atomic_write(path, "".join(line + "\n" for line in lines))
    return len(lines)


def export_mgld(cfg: MgldConfig, samples: list[Sample], qa: dict[str, dict]) -> dict:
    """Write train/test MGLD and LLaVA JSON, ``split.parquet`` and ``test_ids.txt``.

    The split covers every stage-1 sample (so it does not move when failed samples succeed on a
    rerun); the JSON files hold the samples both stages annotated.
    """
    with JsonlStore(cfg.out / "stage3.jsonl") as store:
        ann = dict(store.records)
    test_ids = split_by_landmark([(s.id, s.landmark_id) for s in samples], cfg.split.test_count,
                                 cfg.split.test_fraction, cfg.split.seed)
    mgld: dict[str, list[dict]] = {"train": [], "test": []}
    for s in samples:
        a = ann.get(s.id)
        if a is None or a["status"] != "ok" or qa.get(s.id, {}).get("status") != "ok":
            continue
        q = qa[s.id]
        mgld["test" if s.id in test_ids else "train"].append({
            "id": s.id,
            "image": s.image,
            "conversations": [{"from": "human", "value": f"<image>\n{q['question']}"},
                              {"from": "gpt", "value": q["answer"]}],
            "landmark_id": s.landmark_id,
            "landmark_name": s.facts["name"],
            "entities": a["entities"],
            "hierarchical_label": a["hierarchical_label"],
            "s_gt": s.s_gt,
            "rsr": s.rsr,
        })
    for split, records in mgld.items():
        write_json(cfg.out / f"{split}.json", records)
        write_json(cfg.out / f"llava_{split}.json",
                   [{"id": r["id"], "image": r["image"], "conversations": r["conversations"]} for r in records])
    evaluated = eval_subset([r["id"] for r in mgld["test"]], cfg.split.eval_count, cfg.split.seed)
    write_json(cfg.out / "test_eval.json", [r for r in mgld["test"] if r["id"] in evaluated])
    write_parquet(cfg.out / "split.parquet", {
        "id": [s.id for s in samples],
        "landmark_id": pa.array([s.landmark_id for s in samples], pa.int64()),
        "split": ["test" if s.id in test_ids else "train" for s in samples]})
    atomic_write(cfg.out / "test_ids.txt", "".join(f"{i}\n" for i in sorted(test_ids)))
    write_json(cfg.out / "config.json", to_dict(cfg))
    return {"train": len(mgld["train"]), "test": len(mgld["test"]), "test_eval": len(evaluated),
            "split_test_samples": len(test_ids)}
