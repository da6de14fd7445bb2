"""``eeca demo``: the whole pipeline on the embedded synthetic landmark world, on a laptop CPU.

Every step is one of the toolkit's verbs, called with the recipes in ``configs/synth/`` and paths
under ``--out``; the same steps at paper scale are the same verbs with ``configs/paper/``:

 1. ``synth world`` / ``synth models`` / ``synth check``: the world in GLDv2 format, the stand-in CLIP
    (sees part of the landmarks) and LLM (knows them all in text), and how much each knows;
 2. ``gldv2 ingest``: the world read as GLDv2;
 3. ``score``: S and RSR of every image against every landmark name (paper 3.1);
 4. ``mgld stage1`` / ``stage2`` / ``stage3``: MGLD with the offline template annotator (App. B);
 5. ``synth pretrain`` + ``train`` stages 1-2: the starting model (plain LLaVA, no HR branch), aligned
    and instruction-tuned on generic data that names landmarks at the rate of their popularity (the
    stand-in for LLaVA-1.5), each stage probed (:mod:`eeca.experiments.probe`);
 6. ``experiment``: the grid of ``configs/synth/demo.yaml`` (the untrained baseline, HDS / LCS / BRS
    subsets, full EECA on HDS), each cell trained, generated, judged (rule judge) and checked by its
    controls (:mod:`eeca.experiments.controls`); the other steps of Tables 1-4 are
    ``configs/synth/table{1,2,3,4}.yaml`` and the powered study ``eeca study``;
 7. ``knowledge analyze``: t-SNE, category counts and the AUROC of RSR for the subsets (Figs. 3-4);
 8. ``report``: one HTML file and its markdown twin.

Each step resumes: rerunning ``eeca demo`` after an interruption redoes only what is missing.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from eeca.config import load_config
from eeca.evaluate.levels import LEVELS
from eeca.io import read_json, run_lock


@dataclass(frozen=True)
class Testbed:
    """The folders of one synthetic testbed (world, stand-ins, MGLD, generic data, base model) under ``out``."""

    out: Path

    world = property(lambda self: self.out / "world")
    models = property(lambda self: self.out / "models")
    gldv2 = property(lambda self: self.out / "gldv2")
    score = property(lambda self: self.out / "score")
    mgld = property(lambda self: self.out / "mgld")
    pretrain = property(lambda self: self.out / "pretrain")
    base = property(lambda self: self.out / "train")  # stage1/, stage2/: the base model

    @property
    def truth(self) -> Path:
        return self.world / "truth" / "landmarks.jsonl"


def build_testbed(out: Path, configs: Path, seed: int, landmarks: int | None, times: dict[str, float],
                  mgld_overrides: list[str] = (), synth_overrides: list[str] = ()) -> Testbed:
    """Steps 1-5 of the module docstring under ``out``: the world, its stand-ins, MGLD and the base model.

    After stages 1 and 2 the base model is probed (:mod:`eeca.experiments.probe`): does the image
    reach the LLM, and does the LLM keep its text knowledge.
    """
    from eeca.experiments.probe import probe_model
    from eeca.gldv2.ingest import ingest
    from eeca.knowledge.score import score_command
    from eeca.knowledge.stage1 import stage1_command
    from eeca.mgld.stages import MgldConfig, run_stage2, run_stage3
    from eeca.synth.check import check_command
    from eeca.synth.models import models_command
    from eeca.synth.pretrain import pretrain_command
    from eeca.synth.world import world_command
    from eeca.train.recipes import TrainConfig
    from eeca.train.recipes import run as run_train

    tb = Testbed(Path(out))
    world, models, gl, score, mgld, pretrain, base = tb.world, tb.models, tb.gldv2, tb.score, tb.mgld, tb.pretrain, tb.base

    def step(name: str, done: Path | None, fn) -> None:
        t0 = time.perf_counter()
        if done is not None and done.exists():
            print(f"== {name}: already done ({done})", flush=True)
        else:
            print(f"== {name}", flush=True)
            fn()
        times[name] = time.perf_counter() - t0

    step("synth world", None, lambda: world_command(str(world), seed, landmarks, str(configs / "world.yaml")))
    step("synth models", None, lambda: models_command(str(world), str(models), str(configs / "world.yaml"),
                                                      list(synth_overrides)))
    step("synth check", None, lambda: check_command(str(world), str(models)))
    step("gldv2 ingest", gl / "images.parquet", lambda: print(ingest(world, gl).line(gl)))
    step("score", None, lambda: score_command(
        images=str(gl / "images.parquet"), landmarks=str(gl / "landmarks.parquet"), image_root=str(world),
        out=str(score), config=str(configs / "score.yaml"), model=str(models / "clip")))
    step("mgld stage1", mgld / "stage1.parquet", lambda: stage1_command(str(score / "scores.parquet"),
                                                                      str(mgld / "stage1.parquet"), seed))
    mcfg = load_config(MgldConfig, configs / "mgld.yaml", [
        f"stage1={mgld / 'stage1.parquet'}", f"landmarks={gl / 'landmarks.parquet'}", f"image_root={world}",
        f"truth={tb.truth}", f"out={mgld}", *mgld_overrides])
    step("mgld stage2", None, lambda: print(run_stage2(mcfg)["line"]))
    step("mgld stage3", None, lambda: print(run_stage3(mcfg)["line"]))
    step("synth pretrain", pretrain / "stage2.json",
         lambda: pretrain_command(world, mgld / "split.parquet", pretrain, seed))
    mgld_ids = {str(r["id"]) for r in read_json(mgld / "train.json") + read_json(mgld / "test.json")}
    for stage, init in ((1, [f"model.vision_path={models / 'clip'}", f"model.llm_path={models / 'llm'}"]),
                        (2, [f"model.checkpoint={base / 'stage1'}"])):
        folder = base / f"stage{stage}"
        overrides = [f"output_dir={folder}", f"data.path={pretrain / f'stage{stage}.json'}",
                     f"data.image_root={world}", "data.eval_path=null", f"optim.seed={seed}", *init]
        cfg = load_config(TrainConfig, configs / f"stage{stage}.yaml", overrides)
        step(f"train stage {stage}", folder / "train_summary.json", lambda cfg=cfg: run_train(cfg))
        step(f"probe stage {stage}", folder / "probe.json", lambda folder=folder: probe_model(folder, world, mgld_ids))
    return tb


def experiment_config(tb: Testbed, configs: Path, grid: Path, out: Path):
    """The grid ``grid`` over testbed ``tb``: its paths, the recipes of ``configs`` and the controls' inputs."""
    from eeca.experiments.runner import ExperimentConfig

    world, mgld, pretrain = tb.world, tb.mgld, tb.pretrain
    ecfg = load_config(ExperimentConfig, grid, [
        f"out={out}", f"base_model={tb.base / 'stage2'}", f"train_records={mgld / 'train.json'}",
        f"train_recipe={configs / 'stage3.yaml'}", f"generate={configs / 'generate.yaml'}",
        f"judge={configs / 'judge.yaml'}"])
    ecfg = dataclasses.replace(
        ecfg, train_overrides=[f"data.image_root={world}", "data.eval_path=null", *ecfg.train_overrides],
        generate_overrides=[f"test_json={mgld / 'test.json'}", f"image_root={world}", *ecfg.generate_overrides],
        judge_overrides=[f"truth={tb.truth}", *ecfg.judge_overrides])
    return dataclasses.replace(ecfg, controls=dataclasses.replace(
        ecfg.controls, vocabulary=[tb.truth, mgld / "train.json", mgld / "test.json",
                                   pretrain / "stage1.json", pretrain / "stage2.json"],
        skyline_test_json=pretrain / "skyline.json", scores=tb.score / "scores.parquet",
        truth=tb.truth, naming=pretrain / "naming.jsonl"))


