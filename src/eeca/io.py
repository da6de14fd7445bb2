"""Files between stages: atomic writes, resumable JSONL keyed by id, parquet helpers.

Every long stage of the toolkit (DESIGN section 9) writes through this module so that a
``kill -9`` at any moment leaves either the old file or the new one, never a half-written one,
and a rerun continues where the killed run stopped:

* :func:`atomic_write` / :func:`atomic_path` write to ``<name>.tmp-<pid>``, fsync, then rename
  over the destination (rename is atomic on POSIX within one filesystem). The temporaries of a
  killed process are removed by the next write of the same file.
* :class:`JsonlStore` is an append-only JSONL file keyed by a record field (default ``id``).
  Opening it reads what is there; a torn last line (the process died mid-write) is cut off and
  counted, and every complete record is kept. Appends are flushed and fsynced.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


class InputError(ValueError):
    """A bad input file or value, named by file (and line or field where there is one).

    The ``eeca`` command prints these as one-line errors (exit status 1) instead of a traceback.
    """


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched. Temporaries of
    ``path`` left by a process that no longer runs (killed with ``kill -9``) are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _remove_orphans(path: Path) -> None:
    for tmp in path.parent.glob(f"{glob.escape(path.name)}.tmp-*"):
        pid = tmp.name.rpartition(".tmp-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def readable_like_umask(folder: str | os.PathLike) -> int:
    """Give every file under ``folder`` the permission bits the umask allows a new file (``0o666 & ~umask``),
    added to those it has; returns how many files changed.

    safetensors (>= 0.8) writes weights through a temporary file that is always created 0600 and renamed
    into place, so ``model.safetensors`` / ``adapter_model.safetensors`` would be readable by their owner
    only while every other file of a run follows the umask. Run after each checkpoint is saved.
    """
    mask = os.umask(0)
    os.umask(mask)
    wanted = 0o666 & ~mask
    changed = 0
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            mode = path.stat().st_mode & 0o7777
            if mode | wanted != mode:
                path.chmod(mode | wanted)
                changed += 1
    return changed


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted UTF-8 JSON with a trailing newline."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_parquet(path: str | os.PathLike, table: pa.Table | dict[str, Any]) -> None:
    """Atomically write a pyarrow table (or a dict of columns) as parquet (zstd)."""
    if isinstance(table, dict):
        table = pa.table(table)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem allows opening a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class JsonlStore:
    """An append-only JSONL file of records keyed by ``key``, safe to resume after ``kill -9``.

    ``records`` maps key -> the last complete record written for it (a retried record that was
    written twice, e.g. ``failed`` then ``ok``, resolves to the later one). ``torn_lines`` counts
    the incomplete trailing lines that were cut off when the file was opened.
    """

    def __init__(self, path: str | os.PathLike, key: str = "id", fsync_every: int = 1):
        self.path = Path(path)
        self.key = key
        self.fsync_every = max(1, fsync_every)
        self.records: dict[str, dict] = {}
        self.torn_lines = 0
        self._pending = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._f = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        good_end = 0
        pos = 0
        for line in raw.splitlines(keepends=True):
            end = pos + len(line)
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no newline")
                rec = json.loads(line)
                if not isinstance(rec, dict) or self.key not in rec:
                    raise ValueError(f"not a record with {self.key!r}")
            except ValueError:
                if end == len(raw):  # only the last line may be torn by a crash
                    self.torn_lines += 1
                    break
                lineno = raw[:pos].count(b"\n") + 1
                raise InputError(
                    f"{self.path}: line {lineno}: not a JSON record with "
                    f"field {self.key!r}; the file is damaged beyond a torn last line"
                ) from None
            self.records[str(rec[self.key])] = rec
            good_end = end
            pos = end
        if good_end < len(raw):
            with open(self.path, "rb+") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())

    def __contains__(self, key: object) -> bool:
        return str(key) in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: object) -> dict | None:
        return self.records.get(str(key))

    def append(self, record: dict) -> None:
        """Append one record; it is on disk (flushed, fsynced per ``fsync_every``) on return."""
        if self.key not in record:
            raise KeyError(f"record has no {self.key!r} field: {sorted(record)}")
        self._f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        self._f.flush()
        self._pending += 1
        if self._pending >= self.fsync_every:
            os.fsync(self._f.fileno())
            self._pending = 0
        self.records[str(record[self.key])] = record

    def extend(self, records: Iterable[dict]) -> None:
        for r in records:
            self.append(r)

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> JsonlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read every record of a JSONL file; a bad line is an error naming file and line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
    return out


def read_records(path: str | os.PathLike) -> list:
    """The records of a JSON list file (MGLD / LLaVA) or, for a ``.jsonl`` path, a JSONL file.

    Unreadable JSON, or a JSON file that is not a list, is an error naming file and line.
    """
    if Path(path).suffix == ".jsonl":
        return read_jsonl(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data
