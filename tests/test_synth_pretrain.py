"""Generic stage-1/2 data of the synthetic world: never names a landmark, never shows MGLD or test images."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from eeca.io import read_jsonl
from eeca.synth.config import WorldConfig
from eeca.synth.pretrain import pretrain_records
from eeca.synth.world import build_world


def test_pretrain_data_leaves_out_mgld_images_test_landmarks_and_names(tmp_path):
    world = tmp_path / "world"
    build_world(world, seed=0, cfg=WorldConfig(landmarks=12, image_size=64, images_median=4.0, images_max=8),
                progress=False)
    truth = read_jsonl(world / "truth" / "landmarks.jsonl")
    images = read_jsonl(world / "truth" / "images.jsonl")
    first = {}
    for img in images:
        first.setdefault(img["landmark_id"], img["id"])
    test_landmarks = {truth[0]["landmark_id"], truth[1]["landmark_id"]}
    rows = [{"id": i, "landmark_id": lm, "split": "test" if lm in test_landmarks else "train"}
            for lm, i in first.items()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "split.parquet")

    stage1, stage2 = pretrain_records(world, tmp_path / "split.parquet")
    expected = {img["id"] for img in images
                if img["id"] not in set(first.values()) and img["landmark_id"] not in test_landmarks}
    assert {r["id"] for r in stage1} == {r["id"] for r in stage2} == expected
    text = json.dumps(stage1 + stage2).lower()
    for lm in truth:
        assert lm["name"].lower() not in text
        assert lm["place"].split(",")[0].lower() not in text
    for r in stage1 + stage2:
        assert (world / r["image"]).is_file()
        assert r["conversations"][0]["value"].startswith("<image>\n")
    assert all(len(r["conversations"]) == 4 for r in stage2)