def demo_command(out: Path = Path("runs/demo"), configs: Path = Path("configs/synth"), seed: int = 0,
                 landmarks: int | None = None) -> int:
    """Run the whole pipeline on the embedded synthetic world and write its report (minutes on a CPU).

    Args:
        out: run folder; every step writes below it and is skipped when already finished.
        configs: folder of the synthetic recipes (world, score, mgld, stage1-3, generate, judge, demo);
            a path or a shipped folder name (configs/synth, synth).
        seed: world seed (also the selection and training seed).
        landmarks: number of landmarks of the world (default: the world recipe's).
    """
    out, configs = Path(out), Path(configs)
    with run_lock(out, "demo"):
        return _demo(out, configs, seed, landmarks)


def _demo(out: Path, configs: Path, seed: int, landmarks: int | None) -> int:
    from eeca.experiments.runner import run_experiment
    from eeca.knowledge.analysis import analyze_command
    from eeca.report.command import report_command

    times: dict[str, float] = {}
    tb = build_testbed(out, configs, seed, landmarks, times)
    experiment = out / "experiment"
    ecfg = experiment_config(tb, configs, configs / "demo.yaml", experiment)
    for name, fn in (("experiment", lambda: run_experiment(ecfg)),
                     ("knowledge analyze", lambda: analyze_command(
                         str(tb.score), str(tb.gldv2 / "landmarks.parquet"), str(experiment / "analysis"),
                         sorted(str(p) for p in (experiment / "cells").glob("*-data-*/selection.parquet")),
                         str(tb.truth), seed=seed)),
                     ("report", lambda: report_command([str(experiment)]))):
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t0
    _summary(tb, experiment, times)
    return 0


