"""``eeca experiment`` end to end on a tiny EECA model: results table, skipped finished cells, kill -9 resume."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cli_env import eeca_env
from eeca.config import load_config
from eeca.experiments.runner import ExperimentConfig, cells_of, run_experiment
from train_helpers import save_tiny_eeca, stage3_config, write_llava_json


def write_grid(tmp: Path, ablations: list[str], selections=("HDS", "BRS")) -> Path:
    base = save_tiny_eeca(tmp / "base")
    data = write_llava_json(tmp / "data", n=10)
    records = json.loads(data.read_text())
    for i, r in enumerate(records):  # distinct S and RSR so that HDS and BRS differ
        r["s_gt"], r["rsr"] = 0.1 + 0.05 * i, 1.0 - 0.09 * ((i * 7) % 10)
    (tmp / "data" / "train.json").write_text(json.dumps(records[:7]))
    (tmp / "data" / "test.json").write_text(json.dumps(records[7:]))
    stage3 = stage3_config(tmp, base, tmp / "data" / "train.json", max_steps=2, save_steps=1)
    stage3["data"]["eval_path"] = None
    recipes = {
        "stage3.yaml": stage3,
        "generate.yaml": {"model": str(base), "test_json": str(tmp / "data" / "test.json"),
                          "image_root": str(tmp / "data"), "k": 2, "max_new_tokens": 4, "batch_size": 2},
        "judge.yaml": {"generations": "unset", "test_json": str(tmp / "data" / "test.json"), "judge": "rule",
                       "bootstrap_samples": 200},
        "grid.yaml": {"out": str(tmp / "run"), "table": "t", "base_model": str(base),
                      "train_records": str(tmp / "data" / "train.json"), "train_recipe": str(tmp / "stage3.yaml"),
                      "generate": str(tmp / "generate.yaml"), "judge": str(tmp / "judge.yaml"),
                      "grid": [{"selections": list(selections), "sizes": [3], "ablations": ablations}]},
    }
    for name, body in recipes.items():
        (tmp / name).write_text(yaml.safe_dump(body))
    return tmp / "grid.yaml"


def test_grid_runs_every_cell_once_into_one_results_table(tmp_path):
    cfg = load_config(ExperimentConfig, write_grid(tmp_path, ["baseline", "data", "eac"]))
    first = run_experiment(cfg)
    assert first["cells"] == 5 and len(first["ran"]) == 5 and first["results"] == 5
    rows = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    assert sorted((r["selection"], r["ablation"]) for r in rows) == [
        ("BRS", "data"), ("BRS", "eac"), ("HDS", "data"), ("HDS", "eac"), ("none", "baseline")]
    for r in rows:
        assert r["n"] == 3 and r["n_failed"] == 0
        assert r["accuracy"] == pytest.approx(r["strongly_known"] + r["known"])
        levels = [r[f"count_{lv}"] for lv in ("strongly_known", "known", "weakly_unknown", "unknown")]
        assert sum(levels) == r["n"]
        controls = json.loads((tmp_path / "run" / r["cell_dir"] / "controls.json").read_text())
        assert controls["degenerate"]["answers"] == 3 * 2 and r["degenerate_pct"] == controls["degenerate"]["percent"]
        assert controls["chance"]["n"] == 3 and r["chance_accuracy"] == controls["chance"]["accuracy"]
    cell = tmp_path / "run" / (next(r["cell_dir"] for r in rows if r["selection"] == "HDS" and r["ablation"] == "data"))
    # HDS: the 3 highest RSR of the 7 train records (ties by S); the subset is what the cell trained on
    chosen = [r["id"] for r in json.loads((cell / "train.json").read_text())]
    pool = json.loads((tmp_path / "data" / "train.json").read_text())
    assert chosen == [r["id"] for r in sorted(pool, key=lambda r: (-r["rsr"], -r["s_gt"]))[:3]]
    eac = tmp_path / "run" / (next(r["cell_dir"] for r in rows if r["selection"] == "HDS" and r["ablation"] == "eac"))
    trained = json.loads((eac / "train" / "config.json").read_text())
    assert trained["use_hr_branch"] and trained["eac_loss_weight"] == 1.0 and trained["hc_loss_weight"] == 1.0
    assert not json.loads((cell / "train" / "config.json").read_text())["use_hr_branch"]
    again = run_experiment(cfg)
    assert again["ran"] == [] and len(again["skipped"]) == 5


def test_changing_a_recipe_the_data_or_the_base_model_makes_new_cells(tmp_path):
    path = write_grid(tmp_path, ["data"], selections=("HSS",))

    def contexts():
        return {c["context"] for c in cells_of(load_config(ExperimentConfig, path))}

    seen = [contexts()]
    gen = yaml.safe_load((tmp_path / "generate.yaml").read_text())
    (tmp_path / "generate.yaml").write_text(yaml.safe_dump({**gen, "k": 3}))
    seen.append(contexts())
    pool = json.loads((tmp_path / "data" / "train.json").read_text())
    (tmp_path / "data" / "train.json").write_text(json.dumps(pool[:-1]))
    seen.append(contexts())
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    (tmp_path / "base" / "config.json").write_text(json.dumps({**config, "hc_loss_weight": 0.5}))
    seen.append(contexts())
    assert len(set().union(*seen)) == len(seen)  # every change gave every cell a new identity
    assert contexts() == seen[-1]  # and nothing else does


def test_lcs_with_too_few_candidates_names_the_count(tmp_path):
    cfg = load_config(ExperimentConfig, write_grid(tmp_path, ["data"], selections=("LCS",)),
                      ["out=" + str(tmp_path / "lcs")])
    with pytest.raises(ValueError, match="LCS: only"):
        run_experiment(cfg)


def test_kill9_mid_grid_then_rerun_finishes_only_missing_cells(tmp_path):
    path = write_grid(tmp_path, ["baseline", "data", "eac"])
    cmd = [sys.executable, "-m", "eeca", "experiment", str(path)]
    proc = subprocess.Popen(cmd, env=eeca_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    cells = tmp_path / "run" / "cells"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(cells.glob("*/cell.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in cells.glob("*/cell.json")}
    assert 2 <= len(finished) < 5, "the kill should land mid-grid"
    rerun = subprocess.run(cmd, env=eeca_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(finished)} already finished" in rerun.stdout
    for name, mtime in finished.items():  # finished cells were not run again
        assert (cells / name / "cell.json").stat().st_mtime_ns == mtime
    assert pq.read_table(tmp_path / "run" / "results.parquet").num_rows == 5


def test_infeasible_cells_are_all_refused_before_anything_trains(tmp_path, capsys):
    """A Figure-5-like grid on a pool of 7: LCS and sizes beyond the pool cannot exist; none of the grid runs."""
    from eeca.cli import main
    from eeca.experiments.feasibility import InfeasibleGrid

    path = write_grid(tmp_path, ["baseline", "data"], selections=("HDS", "LCS", "BRS"))
    pool = json.loads((tmp_path / "data" / "train.json").read_text())
    for i, r in enumerate(pool):  # S and RSR rise together: 3 of 7 lie strictly below both medians (i = 0, 1, 2)
        r["s_gt"], r["rsr"] = 0.1 * i, 0.1 * i
    (tmp_path / "data" / "train.json").write_text(json.dumps(pool))
    grid = yaml.safe_load(path.read_text())
    grid["grid"] = [{"selections": ["HDS", "LCS", "BRS"], "sizes": [3, 4, 8], "ablations": ["baseline", "data"]}]
    grid["generate_overrides"] = [f"image_root={tmp_path / 'no-images'}"]
    path.write_text(yaml.safe_dump(grid))
    cfg = load_config(ExperimentConfig, path)
    with pytest.raises(InfeasibleGrid) as e:
        run_experiment(cfg, source=str(path))
    lines = str(e.value).splitlines()
    assert lines[0] == f"{path}: 5 problem(s), no cell was run:"
    assert sorted(line.split(":")[0] for line in lines[1:]) == [
        "  - cell BRS-8-data", "  - cell HDS-8-data", "  - cell LCS-4-data", "  - cell LCS-8-data", "  - field 'image_root'"]
    assert "LCS: only 3 images have both S < 0.3000 and RSR < 0.3000" in str(e.value)
    assert f"  - field 'image_root': no such file or folder {tmp_path / 'no-images'}" in lines
    assert not (tmp_path / "run").exists()  # nothing selected, trained or written
    assert main(["experiment", str(path), "--dry-run"]) == 2
    out = capsys.readouterr().out
    assert "experiment t: 10 cells" in out and "  LCS-3-data" in out and "5 problem(s): nothing would run" in out
    # raising the LCS quantile makes LCS-4 possible (4 of 7 below both 0.7-quantiles, i = 0..3): one problem fewer
    assert len(grid_problems_of(path, ["lcs_quantile=0.7"])) == 4
    assert main(["experiment", str(path)]) == 2 and not (tmp_path / "run").exists()


def grid_problems_of(path, overrides):
    from eeca.experiments.feasibility import grid_problems

    return grid_problems(load_config(ExperimentConfig, path, overrides), str(path))


def test_recipes_named_as_shipped_are_found_from_any_folder(tmp_path, monkeypatch):
    """A grid (the demo's too) may name its recipes as shipped, configs/synth/stage3.yaml, from any folder."""
    from eeca.config import InputPath, check_inputs
    from eeca.experiments.feasibility import grid_problems

    monkeypatch.chdir(tmp_path)
    cfg = load_config(ExperimentConfig, "configs/synth/table1.yaml")
    assert str(cfg.train_recipe).startswith("configs/") and not Path(cfg.train_recipe).exists()
    problems = grid_problems(cfg, "table1.yaml")
    assert problems and not [p for p in problems if any(f"field '{f}'" in p for f in ("train_recipe", "generate", "judge"))]

    @dataclass(frozen=True)
    class Recipe:
        recipe: InputPath

    check_inputs(Recipe(Path("configs/synth/stage3.yaml")), "x.yaml")  # found in the package: no error
