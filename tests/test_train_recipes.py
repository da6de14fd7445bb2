"""The stage recipe end to end: YAMLs, `eeca train` outputs, kill -9 and resume, parameter groups."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from cli_env import eeca_env
from eeca.config import ConfigError, config_path, from_dict, load_config
from eeca.model.tiny import tiny_eeca
from eeca.train.recipes import TrainConfig, latest_checkpoint, parameter_groups, run, set_trainable
from train_helpers import save_clip_and_llm, save_tiny_eeca, stage3_config, write_llava_json

ROOT = Path(__file__).resolve().parents[1]
YAMLS = sorted((ROOT / "src" / "eeca" / "configs").glob("*/stage*.yaml"))


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_yamls_train_the_stage_they_are_named_after(path):
    cfg = load_config(TrainConfig, path)
    assert cfg.stage == int(path.stem[-1])
    if cfg.optim.deepspeed is not None:
        assert json.loads(config_path(cfg.optim.deepspeed).read_text())["zero_optimization"]["stage"] == 2


def test_paper_recipes_carry_table5():
    s1, s2, s3 = (load_config(TrainConfig, ROOT / f"src/eeca/configs/paper/stage{k}.yaml") for k in (1, 2, 3))
    assert [8 * c.optim.per_device_train_batch_size * c.optim.gradient_accumulation_steps
            for c in (s1, s2, s3)] == [256, 128, 128]  # global batch on 8 GPUs
    assert [c.optim.learning_rate for c in (s1, s2, s3)] == [2e-3, 2e-5, 2e-5]
    for c in (s1, s2, s3):
        assert (c.optim.lr_scheduler_type, c.optim.warmup_ratio, c.optim.weight_decay) == ("cosine", 0.03, 0.0)
        assert c.optim.bf16 and c.optim.num_train_epochs == 1
    assert "llm" not in s1.trainable and "vision_tower" not in s1.trainable and "llm" in s2.trainable
    assert s3.data.entities and s3.data.hierarchical_labels


def test_bad_recipe_names_the_field(tmp_path):
    cfg = stage3_config(tmp_path, tmp_path, tmp_path / "d.json")
    cfg["trainable"] = ["projector", "adapter"]
    with pytest.raises(ConfigError, match="trainable"):
        from_dict(TrainConfig, cfg)
    cfg["trainable"], cfg["lora"] = ["projector"], {"enabled": True}
    with pytest.raises(ConfigError, match="lora.enabled.*'llm'"):
        from_dict(TrainConfig, cfg)


def test_every_parameter_has_exactly_one_group():
    model, _ = tiny_eeca(hierarchical_labels=["a", "b"])
    groups = parameter_groups(model)
    assert sum(map(len, groups.values())) == len(list(model.parameters()))
    counts = set_trainable(model, ["projector", "resampler"], freeze=["model.hr_resampler.latents"])
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == set(groups["projector"] + groups["resampler"]) - {"model.hr_resampler.latents"}
    assert counts["llm"] == counts["vision_tower"] == 0 and counts["projector"] > 0
    model.register_parameter("extra_scale", torch.nn.Parameter(torch.ones(1)))
    with pytest.raises(ValueError, match="'extra_scale' belongs to 0 groups"):
        parameter_groups(model)


def test_eeca_train_stage3_writes_model_config_and_curves(tmp_path, run_eeca):
    ckpt = save_tiny_eeca(tmp_path / "ckpt")
    data = write_llava_json(tmp_path / "data", n=4)
    cfg = stage3_config(tmp_path, ckpt, data, max_steps=2, eval_steps=2)
    (tmp_path / "stage3.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    proc = run_eeca("train", tmp_path / "stage3.yaml", "--overrides", f"output_dir={out}",
                    "data.entity_prompt=train_and_infer")
    assert "trained stage 3: 2 steps" in proc.stdout.strip().splitlines()[-1]
    config = json.loads((out / "config.json").read_text())
    assert config["hierarchical_labels"] == ["bridge", "church", "tower"]
    assert "hc_head.weight" in load_file(out / "model.safetensors")
    resolved = yaml.safe_load((out / "checkpoint-2" / "train_config.yaml").read_text())
    assert resolved["data"]["entity_prompt"] == "train_and_infer" and resolved["output_dir"] == str(out)
    logs = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [e for e in logs if "loss" in e]
    assert len(steps) == 2 and all({"loss_lm", "loss_hc", "loss_eac"} <= set(e) for e in steps)
    assert any("eval_loss" in e for e in logs)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["eval_loss_end"] is not None
    for folder in (out, out / "checkpoint-2"):
        card = (folder / "README.md").read_text()
        assert f"eeca train {tmp_path / 'stage3.yaml'} output_dir={out} data.entity_prompt=train_and_infer" in card
        assert f"`{ckpt}` (eeca)" in card and "(4 records)" in card and "| L_EAC | 1.0 |" in card
        # every file of the checkpoint, the weights included, has the mode the umask gives config.json
        mode = (folder / "config.json").stat().st_mode & 0o777
        assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.is_file()} == \
            dict.fromkeys((p.name for p in folder.iterdir() if p.is_file()), mode)
    assert "train loss: " in card and "eval loss: unknown" not in (out / "README.md").read_text()


def final_weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


def test_kill9_mid_training_then_resume_matches_uninterrupted(tmp_path):
    ckpt = save_tiny_eeca(tmp_path / "ckpt")
    data = write_llava_json(tmp_path / "data", n=8)
    # 20 steps: after checkpoint-4 appears, the run has 16 more to go, ample time to kill it mid-way
    base = stage3_config(tmp_path, ckpt, data, max_steps=20, save_steps=2, save_total_limit=2,
                         per_device_train_batch_size=1)
    base["data"]["eval_path"] = None

    reference = run(from_dict(TrainConfig, {**base, "output_dir": str(tmp_path / "ref")}))

    killed = tmp_path / "killed"
    (tmp_path / "killed.yaml").write_text(yaml.safe_dump({**base, "output_dir": str(killed)}))
    proc = subprocess.Popen([sys.executable, "-m", "eeca", "train", str(tmp_path / "killed.yaml")],
                            env=eeca_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint-4" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()  # it really died before the end
    resumed_from = latest_checkpoint(killed)

    resumed = run(from_dict(TrainConfig, {**base, "output_dir": str(killed)}))
    assert resumed["resumed_from"] == str(resumed_from) and resumed["steps"] == reference["steps"] == 20
    ref_w, res_w = final_weights(tmp_path / "ref"), final_weights(killed)
    for name in ref_w:
        torch.testing.assert_close(res_w[name], ref_w[name], atol=1e-5, rtol=1e-4, msg=name)
    ref_log = json.loads((tmp_path / "ref" / "trainer_state.json").read_text())["log_history"]
    res_log = json.loads((killed / "trainer_state.json").read_text())["log_history"]
    for term in ("loss", "loss_lm", "loss_hc", "loss_eac"):  # the curves continue where they stopped
        ref_curve = [e[term] for e in ref_log if "loss" in e]
        assert [e[term] for e in res_log if "loss" in e] == pytest.approx(ref_curve, rel=1e-4, abs=1e-6), term


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """accelerate launch, 2 gloo processes x batch 1 == 1 process x batch 2 (all three losses on)."""
    ckpt = save_tiny_eeca(tmp_path / "ckpt")
    data = write_llava_json(tmp_path / "data", n=8)
    # SGD: unlike Adam, its update scales with the gradient, so a mis-scaled loss would show
    base = stage3_config(tmp_path, ckpt, data, max_steps=2, gradient_accumulation_steps=2, warmup_ratio=0.0,
                         optim="sgd", learning_rate=0.5)
    base["data"]["eval_path"] = None
    one = run(from_dict(TrainConfig, {**base, "output_dir": str(tmp_path / "one"),
                                      "optim": {**base["optim"], "per_device_train_batch_size": 2}}))
    two = tmp_path / "two"
    (tmp_path / "two.yaml").write_text(yaml.safe_dump({**base, "output_dir": str(two),
                                                        "optim": {**base["optim"], "per_device_train_batch_size": 1,
                                                                  "use_cpu": True}}))
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "eeca", "train", str(tmp_path / "two.yaml")]
    proc = subprocess.run(cmd, env=eeca_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained stage 3: 2 steps") == 1  # one summary, from the main process
    state = json.loads((two / "trainer_state.json").read_text())
    assert state["log_history"][0]["epoch"] == pytest.approx(0.5)  # 2 processes x 1 x 2 accumulation = 4 of 8
    ref_logs = json.loads((tmp_path / "one" / "trainer_state.json").read_text())["log_history"]
    for term in ("loss", "loss_lm", "loss_hc", "loss_eac"):
        assert state["log_history"][1][term] == pytest.approx(ref_logs[1][term], rel=1e-4), term
    ref_w, two_w = final_weights(tmp_path / "one"), final_weights(two)
    for name in ref_w:
        torch.testing.assert_close(two_w[name], ref_w[name], atol=1e-5, rtol=1e-4, msg=name)
    assert one["steps"] == 2


@pytest.mark.slow
def test_stages_1_2_3_end_to_end_eval_loss_falls(tmp_path):
    """CLIP + Llama -> stage 1 (build_eeca) -> stage 2 -> stage 3; eval loss falls in every stage."""
    clip, llm = save_clip_and_llm(tmp_path)
    everything = write_llava_json(tmp_path / "data", n=30)
    records = json.loads(everything.read_text())
    train, held_out = tmp_path / "data" / "train.json", tmp_path / "data" / "eval.json"
    train.write_text(json.dumps(records[:24]))
    held_out.write_text(json.dumps(records[24:]))  # unseen images and answers
    common = {"image_root": str(train.parent), "eval_path": str(held_out), "max_length": 128}
    optim = {"per_device_train_batch_size": 4, "num_train_epochs": 3, "logging_steps": 2, "save_steps": 100,
             "eval_steps": 100, "seed": 0}
    hr = {"num_hr_latents": 8, "resampler_heads": 2, "resampler_head_dim": 16}
    stages = [
        {"stage": 1, "model": {"vision_path": str(clip), "llm_path": str(llm), "config_overrides": hr},
         "trainable": ["projector", "resampler"], "optim": {**optim, "learning_rate": 2e-3}, "data": {}},
        {"stage": 2, "trainable": ["projector", "resampler", "llm"], "optim": {**optim, "learning_rate": 1e-3},
         "data": {}},
        {"stage": 3, "trainable": ["projector", "resampler", "hc_head", "eac_temperature", "llm"],
         "optim": {**optim, "learning_rate": 1e-3}, "data": {"entities": True, "hierarchical_labels": True},
         "model_overrides": {"hc_loss_weight": 1.0, "eac_loss_weight": 1.0}},
    ]
    previous, summaries = None, []
    for s in stages:
        model = s.get("model") or {"checkpoint": str(previous), "config_overrides": s.get("model_overrides", {})}
        cfg = {"stage": s["stage"], "output_dir": str(tmp_path / f"stage{s['stage']}"), "model": model,
               "data": {"path": str(train), **common, **s["data"]}, "trainable": s["trainable"],
               "optim": s["optim"]}
        summary = run(from_dict(TrainConfig, cfg))
        summaries.append(summary)
        previous = tmp_path / f"stage{s['stage']}"
        print(f"stage {s['stage']}: eval loss {summary['eval_loss_start']:.4f} -> {summary['eval_loss_end']:.4f}, "
              f"train loss {summary['train_loss_first']:.4f} -> {summary['train_loss_last']:.4f}, "
              f"{summary['wall_s']} s")
    for s in summaries:
        assert s["eval_loss_end"] < s["eval_loss_start"]
    logs = json.loads((tmp_path / "stage3" / "trainer_state.json").read_text())["log_history"]
    assert all({"loss_lm", "loss_hc", "loss_eac"} <= set(e) for e in logs if "loss" in e)


def test_a_checkpoint_whose_state_was_cut_by_a_kill_is_not_resumed_from(tmp_path):
    """kill -9 while the Trainer writes trainer_state.json leaves it empty or cut: resume from the one before."""
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_step": 4}'), (6, ""), (8, '{"global_st')):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-10").mkdir()  # no state at all yet
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert latest_checkpoint(tmp_path / "none") is None


def test_a_missing_checkpoint_is_one_line_and_nothing_is_written(tmp_path, capsys):
    from eeca.cli import main

    data = write_llava_json(tmp_path / "data", n=2)
    recipe = stage3_config(tmp_path, tmp_path / "no-stage2", data)
    (tmp_path / "s3.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", str(tmp_path / "s3.yaml")]) == 2
    assert capsys.readouterr().err == (f"eeca train: error: {tmp_path / 's3.yaml'}: field 'model.checkpoint': "
                                       f"no model folder {tmp_path / 'no-stage2'}\n")
    assert not (tmp_path / "out").exists()


def test_a_resumed_run_with_eval_data_finishes_and_its_summary_covers_every_step(tmp_path, capsys):
    """A rerun that resumes has no eval loss at the start (None), and its mean train loss is the
    whole run's, read from the log history, not only the steps after the resume."""
    from eeca.cli import main

    ckpt = save_tiny_eeca(tmp_path / "ckpt")
    data = write_llava_json(tmp_path / "data", n=4)
    cfg = stage3_config(tmp_path, ckpt, data, max_steps=2, save_steps=2, eval_steps=2)
    (tmp_path / "stage3.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["train", str(tmp_path / "stage3.yaml")]) == 0
    assert main(["train", str(tmp_path / "stage3.yaml"), "--overrides", "optim.max_steps=4"]) == 0  # resumes from checkpoint-2
    assert "eval loss n/a (resumed) -> " in capsys.readouterr().out
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"] == str(out / "checkpoint-2") and summary["steps"] == 4
    assert summary["eval_loss_start"] is None and summary["eval_loss_end"] is not None
    losses = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) == 4  # logging_steps 1
    assert summary["train_loss_mean"] == pytest.approx(sum(losses) / 4, rel=1e-6)
    assert summary["train_loss_first"] == losses[0]
