"""The experiment grid: which cells a config makes, what each ablation switches on, stable cell ids."""

import pytest

from eeca.experiments.grid import GridSpec, cell_id, expand, train_switches


def test_ablation_steps_are_cumulative_as_in_table3():
    steps = {a: train_switches(a, hc_weight=0.5, eac_weight=2.0) for a in ("data", "hr", "hc", "hr_eac", "eac")}
    assert steps["hr_eac"] == {"use_hr_branch": True, "hc_loss_weight": 0.0, "eac_loss_weight": 2.0,
                               "entity_prompt": "none"}  # the other loss order: + L_EAC first
    assert steps["data"] == {"use_hr_branch": False, "hc_loss_weight": 0.0, "eac_loss_weight": 0.0, "entity_prompt": "none"}
    assert steps["hr"] == {"use_hr_branch": True, "hc_loss_weight": 0.0, "eac_loss_weight": 0.0, "entity_prompt": "none"}
    assert steps["hc"] == {"use_hr_branch": True, "hc_loss_weight": 0.5, "eac_loss_weight": 0.0, "entity_prompt": "none"}
    assert steps["eac"] == {"use_hr_branch": True, "hc_loss_weight": 0.5, "eac_loss_weight": 2.0, "entity_prompt": "none"}
    assert train_switches("entity_prompt_train", 1, 1)["entity_prompt"] == "train_and_infer"


def test_expand_makes_the_cross_product_and_one_untrained_baseline():
    blocks = [GridSpec(selections=["HDS", "BRS"], sizes=[10, 20], ablations=["baseline", "data"]),
              GridSpec(selections=["HDS"], sizes=[10], ablations=["baseline", "data", "eac", "entity_prompt_infer"])]
    cells = expand(blocks, "t", 1.0, 1.0, seed=0)
    keys = [(c["selection"], c["size"], c["ablation"]) for c in cells]
    # HDS-10-data and the baseline appear in both blocks but run once
    assert sorted(keys) == sorted([("none", 0, "baseline"), ("HDS", 10, "data"), ("HDS", 20, "data"),
                                   ("BRS", 10, "data"), ("BRS", 20, "data"), ("HDS", 10, "eac"),
                                   ("none", 0, "entity_prompt_infer")])
    infer = next(c for c in cells if c["ablation"] == "entity_prompt_infer")
    assert infer["entity_prompt_at_inference"] and infer["entity_prompt"] == "none"


def test_cell_ids_are_stable_and_change_with_any_setting():
    cell = expand([GridSpec(selections=["LCS"], sizes=[5], ablations=["hc"])], "t", 1.0, 1.0, seed=0)[0]
    assert cell_id(cell) == cell_id(dict(reversed(list(cell.items()))))
    assert cell_id(cell).startswith("LCS-5-hc-")
    assert cell_id({**cell, "hc_loss_weight": 0.5}) != cell_id(cell)
    assert cell_id({**cell, "seed": 1}) != cell_id(cell)


def test_bad_grid_values_are_rejected():
    with pytest.raises(ValueError, match="sizes"):
        GridSpec(sizes=[0])
    with pytest.raises(ValueError, match="ablations"):
        GridSpec(ablations=[])


@pytest.mark.parametrize("name", ["paper/table1", "paper/table2", "paper/table3", "paper/table4", "paper/fig5",
                                  "paper/fig7", "synth/fig7", "synth/table1", "synth/table2", "synth/table3", "synth/table4", "synth/demo"])
def test_experiment_grids_load_and_name_their_command(name):
    from pathlib import Path

    from eeca.config import load_config
    from eeca.experiments.runner import ExperimentConfig

    path = Path(__file__).parents[1] / "src" / "eeca" / "configs" / f"{name}.yaml"
    assert path.read_text().startswith(f"# eeca experiment configs/{name}.yaml")
    cfg = load_config(ExperimentConfig, path)
    cells = expand(cfg.grid, cfg.table, cfg.hc_weight, cfg.eac_weight, cfg.seed)
    if name.endswith("fig7"):  # Figure 7: the three sweeps, each over full EECA
        assert {c["sweep"]["param"] for c in cells} == {"eac_loss_weight", "eac_sigma", "num_hr_latents"}
        assert {c["ablation"] for c in cells} == {"eac"}
    else:
        assert any(c["ablation"] == "baseline" for c in cells)


