"""eeca.config: typed YAML configs; every error names the file and the dotted field."""

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from eeca.config import ConfigError, FieldError, dump_config, from_dict, load_config, to_dict


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self):
        if self.lr <= 0:
            raise FieldError("lr", "must be positive")


@dataclass(frozen=True)
class Run:
    steps: int
    mode: Literal["hds", "hss", "lcs", "brs"] = "hds"
    out: Path = Path("runs/x")
    tags: list[str] = field(default_factory=list)
    sizes: tuple[int, ...] = (1,)
    weights: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    resume: bool = True
    optim: Optim = field(default_factory=Optim)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.mode == "lcs" and self.seed is None and self.resume:
            raise ValueError("lcs with resume needs a seed or mode to change")


def _yaml(tmp_path, text):
    p = tmp_path / "run.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_load_types_nested_and_defaults(tmp_path):
    p = _yaml(tmp_path, "# eeca x --config run.yaml\nsteps: 10\nmode: hss\nout: runs/a\ntags: [a, b]\n"
                        "sizes: [2, 4]\nweights: {l_hc: 1, l_eac: 0.5}\noptim: {lr: 2e-3, betas: [0.8, 0.9]}\n")
    cfg = load_config(Run, p)
    assert cfg == Run(steps=10, mode="hss", out=Path("runs/a"), tags=["a", "b"], sizes=(2, 4),
                      weights={"l_hc": 1.0, "l_eac": 0.5}, optim=Optim(lr=0.002, betas=(0.8, 0.9)))
    assert isinstance(cfg.weights["l_hc"], float) and isinstance(cfg.out, Path)
    assert dataclasses.is_dataclass(cfg) and load_config(Run, _yaml(tmp_path, "steps: 3")) == Run(steps=3)


def test_overrides_apply_before_validation_and_round_trip(tmp_path):
    p = _yaml(tmp_path, "steps: 10\n")
    cfg = load_config(Run, p, ["optim.lr=0.5", "mode=brs", "tags=[x]", "seed=null", "steps=20", "out=elsewhere"])
    assert (cfg.optim.lr, cfg.mode, cfg.tags, cfg.seed, cfg.steps, cfg.out) == (0.5, "brs", ["x"], None, 20, Path("elsewhere"))
    assert from_dict(Run, to_dict(cfg)) == cfg
    assert load_config(Run, _yaml(tmp_path, dump_config(cfg))) == cfg


@pytest.mark.parametrize("text, overrides, field, message", [
    ("mode: hds\n", [], "steps", "required field is missing"),
    ("steps: 1\nstpes: 2\n", [], "stpes", "unknown field"),
    ("steps: 1\noptim: {lr: 1, momentum: 0.9}\n", [], "optim.momentum", "unknown field"),
    ("steps: ten\n", [], "steps", "expected an integer, got 'ten'"),
    ("steps: 1.5\n", [], "steps", "expected an integer"),
    ("steps: true\n", [], "steps", "expected an integer"),
    ("steps: 1\nresume: 'yes'\n", [], "resume", "expected true or false"),
    ("steps: 1\nmode: random\n", [], "mode", "must be one of ['hds', 'hss', 'lcs', 'brs']"),
    ("steps: 1\ntags: a\n", [], "tags", "expected a list"),
    ("steps: 1\ntags: [a, 3]\n", [], "tags[1]", "expected a string"),
    ("steps: 1\nsizes: [1, x]\n", [], "sizes[1]", "expected an integer"),
    ("steps: 1\noptim: {betas: [0.9]}\n", [], "optim.betas", "a list of 2 items"),
    ("steps: 1\nweights: {l_hc: high}\n", [], "weights.l_hc", "expected a number"),
    ("steps: 1\noptim: 3\n", [], "optim", "expected a mapping"),
    ("steps: 1\nseed: 1.5\n", [], "seed", "expected int or NoneType"),
    ("steps: 1\nout: ''\n", [], "out", "expected a path"),
    ("steps: 0\n", [], "steps", "steps must be at least 1"),  # a plain ValueError naming one field
    ("steps: 1\noptim: {lr: -1}\n", [], "optim.lr", "must be positive"),  # FieldError, nested
    ("steps: 1\nmode: lcs\n", [], "<root>", "needs a seed"),  # names two fields: the whole config
    ("steps: 1\n", ["steps"], "steps", "an override must look like"),
    ("steps: 1\n", ["steps.x=1"], "steps.x", "'steps' is not a mapping"),
    ("steps: 1\n", ["optim.lr=fast"], "optim.lr", "expected a number"),
    ("- steps\n", [], "<root>", "expected a mapping, got list"),
    ("steps: [1\n", [], "line 2", "invalid YAML"),
    ("steps: 1\n  mode: hss\n", [], "line 2", "invalid YAML"),
])
def test_every_error_names_file_and_field(tmp_path, text, overrides, field, message):
    p = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(Run, p, overrides)
    assert info.value.field == field
    # an error in what an override set blames the override, not the file
    source = f"--overrides {overrides[0]}" if overrides else p
    assert str(info.value).startswith(f"{source}: field '{field}': ")
    assert message in str(info.value)


def test_an_override_error_blames_the_override_and_a_file_error_the_file(tmp_path):
    p = _yaml(tmp_path, "steps: 1\noptim: {lr: fast}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(p))}: field 'optim.lr'"):
        load_config(Run, p, ["steps=2"])
    with pytest.raises(ConfigError, match=r"^--overrides optim: field 'optim': an override must look like"):
        load_config(Run, p, ["optim"])
    with pytest.raises(ConfigError, match=r"^--overrides optim.lrr=1: field 'optim.lrr': unknown field"):
        load_config(Run, _yaml(tmp_path, "steps: 1\n"), ["optim.lrr=1"])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: field '<file>': cannot read"):
        load_config(Run, tmp_path / "nope.yaml")


def test_yaml_tags_are_not_executed(tmp_path):
    p = _yaml(tmp_path, "steps: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Run, p)


def test_config_is_frozen(tmp_path):
    cfg = load_config(Run, _yaml(tmp_path, "steps: 2\n"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3


def test_a_renamed_field_is_refused_naming_the_new_one(tmp_path):
    from eeca.evaluate.judge import JudgeConfig
    from eeca.mgld.stages import MgldConfig

    judge = tmp_path / "judge.yaml"
    judge.write_text("generations: g.jsonl\ntest_json: t.json\nstructured: none\n")
    with pytest.raises(ConfigError, match=r"judge.yaml: field 'structured': renamed: write 'response_format'"):
        load_config(JudgeConfig, judge)
    for old, new in [("price_input_per_mtok=1", "price_input_per_1m"), ("concurrency=2", "max_concurrency")]:
        with pytest.raises(ConfigError, match=rf"--overrides {old}: field '{old.split('=')[0]}': renamed: write '{new}'"):
            load_config(JudgeConfig, judge, [old])
    mgld = tmp_path / "mgld.yaml"
    mgld.write_text((Path(__file__).resolve().parents[1] / "src/eeca/configs/synth/mgld.yaml").read_text())
    with pytest.raises(ConfigError, match=r"field 'annotator.concurrency': renamed: write 'annotator.max_concurrency'"):
        load_config(MgldConfig, mgld, ["annotator.concurrency=4"])
