"""Generic stage-1/2 data of the synthetic world: names at the rate of popularity, never MGLD or held-out images."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eeca.io import read_jsonl
from eeca.synth.config import WorldConfig
from eeca.synth.models import train_bpe, wrap_tokenizer
from eeca.synth.pretrain import naming_rate, pretrain_command, pretrain_records, skyline_records
from eeca.synth.texts import FEATURE_QUESTIONS, every_text
from eeca.synth.world import build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    world = out / "world"
    build_world(world, seed=0, cfg=WorldConfig(landmarks=12, image_size=64, images_median=10.0, images_max=20),
                progress=False)
    truth = read_jsonl(world / "truth" / "landmarks.jsonl")
    images = read_jsonl(world / "truth" / "images.jsonl")
    first = {}
    for img in images:
        first.setdefault(img["landmark_id"], img["id"])
    test_landmarks = {truth[0]["landmark_id"], truth[1]["landmark_id"]}
    rows = [{"id": i, "landmark_id": lm, "split": "test" if lm in test_landmarks else "train"}
            for lm, i in first.items()]
    pq.write_table(pa.Table.from_pylist(rows), out / "split.parquet")
    return world, out / "split.parquet", truth, images, set(first.values()), test_landmarks


def test_generic_data_leaves_out_mgld_and_heldout_images_and_keeps_test_landmarks(world):
    path, split, truth, images, mgld_ids, test_landmarks = world
    stage1, stage2, naming = pretrain_records(path, split)
    expected = {img["id"] for img in images if img["id"] not in mgld_ids and not img["heldout"]}
    assert {r["id"] for r in stage1} == expected
    assert {r["id"] for r in stage2 if "image" in r} == expected
    # other views of test landmarks are generic data (latent knowledge), their MGLD test image never is
    assert any(img["landmark_id"] in test_landmarks for img in images if img["id"] in expected)
    text_only = [r for r in stage2 if "image" not in r]
    assert len(text_only) == len(truth) and all(r["id"].startswith("text-") for r in text_only)
    for r in stage1 + stage2:
        if "image" in r:
            assert (path / r["image"]).is_file()
            assert r["conversations"][0]["value"].startswith("<image>\n")


def test_captions_name_landmarks_at_the_popularity_rate(world):
    path, split, truth, images, _, _ = world
    stage1, stage2, naming = pretrain_records(path, split)
    by_id = {img["id"]: img["landmark_id"] for img in images}
    names = {lm["landmark_id"]: lm["name"] for lm in truth}
    counted = {lid: sum(names[lid] in r["conversations"][1]["value"] for r in stage1 if by_id[r["id"]] == lid)
               for lid in names}
    assert {r["landmark_id"]: r["named_captions"] for r in naming} == counted
    for r in naming:  # rate = n_images / images_max, capped at 1
        assert r["naming_rate"] == pytest.approx(min(1.0, r["n_images"] / 20), abs=1e-6)
    assert naming_rate(20, 20) == naming_rate(30, 20) == 1.0
    # a named caption's stage-2 twin answers with the name and place; an unnamed one never does
    s1 = {r["id"]: r["conversations"][1]["value"] for r in stage1}
    for r in stage2:
        if "image" in r:
            lm = next(t for t in truth if t["landmark_id"] == by_id[r["id"]])
            answers = " ".join(t["value"] for t in r["conversations"][1::2])
            assert (lm["name"] in s1[r["id"]]) == (lm["name"] in answers)
            assert (lm["place"] in s1[r["id"]]) == (lm["place"] in answers)
    firsts = {r["conversations"][0]["value"].split("\n", 1)[1] for r in stage2 if "image" in r}
    assert firsts & set(FEATURE_QUESTIONS) and firsts - set(FEATURE_QUESTIONS)  # both orders occur
    total = sum(r["n_images"] for r in naming)
    assert 0 < sum(r["named_captions"] for r in naming) < total


def test_skyline_is_heldout_views_of_train_landmarks(world, tmp_path):
    path, split, truth, images, mgld_ids, test_landmarks = world
    sky = skyline_records(path, split)
    expected: dict[int, list[str]] = {}
    for img in sorted(images, key=lambda r: r["id"]):
        if img["heldout"] and img["id"] not in mgld_ids and img["landmark_id"] not in test_landmarks:
            expected.setdefault(img["landmark_id"], []).append(img["id"])
    assert {r["id"] for r in sky} == {i for ids in expected.values() for i in ids[:2]} and expected
    assert any(len(ids) > 2 for ids in expected.values())  # the cap of two views per landmark is exercised
    for r in sky:
        lm = next(t for t in truth if t["landmark_id"] == r["landmark_id"])
        assert r["landmark_name"] == lm["name"] and r["clip_seen"] == lm["clip_seen"]
        assert r["conversations"][0]["value"].startswith("<image>\n")
    pretrain_command(path, split, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "skyline.json").read_text()) == sky
    assert len(read_jsonl(tmp_path / "out" / "naming.jsonl")) == len(truth)


def test_tokenizer_covers_the_testbed_wording(world):
    """Common words of MGLD and the generic corpus are whole tokens, not letters (the cause of "Thihiss" babble)."""
    _, _, truth, _, _, _ = world
    tok = wrap_tokenizer(train_bpe(every_text(truth), 2048), "llm", 96)
    for word in ("This", " image", " recognisable", " looking", " photo", " location", " shown"):
        pieces = tok.convert_ids_to_tokens(tok(word, add_special_tokens=False)["input_ids"])
        assert len(pieces) == 1, (word, pieces)
