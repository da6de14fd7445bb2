"""``eeca export``: the MGLD benchmark (paper section 3) for other tools.

Writes, from the MGLD records of ``eeca mgld stage3`` (``test.json``, optionally ``train.json``):

* ``<out>/hf``: a Hugging Face ``datasets`` folder (``DatasetDict.save_to_disk``; load it with
  ``datasets.load_from_disk``) with one split per file. Each row holds the image itself (bytes, the
  ``Image`` feature, so the folder travels without the image tree), ``id``, ``question`` (the human turn
  without ``<image>``), ``answer`` (the reference gpt turn), ``landmark_id``, ``landmark_name``,
  ``hierarchical_label``, ``entities``, ``s_gt``, ``rsr`` and, from an optional landmarks truth JSONL
  (the synthetic world's ``truth/landmarks.jsonl``), ``place`` and ``aliases``: everything eeca's judges
  compare answers with.
* ``<out>/lmms_eval/mgld``: an lmms-eval task, ``mgld.yaml`` reading that folder
  (``load_from_disk``) and ``utils.py`` (a copy of :mod:`eeca.evaluate.lmms_task`) scoring each answer
  with eeca's rule judge (or the LLM judge). Run it with
  ``python -m lmms_eval --include_path <out>/lmms_eval --tasks mgld --model ...``.

A record without an image file, or without a question, is an ``InputError`` naming the file and the
record: the benchmark is exported whole or not at all.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from eeca.evaluate import lmms_task
from eeca.io import InputError, atomic_write, read_json, read_jsonl

TASK = "mgld"
TASK_YAML = """\
# lmms-eval task for MGLD, written by `eeca export`: {n_test} test questions in {dataset}
task: {task}
dataset_path: {dataset}
dataset_kwargs:
  load_from_disk: true
test_split: test
output_type: generate_until
doc_to_visual: !function utils.mgld_doc_to_visual
doc_to_text: !function utils.mgld_doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  do_sample: false
process_results: !function utils.mgld_process_results
metric_list:
  - metric: mgld_accuracy
    aggregation: !function utils.mgld_accuracy
    higher_is_better: true
  - metric: mgld_unknown
    aggregation: !function utils.mgld_unknown
    higher_is_better: false
  - metric: mgld_failed
    aggregation: !function utils.mgld_failed
    higher_is_better: false
lmms_eval_specific_kwargs:
  default:
    pre_prompt: ""
    post_prompt: ""
metadata:
  version: 1
  judge: "rule by default; EECA_MGLD_JUDGE=llm for the LLM judge of eeca judge"
"""


def _question(record: dict, where: str) -> str:
    turns = record.get("conversations") or []
    if not turns or not isinstance(turns[0], dict) or not str(turns[0].get("value", "")).strip():
        raise InputError(f"{where}: field 'conversations' has no human turn")
    return str(turns[0]["value"]).replace("<image>", "").strip()


def mgld_rows(records_json: Path, image_root: Path, truth: dict[int, dict]) -> dict[str, list]:
    """The column lists of one split: each record's image bytes and its ground truth."""
    records = read_json(records_json)
    if not isinstance(records, list):
        raise InputError(f"{records_json}: expected a JSON list of MGLD records")
    cols: dict[str, list] = {k: [] for k in ("id", "image", "question", "answer", "landmark_id", "landmark_name",
                                             "hierarchical_label", "entities", "place", "aliases", "s_gt", "rsr")}
    for n, rec in enumerate(records):
        where = f"{records_json}: record {n} (id {rec.get('id')!r})"
        for field in ("id", "image", "landmark_name"):
            if field not in rec:
                raise InputError(f"{where}: field '{field}' is missing")
        image = Path(image_root) / rec["image"]
        try:
            data = image.read_bytes()
        except OSError as e:
            raise InputError(f"{where}: field 'image': cannot read {image}: {e.strerror}") from None
        turns = rec.get("conversations") or []
        t = truth.get(int(rec["landmark_id"]), {}) if rec.get("landmark_id") is not None else {}
        cols["id"].append(str(rec["id"]))
        cols["image"].append({"bytes": data, "path": Path(rec["image"]).name})
        cols["question"].append(_question(rec, where))
        cols["answer"].append(str(turns[1]["value"]) if len(turns) > 1 and isinstance(turns[1], dict) else "")
        cols["landmark_id"].append(int(rec["landmark_id"]) if rec.get("landmark_id") is not None else -1)
        cols["landmark_name"].append(str(rec["landmark_name"]))
        cols["hierarchical_label"].append(str(rec.get("hierarchical_label") or ""))
        cols["entities"].append([str(e) for e in rec.get("entities") or t.get("entities") or []])
        cols["place"].append(str(t.get("place", "")))
        cols["aliases"].append([str(a) for a in t.get("aliases", [])])
        cols["s_gt"].append(float(rec["s_gt"]) if rec.get("s_gt") is not None else float("nan"))
        cols["rsr"].append(float(rec["rsr"]) if rec.get("rsr") is not None else float("nan"))
    return cols


