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
* :func:`run_lock`: every verb that writes a run folder holds an OS file lock on it for the whole
  run, so two processes never do (or pay for) the same work twice, nor interleave their writes; the
  second one gets an :class:`InputError` naming the holder. The kernel drops the lock when its
  process dies, ``kill -9`` included, so there is no stale lock to clean up.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import glob
import json
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


class InputError(ValueError):
    """A bad input file or value, named by file (and line or field where there is one).

    The ``eeca`` command prints these as one-line errors (exit status 2) instead of a traceback.
    """


RUN_LOCK = ".eeca.lock"
_held: dict[Path, int] = {}  # lock files this process holds -> nesting depth (a verb inside a verb)
_held_guard = threading.Lock()


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, verb: str, scope: str = "") -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``folder/.eeca.lock`` while the block runs.

    ``scope`` names a share of the folder that may run beside the others (``eeca generate``'s
    chunks: ``.eeca-<scope>.lock``). The lock file records the holder (pid, host, verb, start time,
    UTC); a second process asking for the same lock gets an :class:`InputError` naming it. A lock
    this process already holds is taken again (nested runs). Yields the lock file's path.

    The ranks of one ``accelerate``/``torchrun`` launch share their run folder: only the first
    (``RANK`` 0, or no ``RANK``) takes an unscoped lock. A folder this call created and the run left
    empty is removed again, so a run that stops before writing anything leaves nothing behind.
    """
    folder = Path(folder)
    path = (folder / (f".eeca-{scope}.lock" if scope else RUN_LOCK)).absolute()
    if not scope and os.environ.get("RANK", "0") != "0":
        yield path
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = path.resolve()
    with _held_guard:
        if path in _held:
            _held[path] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _held_guard:
                _held[path] -= 1
        return
    f = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise InputError(f"{folder}: in use by another run ({_describe_holder(holder)}; lock file {path}); "
                         "wait for it to end or choose another output folder") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "verb": verb,
                            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}) + "\n")
        f.flush()
        with _held_guard:
            _held[path] = 1
        yield path
    finally:
        with _held_guard:
            _held.pop(path, None)
        if created and [p.name for p in folder.iterdir()] == [path.name]:
            path.unlink()
            folder.rmdir()
        f.close()  # closing the file releases the lock


def _describe_holder(text: str) -> str:
    try:
        h = json.loads(text)
        return f"eeca {h['verb']}, pid {h['pid']} on host {h['host']}, started {h['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that is just starting"


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
    """A JSON file; unreadable, not UTF-8 or not JSON is an :class:`InputError` naming file and line."""
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None


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
    for lineno, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
    return out


def _read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file; missing, unreadable or not UTF-8 is an InputError naming it (and the byte)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: byte {e.start}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None


def read_records(path: str | os.PathLike) -> list:
    """The records of a JSON list file (MGLD / LLaVA) or, for a ``.jsonl`` path, a JSONL file.

    Unreadable JSON, or a JSON file that is not a list, is an error naming file and line.
    """
    if Path(path).suffix == ".jsonl":
        return read_jsonl(path)
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def offline_requested(local_files_only: bool = False) -> bool:
    """Whether checkpoints must come from disk only: asked in a config, or ``HF_HUB_OFFLINE`` set."""
    return local_files_only or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_checkpoint(model: str | os.PathLike, field: str, local_files_only: bool = False) -> None:
    """A model named by ``field`` must be loadable before anything is written: a folder with
    ``config.json``, or a hub id (``org/name``) that is in the Hugging Face cache when working offline
    (``local_files_only`` or ``HF_HUB_OFFLINE=1``). Otherwise one :class:`InputError` line saying so."""
    path = Path(model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{field}: {model} is a folder without config.json (not a saved model)")
        return
    if path.exists():
        raise InputError(f"{field}: {model} is a file, not a model folder")
    hub_id = str(model).count("/") == 1 and not str(model).startswith((".", "/", "~"))
    if not hub_id:
        raise InputError(f"{field}: no model folder {model}")
    if offline_requested(local_files_only):
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(str(model), "config.json")
        except ValueError:  # not a valid repository id either
            cached = None
        if not isinstance(cached, str):
            raise InputError(f"{field}: {model} is neither a local folder nor in the Hugging Face cache, and "
                             f"downloads are off (HF_HUB_OFFLINE / local_files_only); fetch it first: "
                             f"hf download {model} --local-dir checkpoints/{str(model).split('/')[1]}")
