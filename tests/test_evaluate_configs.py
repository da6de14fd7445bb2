"""The shipped evaluate configs load into their dataclasses and open with the command that runs them."""

from pathlib import Path

import pytest

from eeca.config import load_config
from eeca.evaluate.generate import GenerateConfig
from eeca.evaluate.judge import JudgeConfig

ROOT = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name,cls,verb", [("generate", GenerateConfig, "generate"), ("judge", JudgeConfig, "judge")])
@pytest.mark.parametrize("scale", ["synth", "paper"])
def test_config_loads_and_names_its_command(scale, name, cls, verb):
    path = ROOT / scale / f"{name}.yaml"
    load_config(cls, path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and f"eeca {verb} configs/{scale}/{name}.yaml" in first.replace("-m eeca", "eeca")


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="temperature"):
        load_config(GenerateConfig, ROOT / "synth" / "generate.yaml", ["temperature=0"])
    with pytest.raises(ValueError, match="field 'judge'"):
        load_config(JudgeConfig, ROOT / "synth" / "judge.yaml", ["judge=gpt"])
