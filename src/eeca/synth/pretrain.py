"""Generic stage-1 / stage-2 data of the synthetic world: the stand-in for LLaVA-558k / LLaVA-665k.

The paper's starting point is LLaVA-1.5 (paper 3.3, 5.1): a model aligned and instruction-tuned on
generic data that never names the landmarks of MGLD. The synthetic equivalent describes what an
image shows -- its category and visible attributes (the world's entities) -- and never its name or
place, so the starting model can see a "red brick tower with twin spires" but is not taught which
landmark it is. Only images outside MGLD are used, and no image of a test landmark, so stage-3
subsets and the test questions stay unseen.

Writes LLaVA JSON (``id``, ``image``, ``conversations``), one file per stage.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from eeca.gldv2.paths import image_relpath
from eeca.io import atomic_write, read_jsonl, read_parquet

CAPTION_PROMPTS = ("Describe the image briefly.", "What does this picture show?", "Give a short caption.")
KIND_QUESTIONS = ("What kind of landmark is this?", "What type of structure or place is shown?")
FEATURE_QUESTIONS = ("What are its notable features?", "Describe what stands out in this image.")


def _features(entities: list[str]) -> str:
    items = [f"a {e}" for e in entities]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def pretrain_records(world: Path, mgld_split: Path, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(stage-1 captions, stage-2 instructions) over the world's images outside MGLD and its test landmarks."""
    truth = {r["landmark_id"]: r for r in read_jsonl(world / "truth" / "landmarks.jsonl")}
    split = read_parquet(mgld_split, columns=["id", "landmark_id", "split"]).to_pylist()
    in_mgld = {str(r["id"]) for r in split}
    test_landmarks = {r["landmark_id"] for r in split if r["split"] == "test"}
    stage1, stage2 = [], []
    for img in read_jsonl(world / "truth" / "images.jsonl"):
        if img["id"] in in_mgld or img["landmark_id"] in test_landmarks:
            continue
        lm = truth[img["landmark_id"]]
        rng = random.Random(f"{seed}:{img['id']}")
        path = image_relpath(img["id"])
        label, feats = lm["hierarchical_label"], _features(lm["entities"])
        stage1.append({"id": img["id"], "image": path, "conversations": [
            {"from": "human", "value": "<image>\n" + rng.choice(CAPTION_PROMPTS)},
            {"from": "gpt", "value": f"A {label} with {feats}."}]})
        stage2.append({"id": img["id"], "image": path, "conversations": [
            {"from": "human", "value": "<image>\n" + rng.choice(KIND_QUESTIONS)},
            {"from": "gpt", "value": f"This is a {label}."},
            {"from": "human", "value": rng.choice(FEATURE_QUESTIONS)},
            {"from": "gpt", "value": f"It has {feats}."}]})
    return stage1, stage2


def pretrain_command(world: Path, mgld_split: Path, out: Path, seed: int = 0) -> int:
    """Write generic stage-1 captions and stage-2 instructions of the synthetic world (no landmark names).

    Args:
        world: the synthetic world folder (eeca synth world).
        mgld_split: split.parquet of eeca mgld stage3: its images and its test landmarks are left out.
        out: folder for stage1.json and stage2.json (LLaVA JSON).
        seed: picks the prompt phrasing per image.
    """
    stage1, stage2 = pretrain_records(Path(world), Path(mgld_split), seed)
    for name, rows in (("stage1.json", stage1), ("stage2.json", stage2)):
        atomic_write(Path(out) / name, json.dumps(rows, ensure_ascii=False))
    print(f"synth pretrain: {len(stage1)} generic captions and instructions (no names) -> {out}")
    return 0
