"""The ``eeca`` command line: a map from verb to a plain typed function, parsed by jsonargparse.

This is the only place argv is parsed. Each verb is a function elsewhere in the package whose
signature is its options and whose docstring is its help (first paragraph = description, an
``Args:`` section = per-option help); jsonargparse derives the parser from it, so a parameter added
to a verb function is on the command line with no edit here. Modules (and jsonargparse) are
imported only when their verb runs, so ``eeca --help`` starts fast and does not import torch.

One grammar for every verb:

* parameters without a default are positional arguments, the others ``--name VALUE`` options
  (underscores as in the signature: ``--num_chunks 4``);
* ``bool`` is ``--name`` / ``--no_name``; ``list[X]`` takes several values (``--only a b``);
* ``Literal`` is a choice, matched in either case (``HDS`` or ``hds``);
* configuration overrides are ``--overrides field.sub=value ...`` on every verb that reads a config;
* ``--print_config`` prints the verb's options and the configuration it would run with, then stops.

Mistyped verbs and options get a "did you mean"; every usage or input error is one line on stderr
and exit code 2.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Literal

from eeca import __version__

# verb -> "module:function", in pipeline order (the order of `eeca --help`). Multi-word verbs
# ("gldv2 ingest") are groups of subcommands.
COMMANDS: dict[str, str] = {
    "config list": "eeca.config:config_list_command",
    "config copy": "eeca.config:config_copy_command",
    "gldv2 download": "eeca.gldv2.download:download_command",
    "gldv2 ingest": "eeca.gldv2.ingest:ingest_command",
    "synth world": "eeca.synth.world:world_command",
    "synth models": "eeca.synth.models:models_command",
    "synth check": "eeca.synth.check:check_command",
    "model summary": "eeca.model.spec:summary_command",
    "score": "eeca.knowledge.score:score_command",
    "select": "eeca.knowledge.select:select_command",
    "knowledge analyze": "eeca.knowledge.analysis:analyze_command",
    "mgld stage1": "eeca.knowledge.stage1:stage1_command",
    "mgld stage2": "eeca.mgld.stages:stage2_command",
    "mgld stage3": "eeca.mgld.stages:stage3_command",
    "mgld validate": "eeca.mgld.validate:validate_command",
    "synth pretrain": "eeca.synth.pretrain:pretrain_command",
    "train": "eeca.train.recipes:train_command",
    "merge-lora": "eeca.train.lora:merge_lora_command",
    "generate": "eeca.evaluate.generate:generate_command",
    "judge": "eeca.evaluate.judge:judge_command",
    "metrics": "eeca.evaluate.metrics:metrics_command",
    "export": "eeca.evaluate.export:export_command",
    "report": "eeca.report.command:report_command",
    "experiment": "eeca.experiments.runner:experiment_command",
    "study": "eeca.experiments.study:study_command",
    "demo": "eeca.experiments.demo:demo_command",
}

OVERRIDES = "overrides"  # the parameter name of a verb's configuration overrides
_OLD_OVERRIDE = re.compile(r"[A-Za-z_]\w*(\.\w+)*=")


class UsageError(Exception):
    """A command line that does not fit the verb; printed as one line, exit code 2."""


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
        typed = " ".join(argv[:2]) if group else argv[0]
        # within a group the second word is compared, else "gldv2 frobnicate" resembles "gldv2 download"
        known = {v.split()[1]: v for v in group} if group else {v: v for v in COMMANDS}
        close = difflib.get_close_matches(typed.split()[-1], list(known), n=1, cutoff=0.6)
        hint = f" (did you mean {known[close[0]]!r}?)" if close else ""
        print(f"eeca: unknown command {typed!r}{hint}; eeca --help lists the verbs", file=sys.stderr)
        return 2
    from eeca.config import ConfigPrinted, print_only
    from eeca.io import InputError  # imported here: `eeca --help` must not load pyarrow
    from eeca.llm_client import redact
    from eeca.logs import progress_for_logs, quiet_expected_warnings

    quiet_expected_warnings()  # before the verb's module imports DeepSpeed and transformers
    progress_for_logs()  # before it imports tqdm
    fn = _resolve(COMMANDS[verb])
    try:
        parser = build_parser(f"eeca {verb}", fn)
        if any(a in ("-h", "--help") for a in rest):
            print(parser.format_help())
            return 0
        kwargs, print_config = parse(parser, fn, rest)
    except UsageError as e:
        print(f"eeca {verb}: error: {e} (see eeca {verb} --help)", file=sys.stderr)
        return 2
    try:
        if print_config:
            print(_dump_options(parser, kwargs), end="")
            if kwargs.get("config") is None:
                return 0
            with print_only():
                fn(**kwargs)
            return 0
        result = fn(**kwargs)
    except ConfigPrinted:
        return 0
    except InputError as e:
        print(f"eeca {verb}: error: {redact(e)}", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) and not isinstance(result, bool) else 0


def _match_verb(argv: list[str]) -> tuple[str | None, list[str]]:
    for n in (2, 1):
        candidate = " ".join(argv[:n])
        if len(argv) >= n and candidate in COMMANDS:
            return candidate, argv[n:]
    return None, argv


def _did_you_mean(typed: str, known) -> str:
    close = difflib.get_close_matches(typed, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _overview(prefix: str | None = None) -> str:
    lines = [f"eeca {__version__}: VE knowledge, MGLD and EECA (Beyond Sight, cognitive alignment in LVLMs)", "",
             "usage: eeca VERB [options]   (eeca VERB --help for its options)", "",
             "verbs, in pipeline order:"]
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
    tree = ast.parse(path.read_text(encoding="utf-8"))
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return (ast.get_docstring(fn) or "").strip().splitlines()[0]


def build_parser(prog: str, fn):
    """A jsonargparse parser from ``fn``'s signature and docstring (see the module docstring)."""
    from jsonargparse import ActionYesNo, ArgumentParser

    description, arg_help = _split_doc(inspect.getdoc(fn) or "")
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False,
                            env_prefix=False, print_config=None)
    hints = typing.get_type_hints(fn)
    signature = inspect.signature(fn)
    typed = []
    for p in signature.parameters.values():
        tp, optional = _unwrap_optional(hints.get(p.name, str))
        default = None if p.default is p.empty else p.default
        help_ = arg_help.get(p.name, "")
        if tp is bool:
            parser.add_argument(f"--{p.name}", action=ActionYesNo(no_prefix="no_"), default=bool(default),
                                help=help_)
        elif typing.get_origin(tp) in (list, tuple):
            item = (typing.get_args(tp) or (str,))[0]
            metavar = "FIELD=VALUE" if p.name == OVERRIDES else p.name.upper()
            if p.default is p.empty and p.name != OVERRIDES:  # a required list is positional: `eeca report A B`
                parser.add_argument(p.name, nargs="+", type=item, metavar=metavar, help=help_ + " (one or more)")
            else:
                parser.add_argument(f"--{p.name}", nargs="+", type=item, default=list(default or []),
                                    metavar=metavar, help=help_ + " (several values)")
        else:
            typed.append(p.replace(annotation=_any_case(hints.get(p.name, str)) if _has_literal(tp) else
                                   hints.get(p.name, str)))
    proxy = _proxy(fn, signature.replace(parameters=typed))
    parser.add_function_arguments(proxy, as_positional=True, as_group=False)
    parser.add_argument("--print_config", action="store_true",
                        help="print the options and the configuration the verb would run with, then stop")
    return parser


