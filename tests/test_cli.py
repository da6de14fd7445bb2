"""The ``eeca`` command: overview, version, --help of every verb, unknown verbs, signature-driven options."""

import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import yaml

from cli_env import eeca_env
from eeca import __version__
from eeca.cli import COMMANDS, UsageError, _resolve, _split_doc, build_parser, main, parse

ROOT = Path(__file__).resolve().parents[1]


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


def test_verbs_are_listed_in_pipeline_order_each_with_a_summary(run_eeca):
    lines = [ln for ln in run_eeca("--help").stdout.splitlines() if ln.startswith("  ")]
    assert [ln.split("  ")[1].strip() for ln in lines] == list(COMMANDS)
    assert all(len(ln.split()) > 3 for ln in lines), "a verb without a one-line summary"
    order = list(COMMANDS)
    assert order.index("score") < order.index("select") < order.index("mgld stage1") < order.index("train") \
        < order.index("generate") < order.index("judge") < order.index("report")


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_every_verb_has_help_for_every_option(verb, capsys):
    assert main([*verb.split(), "--help"]) == 0
    out = capsys.readouterr().out
    fn = _resolve(COMMANDS[verb])
    assert inspect.isfunction(fn), f"{verb}: {COMMANDS[verb]} is not a plain function"
    summary, arg_help = _split_doc(inspect.getdoc(fn))
    assert out.startswith(f"usage: eeca {verb}") and "--print_config" in out
    squeeze = lambda text: "".join(text.split())  # noqa: E731  (the help is wrapped, at hyphens too)
    assert squeeze(summary.splitlines()[0]) in squeeze(out)
    for name in inspect.signature(fn).parameters:
        assert arg_help.get(name), f"{verb}: option {name!r} has no help in the docstring's Args section"
        assert squeeze(arg_help[name]) in squeeze(out), f"{verb}: help of {name!r} not shown"


def test_group_lists_its_verbs(capsys):
    assert main(["gldv2"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {v} " in out for v in COMMANDS if v.startswith("gldv2 "))


@pytest.mark.parametrize("argv, suggestion", [(["frobnicate"], None), (["gldv2", "frobnicate"], None),
                                              (["trian"], "train"), (["mgld", "stage4"], "mgld stage3"),
                                              (["experiments"], "experiment")])
def test_unknown_verb_exits_2_with_a_suggestion(argv, suggestion, run_eeca):
    proc = run_eeca(*argv, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert f"unknown command {' '.join(argv)!r}" in proc.stderr
    assert (f"did you mean {suggestion!r}" in proc.stderr) if suggestion else "did you mean" not in proc.stderr


def sample(root: Path, mode: Literal["hds", "lcs"] = "hds", size: int = 10, names: list[str] | None = None,
           scale: float | None = None, resume: bool = True, judge: Literal["llm", "rule"] | None = None,
           overrides: list[str] | None = None) -> dict:
    """Do a sample thing.

    Args:
        root: where it happens
        mode: which way
            (a continued line)
        size: how many
        names: which ones
        scale: how big
        resume: go on
        judge: who judges
        overrides: field=value changes
    """
    return locals()


def parsed(argv):
    parser = build_parser("eeca sample", sample)
    return parse(parser, sample, argv)[0]


def test_parser_follows_the_signature():
    assert parsed(["/data", "--mode", "lcs", "--size", "3", "--names", "a", "b", "--no_resume", "--scale", "0.5",
                   "--judge", "rule", "--overrides", "a.b=1", "c=[1, 2]"]) == {
        "root": Path("/data"), "mode": "lcs", "size": 3, "names": ["a", "b"], "scale": 0.5, "resume": False,
        "judge": "rule", "overrides": ["a.b=1", "c=[1, 2]"]}
    assert parsed(["r"]) == {"root": Path("r"), "mode": "hds", "size": 10, "names": [], "scale": None,
                             "resume": True, "judge": None, "overrides": []}
    assert parsed(["r", "--resume"])["resume"] is True
    text = " ".join(build_parser("eeca sample", sample).format_help().split())
    assert "where it happens" in text and "which way (a continued line)" in text and "default: hds" in text


def test_choices_are_taken_in_either_case():
    assert parsed(["r", "--mode", "LCS", "--judge", "Rule"])["mode"] == "lcs"
    assert parsed(["r", "--judge", "RULE"])["judge"] == "rule"


@pytest.mark.parametrize("argv, message", [
    (["r", "--mode", "bogus"], "bogus"),
    (["r", "--size", "many"], "many"),
    (["r", "--sise", "3"], "unknown option '--sise' (did you mean '--size'?)"),
    (["r", "--print_confg"], "did you mean '--print_config'?"),
    (["r", "a.b=1"], "'a.b=1': overrides are written --overrides a.b=1"),
])
def test_bad_command_lines_are_usage_errors(argv, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parsed(argv)


def test_one_override_grammar_for_every_verb_that_reads_a_config():
    """Every verb with an ``overrides`` parameter takes them as ``--overrides``; none takes them positionally."""
    for verb, target in COMMANDS.items():
        fn = _resolve(target)
        if "overrides" not in inspect.signature(fn).parameters:
            continue
        parser = build_parser(f"eeca {verb}", fn)
        multi = [a for a in parser._actions if "--overrides" in a.option_strings]
        assert multi and multi[0].nargs == "+", verb


def test_cli_errors_are_one_line_with_status_2(tmp_path, run_eeca):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("seeds: [0]\n")
    for argv, message in [
        (["train", "cfg.yaml", "optim.max_steps=2"], "overrides are written --overrides optim.max_steps=2"),
        (["generate", "c.yaml", "o", "--num_chunk", "2"], "did you mean '--num_chunks'?"),
        (["train", tmp_path / "none.yaml"], f"{tmp_path / 'none.yaml'}: field '<file>': cannot read"),
    ]:
        proc = run_eeca(*argv, check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr


def test_an_override_typo_blames_the_override_not_the_file(run_eeca, tmp_path):
    recipe = ROOT / "src" / "eeca" / "configs" / "synth" / "stage1.yaml"
    proc = run_eeca("train", recipe, "--overrides", "optim.max_stepz=2", check=False)
    assert proc.returncode == 2
    assert "--overrides optim.max_stepz=2: field 'optim.max_stepz': unknown field" in proc.stderr
    assert str(recipe) not in proc.stderr


def test_print_config_shows_the_resolved_config_and_runs_nothing(run_eeca, tmp_path):
    recipe = ROOT / "src" / "eeca" / "configs" / "synth" / "stage1.yaml"
    proc = run_eeca("train", recipe, "--overrides", "optim.max_steps=7", f"output_dir={tmp_path / 'run'}",
                    "--print_config")
    head, _, body = proc.stdout.partition("# TrainConfig from ")
    assert yaml.safe_load(head)["overrides"] == ["optim.max_steps=7", f"output_dir={tmp_path / 'run'}"]
    resolved = yaml.safe_load(body.partition("\n")[2])
    assert resolved["optim"]["max_steps"] == 7 and resolved["stage"] == 1
    assert not (tmp_path / "run").exists()
