"""Table 3's rows mean what the paper's rows mean (paper 3.3, 5.2): the baseline and +data cells are the
plain LLaVA base, key for key, each row adds exactly one switch to the row above, and the HR branch is
created by the cells that turn it on (new, or from a pre-aligned stage-1 pass)."""

import dataclasses
from pathlib import Path

import pytest
import torch

from eeca.config import load_config
from eeca.experiments.grid import UNTRAINED, expand
from eeca.experiments.runner import ExperimentConfig, cells_of, train_overrides
from eeca.model import EecaForConditionalGeneration
from eeca.model.tiny import tiny_eeca
from eeca.train.recipes import HR_PREFIXES, ModelInit, TrainConfig, load_model_and_processor
from train_helpers import write_llava_json

CONFIGS = Path(__file__).parents[1] / "src" / "eeca" / "configs"
# what a row of Table 3 may switch; a trained row's subset is one switch (the data)
SWITCHES = ("use_hr_branch", "hc_loss_weight", "eac_loss_weight", "entity_prompt", "entity_prompt_at_inference")
NEW_WITH_HR = {"hr_resampler", "hr_projector", "eac_logit_scale"}


def switches(cell: dict) -> dict:
    trained = cell["ablation"] not in UNTRAINED
    return {"data": (cell["selection"], cell["size"]) if trained else None, **{k: cell[k] for k in SWITCHES}}


def save_base(folder: Path) -> Path:
    """A stage-2 stand-in as configs/*/stage1.yaml build it: plain LLaVA, no HR branch, no heads."""
    model, processor = tiny_eeca(use_hr_branch=False, hc_loss_weight=0.0, eac_loss_weight=0.0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def table3_grid(tmp_path: Path, name: str, **extra) -> ExperimentConfig:
    data = write_llava_json(tmp_path / "data", n=6)
    overrides = [f"base_model={save_base(tmp_path / 'base')}", f"train_records={data}", f"out={tmp_path / 'run'}",
                 *(f"{k}={v}" for k, v in extra.items())]
    return load_config(ExperimentConfig, CONFIGS / name / "table3.yaml", overrides)


def module_of(key: str) -> str:
    return key.split(".")[1] if key.startswith("model.") else key.split(".")[0]


@pytest.mark.parametrize("name", ["paper", "synth"])
@pytest.mark.parametrize("third", ["hc", "hr_eac"])  # + L_HC first (the config's), or + L_EAC first
def test_table3_rows_differ_in_exactly_one_switch_each(name, third):
    cfg = load_config(ExperimentConfig, CONFIGS / name / "table3.yaml")
    assert cfg.grid[0].ablations == ["baseline", "data", "hr", "hc", "eac"]
    grid = [dataclasses.replace(b, ablations=[third if a == "hc" else a for a in b.ablations]) for b in cfg.grid]
    by_step = {c["ablation"]: switches(c) for c in expand(grid, cfg.table, cfg.hc_weight, cfg.eac_weight, 0)}
    steps = list(by_step)
    assert steps == ["baseline", "data", "hr", third, "eac"]
    expected = ["data", "use_hr_branch", *(["hc_loss_weight", "eac_loss_weight"] if third == "hc" else
                                            ["eac_loss_weight", "hc_loss_weight"])]
    for above, step, switch in zip(steps[:-1], steps[1:], expected, strict=True):
        row, above = by_step[step], by_step[above]
        assert [k for k in row if row[k] != above[k]] == [switch], step
    assert by_step["baseline"]["use_hr_branch"] is False  # the baseline is plain LLaVA, like +data


def test_baseline_and_data_cells_load_their_base_with_no_missing_or_unexpected_keys(tmp_path, capsys):
    cfg = table3_grid(tmp_path, "synth")
    base = Path(cfg.base_model)
    report = {}
    for cell in cells_of(cfg):
        if cell["ablation"] in UNTRAINED:  # evaluated as the base is, as generation loads it
            _, info = EecaForConditionalGeneration.from_pretrained(base, output_loading_info=True)
        else:
            train = load_config(TrainConfig, cfg.train_recipe, train_overrides(cfg, cell, tmp_path / cell["ablation"]))
            assert train.model.checkpoint == base
            extra = {"hierarchical_labels": ["tower", "church", "bridge"]} if train.data.hierarchical_labels else {}
            _, info = EecaForConditionalGeneration.from_pretrained(
                base, output_loading_info=True, **train.model.config_overrides, **extra)
        assert not info["unexpected_keys"] and not info["mismatched_keys"], (cell["ablation"], info)
        report[cell["ablation"]] = sorted({module_of(k) for k in info["missing_keys"]})
    with capsys.disabled():
        print("\nnewly initialised modules per Table 3 cell (base: HR off):", report)
    assert report["baseline"] == report["data"] == []
    assert set(report["hr"]) == NEW_WITH_HR  # created by the cell that turns the HR branch on
    assert set(report["hc"]) == set(report["eac"]) == NEW_WITH_HR | {"hc_head"}


def test_data_cell_builds_no_loss_inputs_it_does_not_use(tmp_path):
    cfg = table3_grid(tmp_path, "synth")
    resolved = {c["ablation"]: load_config(TrainConfig, cfg.train_recipe, train_overrides(cfg, c, tmp_path))
                for c in cells_of(cfg) if c["ablation"] not in UNTRAINED}
    inputs = {a: (t.data.hierarchical_labels, t.data.entities) for a, t in resolved.items()}
    assert inputs == {"data": (False, False), "hr": (False, False), "hc": (True, False), "eac": (True, True)}


def test_hr_branch_from_a_pre_aligned_stage1_pass(tmp_path):
    base = save_base(tmp_path / "base")
    aligned, processor = tiny_eeca(seed=3, hc_loss_weight=0.0, eac_loss_weight=0.0)  # stage 1 with the HR branch on
    aligned.save_pretrained(tmp_path / "aligned")
    overrides = {"use_hr_branch": True, "hc_loss_weight": 0.0, "eac_loss_weight": 0.0}
    model, _ = load_model_and_processor(ModelInit(checkpoint=base, config_overrides=overrides,
                                                  hr_init=tmp_path / "aligned"), {})
    theirs = aligned.state_dict()
    hr = {k: v for k, v in model.state_dict().items() if k.startswith(HR_PREFIXES)}
    assert hr and all(torch.equal(v, theirs[k]) for k, v in hr.items())
    fresh, _ = load_model_and_processor(ModelInit(checkpoint=base, config_overrides=overrides), {})
    assert not torch.equal(fresh.model.hr_resampler.latents, aligned.model.hr_resampler.latents)
    # the experiment passes it to the HR cells only, and they get new ids
    cfg = table3_grid(tmp_path / "grid", "synth", hr_init=tmp_path / "aligned")
    for cell in cells_of(cfg):
        if cell["ablation"] in UNTRAINED:
            continue
        given = any(o.startswith("model.hr_init=") for o in train_overrides(cfg, cell, tmp_path))
        assert given == cell["use_hr_branch"] == ("hr_init" in cell)


def test_pre_aligned_branch_of_another_geometry_is_refused(tmp_path):
    base = save_base(tmp_path / "base")
    other, _ = tiny_eeca(num_hr_latents=4, hc_loss_weight=0.0, eac_loss_weight=0.0)
    other.save_pretrained(tmp_path / "other")
    init = ModelInit(checkpoint=base, config_overrides={"use_hr_branch": True, "eac_loss_weight": 0.0},
                     hr_init=tmp_path / "other")
    with pytest.raises(ValueError, match="model.hr_init: .* no HR branch of this model's geometry"):
        load_model_and_processor(init, {})