def parse(parser, fn, argv: list[str]) -> tuple[dict, bool]:
    """The keyword arguments of ``fn`` from ``argv``, and whether --print_config was given."""
    from jsonargparse import ArgumentError

    options = sorted({s for a in parser._actions for s in a.option_strings})
    argv = [_underscored(tok, options) for tok in argv]  # --dry-run is --dry_run
    for i, tok in enumerate(argv):
        name = tok.split("=", 1)[0]
        if tok.startswith("--") and name not in options:
            raise UsageError(f"unknown option {name!r}{_did_you_mean(name, options)}")
        if _OLD_OVERRIDE.match(tok) and not _in_list_option(argv, i, parser):
            raise UsageError(f"{tok!r}: overrides are written --overrides {tok}")
    try:
        ns = parser.parse_args(argv)
    except ArgumentError as e:
        raise UsageError(" ".join(str(e).split())) from None
    kwargs = {k: v for k, v in vars(ns).items() if k != "print_config"}
    hints = typing.get_type_hints(fn)
    for name, value in kwargs.items():
        choices = _literal_choices(hints.get(name))
        if choices and isinstance(value, str):
            kwargs[name] = next(c for c in choices if c.lower() == value.lower())
    return kwargs, ns.print_config


def _underscored(tok: str, options: list[str]) -> str:
    """An option spelled with dashes between words (``--chunk-idx``) as the parser names it (``--chunk_idx``)."""
    name, eq, value = tok.partition("=")
    if not tok.startswith("--") or name in options:
        return tok
    spelled = "--" + name[2:].replace("-", "_")
    return spelled + eq + value if spelled in options else tok


def _in_list_option(argv: list[str], i: int, parser) -> bool:
    """Whether ``argv[i]`` is one of the values of a several-values option such as --overrides."""
    multi = {s for a in parser._actions if a.nargs == "+" for s in a.option_strings}
    for tok in reversed(argv[:i]):
        if tok.startswith("-"):
            return tok in multi
    return False


def _dump_options(parser, kwargs: dict) -> str:
    import yaml

    plain = {k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}
    return f"# {parser.prog} options\n" + yaml.safe_dump(plain, sort_keys=False)


def _unwrap_optional(tp) -> tuple[typing.Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            return inner[0], len(inner) < len(typing.get_args(tp))
    return tp, False


def _has_literal(tp) -> bool:
    return _literal_choices(tp) is not None


def _literal_choices(tp) -> tuple | None:
    tp, _ = _unwrap_optional(tp)
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else None


def _any_case(tp):
    """``Literal['hds', ...]`` (or ``| None``) as a string type that takes the choices in either case."""
    from jsonargparse.typing import restricted_string_type

    choices = _literal_choices(tp)
    name = "{" + ",".join(choices) + "}"
    ci = restricted_string_type(name, "(?i)^(" + "|".join(re.escape(c) for c in choices) + ")$")
    return ci | None if _unwrap_optional(tp)[1] else ci


def _proxy(fn, signature: inspect.Signature):
    """A stand-in for ``fn`` that jsonargparse reads: ``signature`` and ``fn``'s docstring."""

    def proxy(**kwargs):
        return fn(**kwargs)

    proxy.__name__, proxy.__doc__, proxy.__module__ = fn.__name__, fn.__doc__, fn.__module__
    proxy.__signature__ = signature
    proxy.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    return proxy


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
