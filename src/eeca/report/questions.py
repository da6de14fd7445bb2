"""Per-question files of a run: each cell's answers and every judge's verdicts, the test records, the images.

Where they live (written by ``eeca experiment``, see :mod:`eeca.experiments.runner`):

* ``<cell_dir>/generate/generations.jsonl``: one row per test question, ``id``, ``question`` and the
  k ``responses`` (paper 3.1: k answers per question);
* ``<cell_dir>/generate/generation_config.json``: ``config.test_json`` (the MGLD test records:
  ``landmark_name``, ``entities``, ``hierarchical_label``, ``image`` and the reference answer in
  ``conversations``) and ``config.image_root``;
* ``<cell_dir>/judge*/judgments.jsonl`` with ``judge_summary.json``: one verdict per question
  (``level``, ``explanation``, ``judge``); a folder whose summary says ``shuffle_truth`` is the
  judge-chance control, not a judge, and is left out.

Paths in the configs are as the run saw them (usually relative to the directory the run started
in); they are tried as given, then relative to each folder above the run directory.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

from eeca.io import read_json, read_jsonl, read_records


@dataclass
class CellAnswers:
    """One cell's answers (id -> responses) and verdicts (judge -> id -> (level, explanation))."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    verdicts: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    test_json: Path | None = None
    image_root: Path | None = None
    missing: list[str] = field(default_factory=list)


def resolve(path: str | None, run: Path) -> Path | None:
    """``path`` as given if it exists, else relative to a folder above ``run``; None when not found."""
    if not path:
        return None
    p = Path(path)
    if p.exists():
        return p
    if not p.is_absolute():
        for parent in Path(run).resolve().parents:
            if (parent / p).exists():
                return parent / p
    return None


def load_cell(run: Path, cell_dir: str) -> CellAnswers:
    """The answers and verdicts of one cell (what is missing is listed, never guessed)."""
    folder = Path(run, cell_dir)
    out = CellAnswers()
    gen = folder / "generate" / "generations.jsonl"
    if gen.is_file():
        out.answers = {str(r["id"]): [str(a) for a in r.get("responses") or []] for r in read_jsonl(gen)}
    else:
        out.missing.append(f"{gen} not found")
    config = folder / "generate" / "generation_config.json"
    if config.is_file():
        c = read_json(config).get("config", {})
        out.test_json, out.image_root = resolve(c.get("test_json"), run), resolve(c.get("image_root"), run)
        if out.test_json is None:
            out.missing.append(f"{config}: test records {c.get('test_json')!r} not found")
    for judged in sorted(folder.glob("judge*/judgments.jsonl")):
        summary = judged.with_name("judge_summary.json")
        if summary.is_file() and read_json(summary).get("shuffle_truth"):
            continue  # the judge-chance control: the same answers against a shuffled truth
        for r in read_jsonl(judged):
            if r.get("status") == "ok":
                out.verdicts.setdefault(str(r.get("judge", judged.parent.name)), {})[str(r["id"])] = (
                    str(r["level"]), str(r.get("explanation") or ""))
    if not out.verdicts:
        out.missing.append(f"{folder}: no judgments.jsonl")
    return out


@dataclass(frozen=True)
class Truth:
    """A test question's ground truth (MGLD test record)."""

    id: str
    question: str
    name: str
    reference: str
    entities: tuple[str, ...]
    label: str
    image: str


def load_truth(test_json: Path) -> dict[str, Truth]:
    """id -> :class:`Truth` from an MGLD test file (JSON list or JSONL)."""
    out = {}
    for r in read_records(test_json):
        turns = r.get("conversations") or []
        human = next((t["value"] for t in turns if t.get("from") == "human"), "")
        gpt = next((t["value"] for t in turns if t.get("from") == "gpt"), "")
        out[str(r["id"])] = Truth(str(r["id"]), human.replace("<image>", "").strip(), str(r.get("landmark_name", "")),
                                  gpt, tuple(map(str, r.get("entities") or ())), str(r.get("hierarchical_label", "")),
                                  str(r.get("image", "")))
    return out


def thumbnail(path: Path, size: int = 128) -> str | None:
    """A JPEG thumbnail (longest side ``size``) as a data URI, read by the package's one image loader
    (limits, every PIL mode, reduced-scale JPEG decoding); None when the loader refuses the file."""
    from eeca.images import ImageError, load_image

    try:
        im = load_image(Path(path), min_side=size)
    except ImageError:
        return None
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=70, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
