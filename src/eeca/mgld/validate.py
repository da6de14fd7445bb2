"""``eeca mgld validate FILE``: check an MGLD or LLaVA instruction file record by record.

MGLD records follow DESIGN section 3 (paper App. B.4); LLaVA records are what LLaVA's training
scripts read (``id``, optional ``image``, ``conversations``, optionally opened by one system turn).
Beyond the schema (:mod:`eeca.mgld.schema`) every record must have turns alternating human/gpt
starting with the human and ending with an answer, no blank question or answer (whitespace and
invisible format characters such as a zero-width space count as blank), exactly one ``<image>``
placeholder (at the start of the first human turn) when it has an image and none when it has not,
an image path inside the image folder, unique entities, and an id not used by an earlier record.
Every error names the record (index and id) and the field.

This is the one record validator of the package: ``eeca mgld validate`` prints every problem;
``eeca train`` and ``eeca generate`` read their records through :func:`checked_records`, which
refuses a file with any problem (an :class:`eeca.io.InputError` naming the first).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Literal

from tqdm import tqdm

from eeca.io import InputError, read_records
from eeca.mgld.schema import LLAVA_RECORD, MGLD_RECORD, check

IMAGE_TOKEN = "<image>"
Kind = Literal["auto", "mgld", "llava"]


def detect_kind(records: list) -> Literal["mgld", "llava"]:
    first = records[0] if records else {}
    return "mgld" if isinstance(first, dict) and "landmark_id" in first else "llava"


def record_errors(rec, kind: Literal["mgld", "llava"], image_root: Path | None = None) -> list[tuple[str, str]]:
    """Every problem of one record as ``(field path, message)``."""
    errors = check(rec, MGLD_RECORD if kind == "mgld" else LLAVA_RECORD)
    if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
        return errors
    turns = [t for t in rec["conversations"] if isinstance(t, dict) and isinstance(t.get("value"), str)]
    if len(turns) < len(rec["conversations"]):
        return errors  # the schema already names the malformed turns
    start = 1 if kind == "llava" and turns and turns[0].get("from") == "system" else 0
    dialogue = turns[start:]
    for i, turn in enumerate(dialogue):
        want = "human" if i % 2 == 0 else "gpt"
        if turn.get("from") != want:
            errors.append((f"conversations[{start + i}].from", f"expected {want!r} (turns alternate, human first), "
                                                               f"got {turn.get('from')!r}"))
        if _blank(turn["value"].replace(IMAGE_TOKEN, "")):
            errors.append((f"conversations[{start + i}].value", "empty answer" if want == "gpt" else "empty question"))
    if len(dialogue) % 2:
        errors.append(("conversations", f"ends with a question: {len(dialogue)} turns, the last has no answer"))
    n_tokens = sum(t["value"].count(IMAGE_TOKEN) for t in turns)
    if "image" in rec:
        if n_tokens != 1:
            errors.append(("conversations", f"a record with an image needs exactly one {IMAGE_TOKEN} "
                                            f"placeholder, found {n_tokens}"))
        elif dialogue and not dialogue[0]["value"].startswith(IMAGE_TOKEN):
            errors.append((f"conversations[{start}].value", f"the {IMAGE_TOKEN} placeholder must open the first turn"))
        if isinstance(rec["image"], str) and rec["image"]:
            p = PurePosixPath(rec["image"])
            if p.is_absolute() or ".." in p.parts:
                errors.append(("image", f"{rec['image']!r} must be a path inside the image folder"))
            elif image_root is not None and not (image_root / rec["image"]).is_file():
                errors.append(("image", f"no such file under {image_root}: {rec['image']}"))
    elif n_tokens:
        errors.append(("conversations", f"{IMAGE_TOKEN} placeholder in a record without an image"))
    if kind == "mgld" and isinstance(rec.get("entities"), list):
        seen = Counter(e.casefold() for e in rec["entities"] if isinstance(e, str))
        dups = sorted(e for e, n in seen.items() if n > 1)
        if dups:
            errors.append(("entities", f"repeated entities: {dups}"))
    return errors


def _blank(text: str) -> bool:
    """Nothing visible: only whitespace and format characters (zero-width space, joiners, BOM)."""
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text)


def validate_records(records: list, kind: Kind = "auto", image_root: Path | None = None) -> list[tuple[int, str]]:
    """``(record index, "record I (id=X): FIELD: problem")`` for every problem in ``records``."""
    kind = detect_kind(records) if kind == "auto" else kind
    messages: list[tuple[int, str]] = []
    first_seen: dict[str, int] = {}
    for i, rec in enumerate(records):
        rid = rec.get("id") if isinstance(rec, dict) else None
        where = f"record {i}" + (f" (id={rid})" if rid is not None else "")
        for path, msg in record_errors(rec, kind, image_root):
            messages.append((i, f"{where}: {path}: {msg}"))
        if rid is not None:
            key = str(rid)
            if key in first_seen:
                messages.append((i, f"{where}: id: duplicate of record {first_seen[key]}"))
            else:
                first_seen[key] = i
    return messages


def checked_records(path: str | Path, kind: Kind = "llava", image_root: Path | None = None) -> list:
    """The records of ``path`` (JSON list or JSONL) when every one is valid; else an :class:`InputError`
    naming the file, the first bad record and field, and how many problems there are in all."""
    records = read_records(path)
    messages = validate_records(records, kind, image_root)
    if messages:
        more = f" (and {len(messages) - 1} more problems: eeca mgld validate {path})" if len(messages) > 1 else ""
        raise InputError(f"{path}: {messages[0][1]}{more}")
    return records


def validate_command(file: Path, kind: Kind = "auto", image_root: Path | None = None, max_errors: int = 50) -> int:
    """Check an MGLD or LLaVA JSON file; exit status 1 when any record is invalid.

    Args:
        file: a JSON list of records (or JSONL).
        kind: mgld, llava, or auto (mgld when the first record has landmark_id).
        image_root: also check that every image file exists under this folder.
        max_errors: print at most this many errors (all are counted).
    """
    try:
        records = read_records(file)
    except (OSError, ValueError) as e:
        print(f"eeca mgld validate: {e}")
        return 1
    resolved = detect_kind(records) if kind == "auto" else kind
    messages = validate_records(tqdm(records, desc="mgld validate", unit="record"), resolved, image_root)
    for _, m in messages[:max_errors]:
        print(f"{file}: {m}")
    if len(messages) > max_errors:
        print(f"... {len(messages) - max_errors} more")
    bad = len({i for i, _ in messages})
    print(f"mgld validate: {file}: {len(records)} {resolved} records, {bad} invalid, {len(messages)} errors")
    return 1 if messages else 0
