"""Paired comparison of two cells' judgment files on the same test questions, pooled over seeds (paper 3.1).

The statistics (paired bootstrap stratified by seed, exact McNemar test) are :mod:`eeca.stats`;
here verdicts are read from ``judgments.jsonl`` and a level counts as recognised when it is
Strongly Known or Known (paper 3.1, "Evaluation metric"). Only ok verdicts count; failed ones are
dropped like missing ids and counted per seed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from eeca import stats
from eeca.evaluate.levels import LEVELS, RECOGNISED
from eeca.io import InputError, read_jsonl


def _recognised(value: object, where: str) -> bool:
    """A verdict as recognised or not: a bool, or a level (recognised = Strongly Known or Known)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value in LEVELS:
        return value in RECOGNISED
    raise ValueError(f"{where}: expected a bool or one of {LEVELS}, got {value!r}")


def paired_comparison(pairs: Sequence[tuple[Mapping[str, object], Mapping[str, object]]],
                      samples: int = 2000, seed: int = 0) -> dict:
    """:func:`eeca.stats.paired_comparison` of verdicts given as bools or levels (recognised = SK or K)."""
    as_bools = [tuple({str(k): _recognised(v, f"seed {s}: cell {side}: id {str(k)!r}") for k, v in cell.items()}
                      for side, cell in zip("ab", pair, strict=True)) for s, pair in enumerate(pairs)]
    return stats.paired_comparison(as_bools, samples, seed)


PathLike = str | os.PathLike


def _paths(x: PathLike | Sequence[PathLike]) -> list[Path]:
    return [Path(x)] if isinstance(x, (str, os.PathLike)) else [Path(p) for p in x]


def read_verdicts(path: PathLike) -> tuple[dict[str, str], int]:
    """id -> level of the ok verdicts of a judgments.jsonl, and the number of failed ones.

    An ok verdict with an unknown level, a row without id, or a duplicate id is an InputError naming
    file and line.
    """
    verdicts: dict[str, str] = {}
    seen: set[str] = set()
    failed = 0
    for line, row in enumerate(read_jsonl(path), 1):  # read_jsonl skips blank lines: line is the record number
        if not isinstance(row, dict) or row.get("id") is None:
            raise InputError(f"{path}: record {line}: field 'id' missing")
        rid = str(row["id"])
        if rid in seen:
            raise InputError(f"{path}: record {line}: duplicate id {rid!r}")
        seen.add(rid)
        if row.get("status") != "ok":
            failed += 1
            continue
        if row.get("level") not in LEVELS:
            raise InputError(f"{path}: record {line}: field 'level': {row.get('level')!r} is not one of {LEVELS}")
        verdicts[rid] = row["level"]
    return verdicts, failed


def compare_judgments(a: PathLike | Sequence[PathLike], b: PathLike | Sequence[PathLike],
                      samples: int = 2000, seed: int = 0) -> dict:
    """:func:`paired_comparison` of two cells' judgments.jsonl files, one path (or one per seed) each.

    Files pair up by position (seed i of a with seed i of b). Adds ``files_a`` / ``files_b`` and, per
    seed, ``failed_a`` / ``failed_b`` (verdicts that failed: dropped like missing ids). Raises
    InputError when the lists differ in length or a seed's two files share no judged id.
    """
    paths_a, paths_b = _paths(a), _paths(b)
    if not paths_a or len(paths_a) != len(paths_b):
        raise InputError(f"expected one judgments file per seed for each cell, got {len(paths_a)} and {len(paths_b)}")
    pairs, failed = [], []
    for pa, pb in zip(paths_a, paths_b, strict=True):
        (va, fa), (vb, fb) = read_verdicts(pa), read_verdicts(pb)
        if not va.keys() & vb.keys():
            raise InputError(f"{pa} and {pb} share no judged question ({len(va)} and {len(vb)} ok verdicts)")
        pairs.append((va, vb))
        failed.append((fa, fb))
    result = paired_comparison(pairs, samples, seed)
    for entry, (fa, fb) in zip(result["per_seed"], failed, strict=True):
        entry["failed_a"], entry["failed_b"] = fa, fb
    result["files_a"], result["files_b"] = [str(p) for p in paths_a], [str(p) for p in paths_b]
    return result