def test_sweep_repeats_cells_per_value_and_passes_the_value_on(tmp_path):
    from eeca.experiments.grid import model_overrides

    blocks = [GridSpec(selections=["HSS"], sizes=[5], ablations=["eac"], sweep="eac_loss_weight", values=[0.5, 2]),
              GridSpec(selections=["HSS"], sizes=[5], ablations=["eac"], sweep="eac_sigma", values=[0.0, 0.2]),
              GridSpec(selections=["HSS"], sizes=[5], ablations=["hr", "eac"], sweep="num_hr_latents", values=[4, 8])]
    cells = expand(blocks, "fig7", 1.0, 1.0, seed=0)
    got = [(c["ablation"], c["sweep"]["param"], c["sweep"]["value"], c["eac_loss_weight"]) for c in cells]
    assert got == [("eac", "eac_loss_weight", 0.5, 0.5), ("eac", "eac_loss_weight", 2.0, 2.0),
                   ("eac", "eac_sigma", 0.0, 1.0), ("eac", "eac_sigma", 0.2, 1.0),
                   ("hr", "num_hr_latents", 4, 0.0), ("hr", "num_hr_latents", 8, 0.0),
                   ("eac", "num_hr_latents", 4, 1.0), ("eac", "num_hr_latents", 8, 1.0)]
    assert len({cell_id(c) for c in cells}) == 8 and cell_id(cells[3]).startswith("HSS-5-eac-eac_sigma=0.2-")
    assert [model_overrides(c) for c in cells[:4]] == [{}, {}, {"eac_sigma": 0.0}, {"eac_sigma": 0.2}]
    assert model_overrides(cells[4]) == {"num_hr_latents": 4}
    # an unswept cell keeps its id: the sweep key is only there when a block sweeps
    plain = expand([GridSpec(selections=["HSS"], sizes=[5], ablations=["eac"])], "fig7", 1.0, 1.0, seed=0)[0]
    assert "sweep" not in plain and model_overrides(plain) == {}


def test_sweep_reaches_the_training_recipe(tmp_path):
    from eeca.experiments.runner import train_overrides

    cfg = type("Cfg", (), {"base_model": "base", "hr_init": None, "train_overrides": []})()
    cell = expand([GridSpec(selections=["HSS"], sizes=[5], ablations=["eac"], sweep="num_hr_latents", values=[32])],
                  "fig7", 1.0, 1.0, seed=0)[0]
    assert "model.config_overrides.num_hr_latents=32" in train_overrides(cfg, cell, tmp_path)
    cell = expand([GridSpec(selections=["HSS"], sizes=[5], ablations=["eac"], sweep="eac_loss_weight", values=[4])],
                  "fig7", 1.0, 1.0, seed=0)[0]
    assert "model.config_overrides.eac_loss_weight=4.0" in train_overrides(cfg, cell, tmp_path)


@pytest.mark.parametrize(("block", "match"), [
    ({"sweep": "lr", "values": [1]}, "sweep must be one of"),
    ({"sweep": "eac_sigma", "values": []}, "at least one value"),
    ({"values": [1.0]}, "values given without sweep"),
    ({"sweep": "eac_sigma", "values": [0.1], "ablations": ["data", "eac"]}, "ablation.s. data do not use it"),
    ({"sweep": "hc_loss_weight", "values": [1.0], "ablations": ["hr_eac"]}, "hr_eac do not use it"),
    ({"sweep": "eac_sigma", "values": [1.0]}, r"\[0, 1\)"),
    ({"sweep": "num_hr_latents", "values": [2.5]}, "whole numbers"),
    ({"sweep": "eac_loss_weight", "values": [-1.0]}, ">= 0"),
])
def test_bad_sweeps_are_rejected(block, match):
    with pytest.raises(ValueError, match=match):
        GridSpec(**{"ablations": ["eac"], **block})
