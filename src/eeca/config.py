"""Typed, frozen configuration dataclasses loaded from YAML and validated on load.

Each stage declares its configuration as a frozen dataclass beside the code that uses it (for
example ``eeca.knowledge.score.ScoreConfig``); this module is the one loader they all share:

* ``yaml.safe_load`` only: no tags, no eval, no dotted import strings; a key given twice in one
  mapping is an error naming both lines (YAML itself would silently keep the last one).
* Every field is checked against its annotation (``int``, ``float``, ``str``, ``bool``, ``Path``,
  ``Literal[...]``, ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]`` and nested
  dataclasses); unknown and missing keys are errors (a field a dataclass renamed, listed in its
  ``RENAMED_FIELDS`` class variable as old name -> new name, is refused naming the new one). A float field also takes exponent notation
  without a dot (``lr: 2e-3``), which YAML 1.1 would otherwise read as a string.
* A ``__post_init__`` adds semantic checks by raising :class:`FieldError` (names the field) or a
  plain ``ValueError``, reported against the one field its message mentions, else the whole
  dataclass.
* Every error is a :class:`ConfigError` naming the file and the dotted field.
* Fields annotated :data:`InputPath` name files or folders a run reads; :func:`check_inputs`, called
  by a verb before it starts, refuses any that does not exist (configs are also built for files a
  pipeline writes later, so loading alone does not check). Fields annotated :data:`ModelPath` name a
  model to load: :func:`check_inputs` refuses one that is neither a saved model folder nor a hub id
  (in the cache when offline; :func:`eeca.io.check_checkpoint`), as one line naming the file and the field.
* A config argument is a path or the name of a recipe shipped in the package (``eeca/configs``):
  ``synth/world``, ``synth/world.yaml`` or ``configs/synth/world.yaml`` (:func:`config_path`), so
  every verb runs from any directory; ``eeca config list`` / ``eeca config copy`` hand them out.
* Command-line overrides ``a.b=value`` are parsed as YAML scalars and applied before validation; an
  error in a field an override set names the override, not the file.
* Under :func:`print_only` (``eeca VERB --print_config``) the first configuration loaded is printed
  as resolved and :class:`ConfigPrinted` stops the verb.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib.resources
import re
import shutil
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml

from eeca.io import InputError, check_checkpoint

T = TypeVar("T")

# a Path that a run reads: must exist when the run starts (check_inputs)
InputPath = Annotated[Path, "input"]
# a model a run loads (a save_pretrained folder, or a hub id; cached when offline): check_inputs runs
# io.check_checkpoint on it, so a missing checkpoint is one line and never a transformers traceback
ModelPath = Annotated[Path, "model"]

# a YAML 1.2 float such as 1e-3 or -2.5E+4 (YAML 1.1, which PyYAML follows, needs a dot)
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(InputError):
    """A configuration value is missing, unknown or of the wrong type; names file and field."""

    def __init__(self, source: str, field: str, message: str):
        self.source, self.field = source, field
        super().__init__(f"{source}: field '{field}': {message}")


class FieldError(ValueError):
    """Raised by a config's ``__post_init__``: ``field`` (a name of that dataclass) has a bad value."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class ConfigPrinted(Exception):
    """Raised by :func:`load_config` under :func:`print_only` once the configuration is printed."""


_PRINT_ONLY = contextvars.ContextVar("eeca_print_only", default=False)


@contextlib.contextmanager
def print_only():
    """Within this block :func:`load_config` prints the resolved configuration and raises ConfigPrinted."""
    token = _PRINT_ONLY.set(True)
    try:
        yield
    finally:
        _PRINT_ONLY.reset(token)


def load_config(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """Load ``path`` (YAML mapping) into the dataclass ``cls``, applying ``overrides``."""
    cfg = _load_config(cls, path, overrides)
    if _PRINT_ONLY.get():
        shown = f" with --overrides {' '.join(overrides)}" if overrides else ""
        print(f"# {cls.__name__} from {path}{shown}\n{dump_config(cfg)}", end="")
        raise ConfigPrinted(str(path))
    return cfg


def packaged_configs() -> Path:
    """The folder of the recipes shipped with the package."""
    return Path(str(importlib.resources.files("eeca") / "configs"))


def config_path(name: str | Path) -> Path:
    """``name`` when that path exists, else the packaged recipe it names (``synth/world``,
    ``synth/world.yaml`` or ``configs/synth/world.yaml``), else ``name`` unchanged."""
    path = Path(name)
    if path.exists() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    if parts:
        found = packaged_configs().joinpath(*parts)
        for candidate in (found, found.with_name(found.name + ".yaml")):
            if candidate.exists():
                return candidate
    return path


def config_list_command() -> int:
    """List the recipes shipped with eeca: names any config argument takes, and `eeca config copy` copies.

    Each line is the name and the command the file opens with.
    """
    root = packaged_configs()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".yaml", ".json"):
            first = path.read_text(encoding="utf-8").splitlines()[0]
            print(f"{path.relative_to(root).as_posix():<24} {first.lstrip('# ') if first.startswith('#') else ''}")
    return 0


def config_copy_command(name: str, out: Path) -> int:
    """Copy a shipped recipe, or a folder of them, into a folder of yours to edit.

    Args:
        name: a name from `eeca config list` (synth/stage3, paper/judge.yaml) or a folder (synth, paper).
        out: folder to copy into (created); an existing file there is never overwritten.
    """
    source = config_path(name)
    root = packaged_configs()
    if not source.exists() or root not in source.resolve().parents:
        raise InputError(f"{name}: no such packaged config (eeca config list shows them)")
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    out = Path(out)
    targets = [out / p.relative_to(source.parent) for p in files]
    clash = [t for t in targets if t.exists()]
    if clash:
        raise InputError(f"{clash[0]}: exists; not overwritten (remove it or copy into another folder)")
    for src, dst in zip(files, targets, strict=True):
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    print(f"config copy: {len(files)} file(s) -> {out / source.name}")
    return 0