def export_mgld(test_json: Path, image_root: Path, out: Path, train_json: Path | None = None,
                truth: Path | None = None, max_new_tokens: int = 64) -> dict:
    """Write ``out/hf`` (datasets folder) and ``out/lmms_eval/mgld`` (task); returns the split sizes."""
    import datasets

    truth_rows = {int(r["landmark_id"]): r for r in read_jsonl(truth)} if truth is not None else {}
    features = datasets.Features({
        "id": datasets.Value("string"), "image": datasets.Image(), "question": datasets.Value("string"),
        "answer": datasets.Value("string"), "landmark_id": datasets.Value("int64"),
        "landmark_name": datasets.Value("string"), "hierarchical_label": datasets.Value("string"),
        "entities": datasets.List(datasets.Value("string")), "place": datasets.Value("string"),
        "aliases": datasets.List(datasets.Value("string")), "s_gt": datasets.Value("float64"),
        "rsr": datasets.Value("float64")})
    splits = {"test": test_json} | ({"train": train_json} if train_json is not None else {})
    dd = datasets.DatasetDict({name: datasets.Dataset.from_dict(mgld_rows(Path(path), Path(image_root), truth_rows),
                                                                features=features)
                               for name, path in splits.items()})
    out = Path(out)
    hf = out / "hf"
    tmp = out / "hf.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    dd.save_to_disk(str(tmp))
    shutil.rmtree(hf, ignore_errors=True)
    tmp.rename(hf)
    task_dir = out / "lmms_eval" / TASK
    task_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(task_dir / f"{TASK}.yaml", TASK_YAML.format(task=TASK, dataset=hf.resolve(), n_test=len(dd["test"]),
                                                            max_new_tokens=max_new_tokens))
    atomic_write(task_dir / "utils.py", Path(lmms_task.__file__).read_text(encoding="utf-8"))
    return {name: len(ds) for name, ds in dd.items()}


def export_command(test_json: Path, image_root: Path, out: Path, train_json: Path | None = None,
                   truth: Path | None = None, max_new_tokens: int = 64) -> None:
    """Export MGLD for other tools: a Hugging Face datasets folder (images embedded) and an lmms-eval task.

    Args:
        test_json: the MGLD test records (eeca mgld stage3's test.json)
        image_root: the folder the records' image paths are relative to
        out: folder for hf/ (datasets.load_from_disk) and lmms_eval/mgld/ (task YAML + utils.py)
        train_json: also export these records as the train split
        truth: landmarks JSONL by landmark_id with place and aliases (the synthetic world's truth/landmarks.jsonl)
        max_new_tokens: the generation length the lmms-eval task asks for
    """
    sizes = export_mgld(test_json, image_root, out, train_json, truth, max_new_tokens)
    print(f"exported MGLD {', '.join(f'{k} {v}' for k, v in sizes.items())} -> {Path(out) / 'hf'} "
          f"(datasets) and {Path(out) / 'lmms_eval' / TASK} (lmms-eval task: --include_path "
          f"{Path(out) / 'lmms_eval'} --tasks {TASK})")
