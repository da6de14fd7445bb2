"""Generic stage-1 / stage-2 data of the synthetic world: the stand-in for LLaVA-558k / LLaVA-665k.

The paper starts from LLaVA-1.5 (paper 3.3, 5.1), a model aligned and instruction-tuned on generic
web data, whose untrained baseline already recognises 8.68% of MGLD's test landmarks (Table 3):
web captions name famous landmarks, so LLaVA holds latent visual knowledge of them. This module
writes the synthetic equivalent, with the same three ingredients (docs/synth.md, "The testbed"):

* **What an image shows.** Every caption and instruction describes the image's category and its
  visible attributes (the world's entities), so stages 1-2 teach the projector to carry them.
* **Names at the rate of popularity.** A caption names the landmark shown (and its place) with
  probability ``n_images / images_max``: a landmark's popularity is its image count (GLDv2's long
  tail stands for fame on the web) and the most photographed landmark is always named. Fixed from
  this rationale, never tuned toward a result. The expected number of named captions grows as
  ``n^2 / images_max``: famous landmarks are named often, the long tail almost never.
* **Text-only conversations** (LLaVA-665k's ShareGPT share): one of the LLM's own text
  conversations per landmark, so instruction tuning keeps what the LLM knows in text.

Never used: MGLD's images (its stage-1 picks of both splits: stage-3 subsets and test questions
stay unseen) and the world's held-out images (``heldout`` in ``truth/images.jsonl``, also kept out
of the CLIP's training). Other images of test landmarks are used, named at the same rate as any
other, which is the latent knowledge the baseline can show.

Held-out images of the MGLD train landmarks (two per landmark) become ``skyline.json``: test records in MGLD's
format (a question of MGLD's set, the landmark's truth) on views no training set contains, of
landmarks that stage-3 subsets do contain. A cell tested on them shows how well stage 3 teaches
the landmarks it trains on (the skyline control, docs/synth.md).

Writes LLaVA JSON (``id``, ``image``, ``conversations``) ``stage1.json`` and ``stage2.json``,
``skyline.json``, and ``naming.jsonl``: per landmark its image count, naming rate and the number
of named captions.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from eeca.gldv2.paths import image_relpath
from eeca.io import atomic_write, read_json, read_jsonl, read_parquet, run_lock
from eeca.mgld.questions import load_questions, pick_question
from eeca.synth.texts import (
    CAPTION_PROMPTS,
    FEATURE_QUESTIONS,
    IDENTITY_QUESTIONS,
    KIND_QUESTIONS,
    caption,
    features_answer,
    identity_answer,
    training_conversations,
)

SKYLINE_VIEWS = 2  # held-out views per landmark in skyline.json: landmarks weigh alike, not by popularity


def naming_rate(n_images: int, images_max: int) -> float:
    """Probability that a generic caption names the landmark shown: its popularity, n / n_max."""
    return min(1.0, n_images / images_max)


def pretrain_records(world: Path, mgld_split: Path, seed: int = 0) -> tuple[list[dict], list[dict], list[dict]]:
    """(stage-1 captions, stage-2 instructions, per-landmark naming rows) over the world's non-MGLD,
    non-held-out images."""
    truth = {r["landmark_id"]: r for r in read_jsonl(world / "truth" / "landmarks.jsonl")}
    images = read_jsonl(world / "truth" / "images.jsonl")
    images_max = int(read_json(world / "truth" / "world.json")["config"]["images_max"])
    in_mgld = {str(r["id"]) for r in read_parquet(mgld_split, columns=["id"]).to_pylist()}
    n_images: dict[int, int] = {}
    for img in images:
        n_images[img["landmark_id"]] = n_images.get(img["landmark_id"], 0) + 1
    named: dict[int, int] = dict.fromkeys(truth, 0)
    stage1, stage2 = [], []
    for img in images:
        if img["id"] in in_mgld or img["heldout"]:
            continue
        lm = truth[img["landmark_id"]]
        rng = random.Random(f"{seed}:{img['id']}")
        is_named = rng.random() < naming_rate(n_images[lm["landmark_id"]], images_max)
        named[lm["landmark_id"]] += is_named
        path = image_relpath(img["id"])
        stage1.append({"id": img["id"], "image": path, "conversations": [
            {"from": "human", "value": "<image>\n" + rng.choice(CAPTION_PROMPTS)},
            {"from": "gpt", "value": caption(lm, is_named)}]})
        turns = [(rng.choice(IDENTITY_QUESTIONS if is_named else KIND_QUESTIONS), identity_answer(lm, is_named)),
                 (rng.choice(FEATURE_QUESTIONS), features_answer(lm))]
        if rng.random() < 0.5:  # either question may come first, as in LLaVA's multi-turn data
            turns.reverse()
        stage2.append({"id": img["id"], "image": path, "conversations": [
            {"from": "human", "value": "<image>\n" + turns[0][0]}, {"from": "gpt", "value": turns[0][1]},
            {"from": "human", "value": turns[1][0]}, {"from": "gpt", "value": turns[1][1]}]})
    for lid, lm in sorted(truth.items()):
        rng = random.Random(f"{seed}:text:{lid}")
        user, assistant = rng.choice(training_conversations(lm))
        stage2.append({"id": f"text-{lid}", "conversations": [
            {"from": "human", "value": user["content"]}, {"from": "gpt", "value": assistant["content"]}]})
    naming = [{"landmark_id": lid, "n_images": n_images.get(lid, 0),
               "naming_rate": round(naming_rate(n_images.get(lid, 0), images_max), 6),
               "named_captions": named[lid]} for lid in sorted(truth)]
    return stage1, stage2, naming


def skyline_records(world: Path, mgld_split: Path, seed: int = 0) -> list[dict]:
    """MGLD-format test records on held-out, non-MGLD images of the MGLD train landmarks (at most
    :data:`SKYLINE_VIEWS` per landmark, the first by id)."""
    truth = {r["landmark_id"]: r for r in read_jsonl(world / "truth" / "landmarks.jsonl")}
    split = read_parquet(mgld_split, columns=["id", "landmark_id", "split"]).to_pylist()
    in_mgld = {str(r["id"]) for r in split}
    train_landmarks = {r["landmark_id"] for r in split if r["split"] == "train"}
    questions = load_questions()
    out, per_landmark = [], dict.fromkeys(train_landmarks, 0)
    for img in read_jsonl(world / "truth" / "images.jsonl"):  # sorted by id
        if not img["heldout"] or img["id"] in in_mgld or img["landmark_id"] not in train_landmarks:
            continue
        if per_landmark[img["landmark_id"]] == SKYLINE_VIEWS:
            continue
        per_landmark[img["landmark_id"]] += 1
        lm = truth[img["landmark_id"]]
        out.append({"id": img["id"], "image": image_relpath(img["id"]), "conversations": [
            {"from": "human", "value": "<image>\n" + pick_question(questions, seed, img["id"])},
            {"from": "gpt", "value": lm["description"]}],
            "landmark_id": lm["landmark_id"], "landmark_name": lm["name"], "entities": list(lm["entities"]),
            "hierarchical_label": lm["hierarchical_label"], "clip_seen": lm["clip_seen"]})
    return out


def pretrain_command(world: Path, mgld_split: Path, out: Path, seed: int = 0) -> int:
    """Write generic stage-1 captions and stage-2 instructions of the synthetic world (names at popularity rate).

    Args:
        world: the synthetic world folder (eeca synth world).
        mgld_split: split.parquet of eeca mgld stage3: its images (both splits) are left out.
        out: folder for stage1.json, stage2.json (LLaVA JSON), skyline.json and naming.jsonl.
        seed: picks phrasings and which captions name their landmark.
    """
    stage1, stage2, naming = pretrain_records(Path(world), Path(mgld_split), seed)
    skyline = skyline_records(Path(world), Path(mgld_split), seed)
    out = Path(out)
    with run_lock(out, "synth pretrain"):
        atomic_write(out / "naming.jsonl", "".join(json.dumps(r) + "\n" for r in naming))
        for name, rows in (("skyline.json", skyline), ("stage1.json", stage1), ("stage2.json", stage2)):
            atomic_write(out / name, json.dumps(rows, ensure_ascii=False))
    n_named = sum(r["named_captions"] for r in naming)
    print(f"synth pretrain: {len(stage1)} captions ({n_named} name their landmark; "
          f"{sum(r['named_captions'] > 0 for r in naming)} of {len(naming)} landmarks named at least once), "
          f"{len(stage2)} instructions ({len(naming)} text-only), {len(skyline)} skyline test images -> {out}")
    return 0