def _load_config(cls: type[T], path: str | Path, overrides: list[str] | None) -> T:
    path = config_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), "<file>", f"cannot read: {e.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as e:
        raise ConfigError(str(path), e.key, f"given twice (lines {e.first} and {e.again}); remove one") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "<file>"
        raise ConfigError(str(path), where, f"invalid YAML: {getattr(e, 'problem', e)}") from None
    return from_dict(cls, data if data is not None else {}, source=str(path), overrides=overrides)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, first: int, again: int):
        self.key, self.first, self.again = key, first, again
        super().__init__(f"key {key!r} given twice (lines {first} and {again})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated within one mapping."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise _DuplicateKey(str(key), seen[key] + 1, key_node.start_mark.line + 1)
            if isinstance(key, typing.Hashable):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def check_inputs(cfg: Any, source: str, prefix: str = "") -> None:
    """Refuse a config whose :data:`InputPath` fields name files or folders that do not exist, or whose
    :data:`ModelPath` fields name no loadable model: neither a folder with config.json nor a hub id (one
    already in the cache when downloads are off, HF_HUB_OFFLINE=1)."""
    hints = typing.get_type_hints(type(cfg), include_extras=True)
    for f in dataclasses.fields(cfg):
        value, tp = getattr(cfg, f.name), hints[f.name]
        if dataclasses.is_dataclass(value):
            check_inputs(value, source, f"{prefix}{f.name}.")
        elif isinstance(value, Path) and InputPath in (tp, *typing.get_args(tp)) and not config_path(value).exists():
            raise ConfigError(source, f"{prefix}{f.name}", f"no such file or folder: {value}")
        elif isinstance(value, Path) and ModelPath in (tp, *typing.get_args(tp)):
            check_checkpoint(value, f"{source}: field '{prefix}{f.name}'")  # a hub id: checked when offline


def from_dict(cls: type[T], data: Any, source: str = "<dict>", overrides: list[str] | None = None) -> T:
    """Build and validate ``cls`` from a mapping; ``source`` names where it came from in errors."""
    if not isinstance(data, dict):
        raise ConfigError(source, "<root>", f"expected a mapping, got {type(data).__name__}")
    data = _apply_overrides(dict(data), overrides or [], source)
    try:
        return _build(cls, data, source, "")
    except ConfigError as e:
        item = _override_of(e.field, overrides or [])
        if item is None:
            raise
        raise ConfigError(f"--overrides {item}", e.field, str(e).split(f"field '{e.field}': ", 1)[1]) from None


def _override_of(field: str, overrides: list[str]) -> str | None:
    """The override that set ``field`` (or a field inside it, or the mapping holding it), if any."""
    for item in reversed(overrides):
        key = item.partition("=")[0]
        if key == field or key.startswith(field + ".") or field.startswith((key + ".", key + "[")):
            return item
    return None


def to_dict(cfg: Any) -> dict:
    """A plain, YAML/JSON-serialisable dict of a config (Paths as strings, tuples as lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def _apply_overrides(data: dict, overrides: list[str], source: str) -> dict:
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--overrides {item}", key or "<field>", "an override must look like field.sub=value")
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--overrides {item}", key, f"'{p}' is not a mapping")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return data


def _build(cls: type, data: dict, source: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    renamed = getattr(cls, "RENAMED_FIELDS", {})
    for old in unknown:
        if old in renamed:
            raise ConfigError(source, f"{prefix}{old}", f"renamed: write '{prefix}{renamed[old]}'")
    if unknown:
        name = f"{prefix}{unknown[0]}"
        raise ConfigError(source, name, f"unknown field (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{prefix}{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(source, dotted, "required field is missing")
            continue
        kwargs[name] = _coerce(hints[name], data[name], source, dotted)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        field = getattr(e, "field", None)
        if field is None:
            mentioned = [n for n in fields if re.search(rf"\b{re.escape(n)}\b", str(e))]
            field = mentioned[0] if len(mentioned) == 1 else None
        where = f"{prefix}{field}" if field else prefix.rstrip(".") or "<root>"
        raise ConfigError(source, where, str(e)) from None


def _coerce(tp: Any, value: Any, source: str, dotted: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected: str) -> ConfigError:
        return ConfigError(source, dotted, f"expected {expected}, got {value!r} ({type(value).__name__})")

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, source, dotted)
            except ConfigError:
                continue
        raise bad(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(source, dotted, f"must be one of {list(args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad("a mapping")
        return _build(tp, value, source, f"{dotted}.")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise bad("a list")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise bad(f"a list of {len(args)} items")
            return tuple(_coerce(a, v, source, f"{dotted}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        out = [_coerce(item, v, source, f"{dotted}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        kt, vt = args if args else (Any, Any)
        return {_coerce(kt, k, source, f"{dotted}.{k}"): _coerce(vt, v, source, f"{dotted}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("an integer")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)
        raise bad("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad("a string")
    if tp is Path:
        if isinstance(value, str | Path) and str(value):
            return Path(value)
        raise bad("a path")
    raise ConfigError(source, dotted, f"unsupported annotation {tp!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)
