"""The controls of a cell on hand-built files: skyline vs the CLIP, latent knowledge, closed vocabulary."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from eeca.experiments.controls import (
    ControlsConfig,
    closed_vocabulary,
    latent_knowledge,
    skyline_records,
    skyline_summary,
)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _judgments(path, levels: dict[str, str]):
    return _jsonl(path, [{"id": i, "level": lv, "status": "ok"} for i, lv in levels.items()]
                  + [{"id": "failed-one", "level": None, "status": "failed"}])


def test_skyline_split_by_clip_seen_beside_the_clips_top1(tmp_path):
    records = [{"id": "a", "landmark_id": 1, "clip_seen": True}, {"id": "b", "landmark_id": 1, "clip_seen": True},
               {"id": "c", "landmark_id": 2, "clip_seen": False}, {"id": "d", "landmark_id": 3, "clip_seen": False}]
    judged = _judgments(tmp_path / "j.jsonl", {"a": "known", "b": "unknown", "c": "strongly_known",
                                               "d": "weakly_unknown"})
    pq.write_table(pa.table({"id": ["a", "b", "c", "d", "zz"], "landmark_id": [1, 1, 2, 3, 9],
                             "top1_landmark_id": [1, 1, 7, 3, 9]}), tmp_path / "scores.parquet")
    s = skyline_summary(records, judged, tmp_path / "scores.parquet")
    assert s["clip_seen"] == {"n": 2, "recognised": 1, "accuracy": 50.0, "clip_top1": 100.0}
    assert s["clip_unseen"] == {"n": 2, "recognised": 1, "accuracy": 50.0, "clip_top1": 50.0}
    assert s["all"]["n"] == 4 and s["all"]["accuracy"] == 50.0 and s["all"]["clip_top1"] == 75.0


def test_skyline_records_are_those_of_the_cells_landmarks(tmp_path):
    sky = [{"id": str(i), "landmark_id": i % 3} for i in range(9)]
    (tmp_path / "sky.json").write_text(json.dumps(sky))
    (tmp_path / "train.json").write_text(json.dumps([{"id": "x", "landmark_id": 1}, {"id": "y", "landmark_id": 2}]))
    got = skyline_records(ControlsConfig(skyline_test_json=tmp_path / "sky.json"), tmp_path / "train.json")
    assert [r["id"] for r in got] == ["1", "2", "4", "5", "7", "8"]


def test_latent_knowledge_by_named_and_clip_seen(tmp_path):
    test = [{"id": f"q{i}", "landmark_id": i} for i in range(6)]
    (tmp_path / "test.json").write_text(json.dumps(test))
    truth = _jsonl(tmp_path / "truth.jsonl", [{"landmark_id": i, "clip_seen": i < 3} for i in range(6)])
    naming = _jsonl(tmp_path / "naming.jsonl", [{"landmark_id": i, "named_captions": [4, 0, 1, 0, 2, 0][i]}
                                                for i in range(6)])
    judged = _judgments(tmp_path / "j.jsonl", {"q0": "known", "q1": "unknown", "q2": "unknown",
                                               "q3": "unknown", "q4": "strongly_known", "q5": "weakly_unknown"})
    out = latent_knowledge(judged, tmp_path / "test.json", truth, naming)
    # named: q0 (seen, known), q2 (seen, unknown), q4 (unseen, SK); unnamed: q1 (seen), q3, q5 (unseen)
    assert out["named/clip_seen"] == {"n": 2, "recognised": 1, "accuracy": 50.0}
    assert out["named/clip_unseen"] == {"n": 1, "recognised": 1, "accuracy": 100.0}
    assert out["unnamed/clip_seen"] == {"n": 1, "recognised": 0, "accuracy": 0.0}
    assert out["unnamed/clip_unseen"] == {"n": 2, "recognised": 0, "accuracy": 0.0}
    assert out["any/any"] == {"n": 6, "recognised": 2, "accuracy": 100 * 2 / 6}


def test_closed_vocabulary_reads_every_string_of_json_and_jsonl(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"conversations": [{"from": "gpt", "value": "Karvel Tower, red"}]}]))
    _jsonl(tmp_path / "b.jsonl", [{"name": "Lake Brün", "entities": ["twin spires"]}])
    vocab = closed_vocabulary([tmp_path / "a.json", tmp_path / "b.jsonl"])
    assert {"karvel", "tower", "red", "lake", "brun", "twin", "spires", "gpt"} <= vocab
    assert "conversations" not in vocab  # keys are not text
    assert closed_vocabulary([]) is None