def _summary(tb: Testbed, experiment: Path, times: dict[str, float]) -> None:
    import pyarrow.parquet as pq

    from eeca.experiments.probe import probe_line

    print("\n== eeca demo: step times")
    for name, t in times.items():
        print(f"  {name:<18} {t:7.1f} s")
    print(f"  {'total':<18} {sum(times.values()):7.1f} s")
    clip = read_json(tb.models / "check.json")["clip"]
    print(f"stand-in CLIP zero-shot top-1: seen landmarks {clip['split=heldout']['top1']:.3f}, "
          f"unseen {clip['split=unseen']['top1']:.3f}, chance {clip['chance_top1']:.4f}")
    auroc = read_json(experiment / "analysis" / "knowledge.json")["clip_seen_separation"]
    print(f"RSR separates the landmarks the CLIP saw from those it did not: AUROC {auroc['auroc_rsr_image']:.3f} "
          f"per image, {auroc['auroc_rsr_landmark']:.3f} per landmark")
    print("base model probes (greedy, held-out views): category named, share of entities named, "
          "place named when asked about the landmark in text")
    for stage in (1, 2):
        print(probe_line(f"after stage {stage}", read_json(tb.base / f"stage{stage}" / "probe.json")))
    results = pq.read_table(experiment / "results.parquet").to_pylist()
    print("per cell (rule judge): accuracy = Strongly Known + Known [exact 95%]; counts SK / K / WU / U; "
          "degenerate answers; the same answers judged against a shuffled truth (chance)")
    for r in sorted(results, key=lambda r: (r["ablation"], r["selection"])):
        counts = " / ".join(str(r[f"count_{lv}"]) for lv in LEVELS)
        print(f"  {r['selection']:>4} {r['size']:>5} {r['ablation']:<9} {_pct(r['accuracy']):>6}% "
              f"[{_pct(r['acc_ci_low'])}, {_pct(r['acc_ci_high'])}]  {counts}  (n={r['n']})  "
              f"degenerate {_pct(r['degenerate_pct'])}%  chance: acc {_pct(r['chance_accuracy'])}% "
              f"WU {_pct(r['chance_weakly_unknown'])}%")
    for r in results:
        if r["skyline_clip_seen_n"]:
            print(f"skyline ({r['selection']}-{r['size']} +data, held-out views of its own landmarks): "
                  f"CLIP-seen {_pct(r['skyline_clip_seen_accuracy'])}% vs the CLIP's zero-shot top-1 "
                  f"{_pct(r['skyline_clip_seen_clip_top1'])}% (n {r['skyline_clip_seen_n']}); CLIP-unseen "
                  f"{_pct(r['skyline_clip_unseen_accuracy'])}% vs {_pct(r['skyline_clip_unseen_clip_top1'])}% "
                  f"(n {r['skyline_clip_unseen_n']})")
        if r["ablation"] == "baseline":
            latent = read_json(experiment / r["cell_dir"] / "controls.json").get("latent", {})
            print("baseline latent knowledge (accuracy on the test set): " + ", ".join(
                f"{k} {_pct(v['accuracy'])}% (n {v['n']})" for k, v in latent.items() if "any" not in k))
            text = experiment / r["cell_dir"] / "text_probe.json"
            if text.is_file():
                t = read_json(text)["table"]
                print("Figure 1, test landmarks by CLIP top-1 x the LLM describing them from the name alone: "
                      + ", ".join(f"{k} {v}" for k, v in t.items()))
    print(f"report: {experiment / 'report' / 'report.html'}")


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"
