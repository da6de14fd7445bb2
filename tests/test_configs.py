"""Every shipped YAML in configs/ loads into its stage's dataclass and opens with the command that runs it.

Area tests check what a recipe's values mean (Table 5 in test_train_recipes, the annotator in
test_mgld_units, the world defaults in test_synth_world); this file checks the shared rules once:
the YAML validates, its first line is the exact command (``# eeca ...``, or the same behind an
``accelerate launch ... -m`` launcher or an ``OPENAI_API_KEY=...`` prefix) naming this file, and the
synthetic recipes keep to the demo's layout under ``runs/demo``.
"""

import importlib
import re
from pathlib import Path

import pytest
import yaml

from eeca.config import config_path, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "eeca" / "configs"

# file name -> "module:dataclass" (the same name under configs/synth and configs/paper)
CLASSES = {
    "world.yaml": "eeca.synth.config:SynthConfig",
    "score.yaml": "eeca.knowledge.score:ScoreConfig",
    "mgld.yaml": "eeca.mgld.stages:MgldConfig",
    "model.yaml": "eeca.model.spec:ModelConfig",
    **{f"stage{k}.yaml": "eeca.train.recipes:TrainConfig" for k in (1, 2, 3)},
    "generate.yaml": "eeca.evaluate.generate:GenerateConfig",
    "judge.yaml": "eeca.evaluate.judge:JudgeConfig",
    **{name: "eeca.experiments.runner:ExperimentConfig"
       for name in ("demo.yaml", "table1.yaml", "table2.yaml", "table3.yaml", "table4.yaml", "fig5.yaml",
                    "fig7.yaml", "study-grid.yaml")},
    "study.yaml": "eeca.experiments.study:StudyConfig",
}
YAMLS = sorted(CONFIGS.glob("*/*.yaml"))
# what may stand before `eeca`: environment variables, and a launcher that runs `python -m eeca`
PREFIX = re.compile(r"^# ((\w+=\S+ )*)(accelerate launch (--\S+ \S+ )*-m )?(?P<command>.*)$")


def _class(path: Path):
    module, _, name = CLASSES[path.name].partition(":")
    return getattr(importlib.import_module(module), name)


def test_every_yaml_has_a_dataclass():
    assert YAMLS and not [p.name for p in YAMLS if p.name not in CLASSES]


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_yaml_loads_and_opens_with_its_command(path):
    load_config(_class(path), path)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    command = PREFIX.match(first).group("command")
    assert command.startswith("eeca "), f"{path}: first line is not an eeca command: {first!r}"
    assert f"configs/{path.parent.name}/{path.name}" in command, f"{path}: first line does not name it: {first!r}"


def _strings(node):
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("synth/*.yaml")), ids=lambda p: p.name)
def test_synth_recipes_use_the_demo_layout(path):
    values = _strings(yaml.safe_load(path.read_text(encoding="utf-8")))
    stray = [v for v in values if v.startswith("runs/") and not v.startswith("runs/demo/")]
    assert not stray, f"{path}: paths outside runs/demo: {stray}"


def test_bad_values_are_named():
    from eeca.evaluate.generate import GenerateConfig
    from eeca.evaluate.judge import JudgeConfig

    with pytest.raises(ValueError, match="temperature"):
        load_config(GenerateConfig, CONFIGS / "synth" / "generate.yaml", ["temperature=0"])
    with pytest.raises(ValueError, match="field 'judge'"):
        load_config(JudgeConfig, CONFIGS / "synth" / "judge.yaml", ["judge=gpt"])


@pytest.mark.parametrize("name", ["synth/world", "synth/world.yaml", "configs/synth/world.yaml"])
def test_a_packaged_name_resolves_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_path(name) == CONFIGS / "synth" / "world.yaml"
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "world.yaml").write_text("{}\n")
    if name == "synth/world.yaml":  # a path that exists wins over the packaged name
        assert config_path(name) == Path(name)


def test_every_path_a_recipe_names_resolves():
    """train_recipe / generate / judge / grid / deepspeed / configs in the shipped YAMLs point at shipped files."""
    named = [v for p in YAMLS for v in _strings(yaml.safe_load(p.read_text(encoding="utf-8")))
             if v.startswith("configs/")]
    assert named and all(config_path(v).is_relative_to(CONFIGS) and config_path(v).exists() for v in named)


def test_config_list_copy_and_a_config_verb_work_outside_the_checkout(tmp_path, run_eeca):
    listed = run_eeca("config", "list", cwd=tmp_path).stdout.splitlines()
    assert {line.split()[0] for line in listed} == {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.*")}
    run_eeca("config", "copy", "synth/stage3", "mine", cwd=tmp_path)
    assert (tmp_path / "mine" / "stage3.yaml").read_bytes() == (CONFIGS / "synth" / "stage3.yaml").read_bytes()
    again = run_eeca("config", "copy", "synth/stage3", "mine", cwd=tmp_path, check=False)
    assert again.returncode == 2 and "exists; not overwritten" in again.stderr
    run_eeca("config", "copy", "synth", "all", cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "all" / "synth").iterdir()) == sorted(
        p.name for p in (CONFIGS / "synth").iterdir())
    proc = run_eeca("experiment", "synth/table1", "--overrides", "seed=3", "--print_config", cwd=tmp_path)
    assert "seed: 3" in proc.stdout and "train_recipe: configs/synth/stage3.yaml" in proc.stdout
    proc = run_eeca("train", "configs/synth/stage3.yaml", "--print_config", cwd=tmp_path)
    assert "stage: 3" in proc.stdout
