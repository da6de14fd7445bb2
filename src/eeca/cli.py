"""The ``eeca`` command line: a map from subcommand to a plain typed function.

This is the only place argv is parsed. Each verb is a function elsewhere in the package whose
signature is its options and whose docstring is its help (first paragraph = description, an
``Args:`` section = per-option help). Modules are imported only when their verb runs, so
``eeca --help`` starts fast and does not import torch.

Parameters without a default become positional arguments; ``bool`` becomes ``--flag/--no-flag``;
``Literal`` becomes a choice; ``list[str]`` takes several values; ``X | None`` is optional.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Literal

from eeca import __version__

# verb -> "module:function". Multi-word verbs ("gldv2 ingest") are groups of subcommands.
COMMANDS: dict[str, str] = {
    "synth world": "eeca.synth.world:world_command",
    "synth models": "eeca.synth.models:models_command",
    "synth check": "eeca.synth.check:check_command",
    "gldv2 ingest": "eeca.gldv2.ingest:ingest_command",
    "gldv2 download": "eeca.gldv2.download:download_command",
    "report": "eeca.report.command:report_command",
    "mgld stage2": "eeca.mgld.stages:stage2_command",
    "mgld stage3": "eeca.mgld.stages:stage3_command",
    "mgld validate": "eeca.mgld.validate:validate_command",
    "generate": "eeca.evaluate.generate:generate_command",
    "judge": "eeca.evaluate.judge:judge_command",
    "metrics": "eeca.evaluate.metrics:metrics_command",
    "export": "eeca.evaluate.export:export_command",
    "model summary": "eeca.model.spec:summary_command",
    "score": "eeca.knowledge.score:score_command",
    "select": "eeca.knowledge.select:select_command",
    "mgld stage1": "eeca.knowledge.stage1:stage1_command",
    "knowledge analyze": "eeca.knowledge.analysis:analyze_command",
    "train": "eeca.train.recipes:train_command",
    "merge-lora": "eeca.train.lora:merge_lora_command",
    "synth pretrain": "eeca.synth.pretrain:pretrain_command",
    "experiment": "eeca.experiments.runner:experiment_command",
    "demo": "eeca.experiments.demo:demo_command",
    "study": "eeca.experiments.study:study_command",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview())
        return 0
    if argv[0] == "--version":
        print(f"eeca {__version__}")
        return 0
    verb, rest = _match_verb(argv)
    if verb is None:
        group = [v for v in COMMANDS if v.split()[0] == argv[0]]
        if group and (len(argv) == 1 or argv[1] in ("-h", "--help")):
            print(_overview(prefix=argv[0]))
            return 0
        print(f"eeca: unknown command {' '.join(argv[:2])!r}\n\n{_overview()}", file=sys.stderr)
        return 2
    fn = _resolve(COMMANDS[verb])
    parser = build_parser(f"eeca {verb}", fn)
    args = vars(parser.parse_args(rest))
    try:
        result = fn(**args)
    except Exception as e:
        from eeca.io import InputError  # imported here: `eeca --help` must not load pyarrow
        from eeca.llm_client import redact

        if not isinstance(e, InputError):
            raise
        print(f"eeca {verb}: error: {redact(e)}", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) and not isinstance(result, bool) else 0


def _match_verb(argv: list[str]) -> tuple[str | None, list[str]]:
    for n in (2, 1):
        candidate = " ".join(argv[:n])
        if len(argv) >= n and candidate in COMMANDS:
            return candidate, argv[n:]
    return None, argv


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _overview(prefix: str | None = None) -> str:
    lines = [f"eeca {__version__}: VE knowledge, MGLD and EECA (Beyond Sight, cognitive alignment in LVLMs)", "",
             "usage: eeca VERB [options]   (eeca VERB --help for its options)", "", "verbs:"]
    for verb, target in COMMANDS.items():
        if prefix and verb.split()[0] != prefix:
            continue
        lines.append(f"  {verb:<22} {_summary(target)}")
    return "\n".join(lines)


def _summary(target: str) -> str:
    """First docstring line of a verb without importing its module (read from the source)."""
    module, _, name = target.partition(":")
    # resolved by path: find_spec would import the parent packages (eeca.model imports transformers)
    path = Path(__file__).parent.joinpath(*module.split(".")[1:]).with_suffix(".py")
    if not path.exists():
        return ""
    src = path.read_text(encoding="utf-8")
    m = re.search(rf'def {name}\([^)]*\)[^:]*:\s*"""(.+)', src, flags=re.S)
    return m.group(1).strip().splitlines()[0] if m else ""


def build_parser(prog: str, fn) -> argparse.ArgumentParser:
    """An argparse parser from ``fn``'s signature and docstring."""
    doc = inspect.getdoc(fn) or ""
    description, arg_help = _split_doc(doc)
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(fn)
    for name, p in inspect.signature(fn).parameters.items():
        tp = hints.get(name, str)
        help_ = arg_help.get(name, "")
        flag = "--" + name.replace("_", "-")
        optional = False
        if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType):
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            optional = len(inner) < len(typing.get_args(tp))
            tp = inner[0]
        kw: dict = {"help": help_}
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=p.default if p.default is not p.empty else False, help=help_)
            continue
        origin = typing.get_origin(tp)
        if origin is Literal:
            kw["choices"] = list(typing.get_args(tp))
            kw["type"] = type(kw["choices"][0])
        elif origin in (list, tuple):
            item = (typing.get_args(tp) or (str,))[0]
            kw["nargs"] = "*"
            kw["type"] = item
        else:
            kw["type"] = tp
        if p.default is p.empty and not optional:
            parser.add_argument(name, metavar=name.upper(), **kw)
        else:
            default = None if p.default is p.empty else p.default
            if default is not None and default != [] and default != ():
                kw["help"] = f"{help_} (default: {default})".strip()
            parser.add_argument(flag, dest=name, default=default, **kw)
    return parser


def _split_doc(doc: str) -> tuple[str, dict[str, str]]:
    text, _, args = doc.partition("\nArgs:\n")
    helps: dict[str, str] = {}
    current = None
    for line in args.splitlines():
        m = re.match(r"\s{2,}(\w+):\s*(.*)", line)
        if m:
            current = m.group(1)
            helps[current] = m.group(2).strip()
        elif current and line.strip():
            helps[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return text.strip(), helps


if __name__ == "__main__":
    raise SystemExit(main())
