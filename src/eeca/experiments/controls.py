"""The controls every grid carries, so that a table of accuracies can be trusted (DESIGN section 8).

A grid of cells (paper Tables 1-4) means something only if its models answer in words, its judge
does not credit chance, and its training can teach what it is meant to teach. Each finished cell
gets ``controls.json`` with:

* **well-formed answers** (positive control): the share of sampled answers that are degenerate
  (:mod:`eeca.evaluate.degenerate`; the closed-world vocabulary when the grid names one). Goal:
  at most 2% in every cell.
* **judge chance** (negative control): the cell's answers judged against a shuffled truth (each
  question against another test landmark's); its accuracy and Weakly Unknown share are what the
  judge gives by chance, shown beside the cell's own.
* **skyline** (positive control; trained ``data`` cells of the chosen selections): the cell's model
  tested on held-out views of the landmarks of its own stage-3 subset, beside the CLIP's zero-shot
  top-1 on the same images, each split by whether the CLIP saw the landmark.
* **latent knowledge** (untrained baseline cells): accuracy on the test questions split by whether
  the generic stage-1/2 corpus named the landmark and whether the CLIP saw it.
* **text-only probe** (untrained baseline cells, ``text_probe``): Figure 1's "Do you know the
  landmark ...?" per test landmark, counted against the CLIP's top-1 (``text_probe.json``,
  :func:`eeca.experiments.probe.text_knowledge`).

The inputs the synthetic world provides (vocabulary files, skyline records, naming counts, truth,
scores) are optional: a grid at paper scale runs the checks that need none of them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eeca.evaluate.degenerate import degenerate_summary, word_vocabulary
from eeca.evaluate.judge import JudgeConfig, run_judge
from eeca.evaluate.levels import RECOGNISED
from eeca.io import atomic_write, read_json, read_jsonl, read_parquet


@dataclass(frozen=True)
class ControlsConfig:
    """Which controls a grid runs and the files they read (all optional)."""

    vocabulary: list[Path] = field(default_factory=list)  # JSON / JSONL files holding every text the models saw
    chance: bool = True  # judge every cell's answers against a shuffled truth
    skyline_test_json: Path | None = None  # held-out views of train-pool landmarks (eeca synth pretrain)
    skyline_selections: list[str] = field(default_factory=lambda: ["BRS"])  # data cells tested on the skyline
    scores: Path | None = None  # scores.parquet: the CLIP's zero-shot top-1 per image
    truth: Path | None = None  # landmarks JSONL with clip_seen (synthetic world truth)
    naming: Path | None = None  # naming.jsonl of eeca synth pretrain (named captions per landmark)
    # Figure 1's text-only probe on the baseline cell (eeca.experiments.probe.text_knowledge): text_probe.json
    text_probe: bool = False


def strings_in(value: Any):
    """Every string inside a JSON value (keys excluded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


def closed_vocabulary(paths: list[Path]) -> frozenset[str] | None:
    """The words of every string in ``paths`` (JSON or JSONL); None when no file is given."""
    if not paths:
        return None

    def texts():
        for p in paths:
            rows = read_jsonl(p) if Path(p).suffix == ".jsonl" else [read_json(p)]
            for row in rows:
                yield from strings_in(row)

    return word_vocabulary(texts())


def recognised_by_id(judgments: Path) -> dict[str, bool]:
    """id -> recognised (Strongly Known or Known) over the judged (status ok) questions."""
    return {str(r["id"]): r["level"] in RECOGNISED for r in read_jsonl(judgments) if r.get("status") == "ok"}


def _rate(flags: list[bool]) -> dict:
    return {"n": len(flags), "recognised": sum(flags), "accuracy": 100.0 * sum(flags) / len(flags) if flags else None}


def chance_control(judge_cfg: JudgeConfig, folder: Path) -> dict:
    """The cell's answers judged against a shuffled truth: what the judge credits by chance."""
    result = run_judge(dataclasses.replace(judge_cfg, shuffle_truth=True, cache=None), folder / "judge-shuffled")
    m = result["metrics"]
    return {"accuracy": m["accuracy"], "weakly_unknown": m["weakly_unknown"], "n": m["n"]}


def clip_top1(scores: Path, ids: set[str]) -> dict[str, bool]:
    """id -> whether the CLIP's zero-shot top-1 name is the ground truth (from scores.parquet)."""
    rows = read_parquet(scores, columns=["id", "landmark_id", "top1_landmark_id"]).to_pylist()
    return {str(r["id"]): r["top1_landmark_id"] == r["landmark_id"] for r in rows if str(r["id"]) in ids}


def skyline_records(cfg: ControlsConfig, subset: Path) -> list[dict]:
    """The skyline test records of the landmarks in a cell's stage-3 subset."""
    landmarks = {r["landmark_id"] for r in read_json(subset)}
    return [r for r in read_json(cfg.skyline_test_json) if r["landmark_id"] in landmarks]


def skyline_summary(records: list[dict], judgments: Path, scores: Path | None) -> dict:
    """Skyline accuracy beside the CLIP's zero-shot top-1 on the same images, split by CLIP-seen."""
    judged = recognised_by_id(judgments)
    clip = clip_top1(scores, set(judged)) if scores is not None else {}
    out = {}
    for key, keep in (("all", lambda r: True), ("clip_seen", lambda r: r.get("clip_seen") is True),
                      ("clip_unseen", lambda r: r.get("clip_seen") is False)):
        ids = [str(r["id"]) for r in records if keep(r) and str(r["id"]) in judged]
        out[key] = {**_rate([judged[i] for i in ids]),
                    "clip_top1": _rate([clip[i] for i in ids if i in clip])["accuracy"]}
    return out


def latent_knowledge(judgments: Path, test_json: Path, truth: Path, naming: Path) -> dict:
    """Baseline accuracy split by named-in-the-generic-corpus x CLIP-seen (and each margin)."""
    judged = recognised_by_id(judgments)
    seen = {r["landmark_id"]: bool(r.get("clip_seen")) for r in read_jsonl(truth)}
    named = {r["landmark_id"]: r["named_captions"] > 0 for r in read_jsonl(naming)}
    rows = [(judged[str(r["id"])], named.get(r["landmark_id"]), seen.get(r["landmark_id"]))
            for r in read_json(test_json) if str(r["id"]) in judged]
    out = {}
    for n_key, n_val in (("named", True), ("unnamed", False), ("any", None)):
        for s_key, s_val in (("clip_seen", True), ("clip_unseen", False), ("any", None)):
            out[f"{n_key}/{s_key}"] = _rate([ok for ok, nm, sn in rows
                                            if (n_val is None or nm is n_val) and (s_val is None or sn is s_val)])
    return out


def write_skyline_test(records: list[dict], folder: Path) -> Path:
    path = folder / "skyline" / "test.json"
    if not path.exists():
        atomic_write(path, json.dumps(records, ensure_ascii=False))
    return path


def degenerate_control(generations: Path, vocabulary: frozenset[str] | None) -> dict:
    return degenerate_summary(read_jsonl(generations), vocabulary)
