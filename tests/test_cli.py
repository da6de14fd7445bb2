"""The ``eeca`` command: overview, version, --help of every verb, unknown verbs, signature-driven options."""

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from cli_env import eeca_env
from eeca import __version__
from eeca.cli import COMMANDS, _resolve, _split_doc, build_parser, main


def test_help_lists_every_verb(run_eeca):
    out = run_eeca("--help").stdout
    for verb in COMMANDS:
        assert f"  {verb} " in out
    assert run_eeca().stdout == out  # no arguments: the same overview


def test_version(run_eeca):
    assert run_eeca("--version").stdout.strip() == f"eeca {__version__}"


def test_help_does_not_import_heavy_libraries():
    code = "import sys; from eeca.cli import main; main(['--help']); print(sorted({'torch', 'pyarrow', 'transformers'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=eeca_env(), check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_every_verb_has_help_for_every_option(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([*verb.split(), "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    fn = _resolve(COMMANDS[verb])
    assert inspect.isfunction(fn), f"{verb}: {COMMANDS[verb]} is not a plain function"
    summary, arg_help = _split_doc(inspect.getdoc(fn))
    assert out.startswith(f"usage: eeca {verb}") and summary.splitlines()[0] in out
    for name in inspect.signature(fn).parameters:
        assert arg_help.get(name), f"{verb}: option {name!r} has no help in the docstring's Args section"


def test_group_lists_its_verbs(capsys):
    assert main(["gldv2"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {v} " in out for v in COMMANDS if v.startswith("gldv2 "))


@pytest.mark.parametrize("argv", [["frobnicate"], ["gldv2", "frobnicate"]])
def test_unknown_verb_exits_2(argv, run_eeca):
    proc = run_eeca(*argv, check=False)
    assert proc.returncode == 2
    assert f"unknown command {' '.join(argv)!r}" in proc.stderr


def sample(root: Path, mode: Literal["hds", "lcs"] = "hds", size: int = 10, names: list[str] | None = None,
           scale: float | None = None, resume: bool = True) -> None:
    """Do a sample thing.

    Args:
        root: where it happens
        mode: which way
            (a continued line)
    """


def test_parser_follows_the_signature():
    parser = build_parser("eeca sample", sample)
    args = vars(parser.parse_args(["/data", "--mode", "lcs", "--size", "3", "--names", "a", "b", "--no-resume",
                                   "--scale", "0.5"]))
    assert args == {"root": Path("/data"), "mode": "lcs", "size": 3, "names": ["a", "b"], "scale": 0.5, "resume": False}
    assert vars(parser.parse_args(["r"])) == {"root": Path("r"), "mode": "hds", "size": 10, "names": None,
                                              "scale": None, "resume": True}
    text = parser.format_help()
    assert "where it happens" in text and "which way (a continued line) (default: hds)" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["r", "--mode", "bogus"])
    with pytest.raises(SystemExit):
        parser.parse_args(["r", "--size", "many"])
