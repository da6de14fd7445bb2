"""``eeca demo``: the whole pipeline on the embedded synthetic landmark world, on a laptop CPU.

Every step is one of the toolkit's verbs, called with the recipes in ``configs/synth/`` and paths
under ``--out``; the same steps at paper scale are the same verbs with ``configs/paper/``:

 1. ``synth world`` / ``synth models`` / ``synth check``: the world in GLDv2 format, the stand-in CLIP
    (sees part of the landmarks) and LLM (knows them all in text), and how much each knows;
 2. ``gldv2 ingest``: the world read as GLDv2;
 3. ``score``: S and RSR of every image against every landmark name (paper 3.1);
 4. ``mgld stage1`` / ``stage2`` / ``stage3``: MGLD with the offline template annotator (App. B);
 5. ``synth pretrain`` + ``train`` stages 1-2: the starting model, aligned and instruction-tuned on
    generic data that never names a landmark (the stand-in for LLaVA-1.5);
 6. ``experiment``: the grid of ``configs/synth/demo.yaml`` (the untrained baseline, HDS / HSS / LCS /
    BRS subsets, full EECA on HSS), each cell trained, generated and judged (rule judge); the other
    steps of Tables 1-4 are ``configs/synth/table{1,2,3,4}.yaml``;
 7. ``knowledge analyze``: t-SNE, category counts and the AUROC of RSR for the subsets (Figs. 3-4);
 8. ``report``: one HTML file and its markdown twin.

Each step resumes: rerunning ``eeca demo`` after an interruption redoes only what is missing.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from eeca.config import load_config
from eeca.evaluate.levels import LEVELS
from eeca.io import read_json


def demo_command(out: Path = Path("runs/demo"), configs: Path = Path("configs/synth"), seed: int = 0,
                 landmarks: int | None = None) -> int:
    """Run the whole pipeline on the embedded synthetic world and write its report (minutes on a CPU).

    Args:
        out: run folder; every step writes below it and is skipped when already finished.
        configs: folder of the synthetic recipes (world, score, mgld, stage1-3, generate, judge, demo).
        seed: world seed.
        landmarks: number of landmarks of the world (default: the world recipe's).
    """
    from eeca.experiments.runner import ExperimentConfig, run_experiment
    from eeca.gldv2.ingest import ingest
    from eeca.knowledge.analysis import analyze_command
    from eeca.knowledge.score import score_command
    from eeca.knowledge.stage1 import stage1_command
    from eeca.mgld.stages import MgldConfig, run_stage2, run_stage3
    from eeca.report.command import report_command
    from eeca.synth.check import check_command
    from eeca.synth.models import models_command
    from eeca.synth.pretrain import pretrain_command
    from eeca.synth.world import world_command
    from eeca.train.recipes import TrainConfig
    from eeca.train.recipes import run as run_train

    out, configs = Path(out), Path(configs)
    world, models, gl, score = out / "world", out / "models", out / "gldv2", out / "score"
    mgld, pretrain, base = out / "mgld", out / "pretrain", out / "train"
    times: dict[str, float] = {}

    def step(name: str, done: Path | None, fn) -> None:
        t0 = time.perf_counter()
        if done is not None and done.exists():
            print(f"== {name}: already done ({done})", flush=True)
        else:
            print(f"== {name}", flush=True)
            fn()
        times[name] = time.perf_counter() - t0

    step("synth world", None, lambda: world_command(str(world), seed, landmarks, str(configs / "world.yaml")))
    step("synth models", None, lambda: models_command(str(world), str(models), str(configs / "world.yaml")))
    step("synth check", models / "check.json", lambda: check_command(str(world), str(models)))
    step("gldv2 ingest", gl / "images.parquet", lambda: print(ingest(world, gl).line(gl)))
    step("score", None, lambda: score_command(
        images=str(gl / "images.parquet"), landmarks=str(gl / "landmarks.parquet"), image_root=str(world),
        out=str(score), config=str(configs / "score.yaml"), model=str(models / "clip")))
    step("mgld stage1", mgld / "stage1.parquet", lambda: stage1_command(str(score / "scores.parquet"),
                                                                      str(mgld / "stage1.parquet"), seed))
    mcfg = load_config(MgldConfig, configs / "mgld.yaml", [
        f"stage1={mgld / 'stage1.parquet'}", f"landmarks={gl / 'landmarks.parquet'}", f"image_root={world}",
        f"truth={world / 'truth' / 'landmarks.jsonl'}", f"out={mgld}"])
    step("mgld stage2", None, lambda: run_stage2(mcfg))
    step("mgld stage3", None, lambda: run_stage3(mcfg))
    step("synth pretrain", pretrain / "stage2.json",
         lambda: pretrain_command(world, mgld / "split.parquet", pretrain, seed))
    for stage, init in ((1, [f"model.vision_path={models / 'clip'}", f"model.llm_path={models / 'llm'}"]),
                        (2, [f"model.checkpoint={base / 'stage1'}"])):
        overrides = [f"output_dir={base / f'stage{stage}'}", f"data.path={pretrain / f'stage{stage}.json'}",
                     f"data.image_root={world}", "data.eval_path=null", *init]
        cfg = load_config(TrainConfig, configs / f"stage{stage}.yaml", overrides)
        step(f"train stage {stage}", base / f"stage{stage}" / "train_summary.json", lambda cfg=cfg: run_train(cfg))
    experiment = out / "experiment"
    ecfg = load_config(ExperimentConfig, configs / "demo.yaml", [
        f"out={experiment}", f"base_model={base / 'stage2'}", f"train_records={mgld / 'train.json'}",
        f"train_recipe={configs / 'stage3.yaml'}", f"generate={configs / 'generate.yaml'}",
        f"judge={configs / 'judge.yaml'}"])
    common = [f"data.image_root={world}", "data.eval_path=null"]
    ecfg = _with_overrides(ecfg, train=common, generate=[f"test_json={mgld / 'test.json'}", f"image_root={world}"],
                           judge=[f"truth={world / 'truth' / 'landmarks.jsonl'}"])
    step("experiment", None, lambda: run_experiment(ecfg))
    manifests = sorted(str(p) for p in (experiment / "cells").glob("*-data-*/selection.parquet"))
    step("knowledge analyze", None, lambda: analyze_command(
        str(score), str(gl / "landmarks.parquet"), str(experiment / "analysis"), manifests,
        str(world / "truth" / "landmarks.jsonl"), seed=seed))
    step("report", None, lambda: report_command(str(experiment)))
    _summary(out, experiment, times)
    return 0


def _with_overrides(cfg, train: list[str], generate: list[str], judge: list[str]):
    """``cfg`` with the demo's paths put in front of the grid's own recipe overrides."""
    return dataclasses.replace(cfg, train_overrides=[*train, *cfg.train_overrides],
                               generate_overrides=[*generate, *cfg.generate_overrides],
                               judge_overrides=[*judge, *cfg.judge_overrides])


def _summary(out: Path, experiment: Path, times: dict[str, float]) -> None:
    import pyarrow.parquet as pq

    print("\n== eeca demo: step times")
    for name, t in times.items():
        print(f"  {name:<18} {t:7.1f} s")
    print(f"  {'total':<18} {sum(times.values()):7.1f} s")
    check = read_json(out / "models" / "check.json")
    clip = check["clip"]
    print(f"stand-in CLIP zero-shot top-1: seen landmarks {clip['split=heldout']['top1']:.3f}, "
          f"unseen {clip['split=unseen']['top1']:.3f}, chance {clip['chance_top1']:.4f}")
    auroc = read_json(experiment / "analysis" / "knowledge.json")["clip_seen_separation"]
    print(f"RSR separates the landmarks the CLIP saw from those it did not: AUROC {auroc['auroc_rsr_image']:.3f} "
          f"per image, {auroc['auroc_rsr_landmark']:.3f} per landmark")
    results = pq.read_table(experiment / "results.parquet").to_pylist()
    print("per cell (rule judge): accuracy = Strongly Known + Known [bootstrap 95%]; counts SK / K / WU / U")
    for r in sorted(results, key=lambda r: (r["ablation"], r["selection"])):
        counts = " / ".join(str(r[f"count_{lv}"]) for lv in LEVELS)
        print(f"  {r['selection']:>4} {r['size']:>5} {r['ablation']:<20} {r['accuracy']:6.2f}% "
              f"[{r['acc_ci_low']:.2f}, {r['acc_ci_high']:.2f}]  {counts}  (n={r['n']})")
    print(f"report: {experiment / 'report' / 'report.html'}")
