"""A tiny stage 3 on the synthetic testbed must answer in words (the well-formed-answers control).

The whole chain a cell runs, at toy size: stand-in tokenizer / CLIP / LLM trained on a tiny world,
an EECA model built from them (HR branch on, L_HC and L_EAC on), stage 3 trained on MGLD-style
records with the template annotator's answers, then `eeca generate`'s sampled answers to the same
questions. Fails when the answers are degenerate (eeca.evaluate.degenerate, with the testbed's
closed vocabulary) or when the model did not learn the landmarks it was trained on: a tokenizer that
does not cover the answers' wording, labels off by a token, or a prompt rendered differently at
training and at generation each make this fail. Measured: with the tokenizer trained on the world's
descriptions only (the cause of the demo's babble), 96% of these answers are degenerate and 4 of 24
name their landmark; with the testbed's tokenizer, 0% and 17 of 24.
"""

import json
from pathlib import Path

import pytest

from eeca.evaluate.degenerate import degenerate_summary, word_vocabulary
from eeca.evaluate.generate import GenerateConfig, run_generate
from eeca.gldv2.paths import image_relpath
from eeca.io import read_jsonl
from eeca.mgld.annotators import template_answer
from eeca.mgld.questions import load_questions, pick_question
from eeca.synth.config import ClipTrainConfig, LlmTrainConfig, SynthConfig, TokenizerConfig, WorldConfig
from eeca.synth.models import build_models
from eeca.synth.texts import every_text
from eeca.synth.world import build_world, read_truth
from eeca.train.data import DataConfig
from eeca.train.recipes import ModelInit, OptimSettings, TrainConfig, run

SMALL = SynthConfig(
    world=WorldConfig(landmarks=12, image_size=64, images_median=3.0, images_max=6),
    tokenizer=TokenizerConfig(vocab_size=1024),
    clip=ClipTrainConfig(image_size=32, patch_size=8, hidden_size=32, layers=1, heads=2, projection_dim=32,
                         steps=30, batch_size=8, lr=3e-3),
    llm=LlmTrainConfig(hidden_size=64, layers=2, heads=2, intermediate_size=128, steps=150, batch_size=16, lr=5e-3),
    threads=1,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path, list[dict]]:
    root = tmp_path_factory.mktemp("stage3")
    world = root / "world"
    build_world(world, seed=0, cfg=SMALL.world, progress=False)
    build_models(world, root / "models", SMALL, progress=False)
    truth = {lm["landmark_id"]: lm for lm in read_truth(world)}
    first: dict[int, str] = {}
    for img in read_jsonl(world / "truth" / "images.jsonl"):
        first.setdefault(img["landmark_id"], img["id"])
    questions = load_questions()
    records = [{"id": i, "image": image_relpath(i), "landmark_id": lid, "landmark_name": truth[lid]["name"],
                "entities": truth[lid]["entities"], "hierarchical_label": truth[lid]["hierarchical_label"],
                "conversations": [{"from": "human", "value": "<image>\n" + pick_question(questions, 0, i)},
                                  {"from": "gpt", "value": template_answer(truth[lid], n % 4)}]}
               for n, (lid, i) in enumerate(sorted(first.items()))][:12]
    data = root / "train.json"
    data.write_text(json.dumps(records))
    cfg = TrainConfig(
        stage=3, output_dir=root / "stage3",
        model=ModelInit(vision_path=root / "models" / "clip", llm_path=root / "models" / "llm",
                        config_overrides={"use_hr_branch": True, "hr_grid": 2, "num_hr_latents": 4,
                                          "resampler_heads": 2, "resampler_head_dim": 16}),
        data=DataConfig(path=data, image_root=world, max_length=256, entities=True, hierarchical_labels=True),
        trainable=["projector", "resampler", "hc_head", "eac_temperature", "llm"],
        optim=OptimSettings(per_device_train_batch_size=8, learning_rate=3e-3, warmup_ratio=0.0,
                            num_train_epochs=40, logging_steps=10, save_steps=1000, seed=0))
    run(cfg)
    return root, world, data, list(truth.values())


def test_trained_stage3_answers_in_words_and_names_its_landmarks(trained):
    root, world, data, landmarks = trained
    cfg = GenerateConfig(model=root / "stage3", test_json=data, image_root=world, k=2, temperature=0.7,
                         top_p=0.9, max_new_tokens=48, batch_size=8)
    run_generate(cfg, root / "generate")
    rows = read_jsonl(root / "generate" / "generations.jsonl")
    summary = degenerate_summary(rows, word_vocabulary(every_text(landmarks)))
    assert summary["percent"] <= 10.0, summary["examples"]
    records = {r["id"]: r for r in json.loads(data.read_text())}
    named = sum(records[r["id"]]["landmark_name"] in answer for r in rows for answer in r["responses"])
    assert named >= len(rows), [r["responses"] for r in rows]  # at least half of the 2 x 12 answers
