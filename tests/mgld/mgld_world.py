"""Helpers for the MGLD tests: a small landmark set on disk and a fake OpenAI-compatible annotator."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from eeca.gldv2.paths import image_path
from fake_openai import FakeOpenAI, misbehave

CATEGORIES = ["tower", "church", "bridge", "lake"]


def make_world(root: Path, n: int = 12, truth: bool = True) -> dict:
    """``n`` landmarks with one GLDv2-style image each, landmarks.parquet, a stage-1 choice and truth."""
    rows, lms, truth_recs = [], [], []
    for i in range(n):
        lid = 100 + i
        sid = hashlib.sha256(f"img{i}".encode()).hexdigest()[:16]
        path = image_path(root / "world", sid)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 16), (10 * i % 256, 80, 200 - 10 * i % 200)).save(path, "JPEG")
        cat = CATEGORIES[i % len(CATEGORIES)]
        name = f"Karvel {cat.title()} {i}" + (" (Ostrava)" if i % 3 == 0 else "")
        lms.append({"landmark_id": lid, "name": name, "hierarchical_label": cat if i % 5 else None,
                    "supercategory": "place", "natural_or_human_made": "natural" if cat == "lake" else "human-made"})
        rows.append({"landmark_id": lid, "id": sid, "s_gt": 0.2 + i / 100, "rsr": 1.0 - i / (2 * n)})
        truth_recs.append({"landmark_id": lid, "name": name, "hierarchical_label": cat, "place": f"Town{i}, Nordland",
                           "entities": [f"red brick facade {i}", "twin spires", "stone base"],
                           "description": f"A {cat} of red brick.", "aliases": [], "clip_seen": bool(i % 2)})
    pq.write_table(pa.Table.from_pylist(lms), root / "landmarks.parquet")
    pq.write_table(pa.Table.from_pylist(rows), root / "stage1.parquet")
    (root / "world" / "truth").mkdir(parents=True, exist_ok=True)
    (root / "world" / "truth" / "landmarks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in truth_recs))
    cfg = {"stage1": str(root / "stage1.parquet"), "landmarks": str(root / "landmarks.parquet"),
           "image_root": str(root / "world"), "out": str(root / "out"), "seed": 3,
           "truth": str(root / "world" / "truth" / "landmarks.jsonl") if truth else None,
           "annotator": {"backend": "template"}, "split": {"test_count": 3, "test_fraction": None}}
    return {"root": root, "config": cfg, "rows": rows, "landmarks": lms}


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


class AnnotatorServer(FakeOpenAI):
    """A fake OpenAI-compatible annotator (stage-2 answers, stage-3 entities) that fails on request.

    ``script[landmark name]`` is a list of actions consumed one per chat request for that sample:
    ``429``, ``500``, ``timeout`` (sleeps past the client's timeout), ``garbage`` (not JSON),
    ``schema`` (JSON that breaks the reply schema), ``bad=<mode>`` (a misbehaving reply,
    :func:`fake_openai.misbehave`); when it is empty the reply is valid.
    ``per_name`` counts chat requests per landmark, ``images`` the image url schemes sent.
    """

    def __init__(self, model: str = "fake-vlm"):
        super().__init__(model)
        self.script: dict[str, list[str]] = defaultdict(list)
        self.per_name: Counter = Counter()
        self.images: Counter = Counter()

    def reply(self, body: dict, auth: str = ""):
        first = body["messages"][0]["content"]
        text = next(c["text"] for c in first if c["type"] == "text")
        url = next(c["image_url"]["url"] for c in first if c["type"] == "image_url")
        name = re.search(r"Landmark name(?: \(reference\))?: (.*)", text).group(1).strip()
        stage3 = "Original category label" in text
        with self.lock:
            self.per_name[name] += 1
            self.images[url.split(",")[0]] += 1
            action = self.script[name].pop(0) if self.script[name] else "ok"
        if action.startswith("bad="):
            return misbehave(action[4:], self.model, auth)
        if action == "429":
            return 429, "rate limited"
        if action == "500":
            return 500, "internal error"
        if action == "timeout":
            time.sleep(self.stall)
        if action == "garbage":
            return 200, "Sure! The landmark is lovely, answer: yes"
        if action == "schema":
            return 200, json.dumps({"entities": "not a list"} if stage3 else {"answer": 42})
        if stage3:
            return 200, json.dumps({"entities": [f"{name} spire", "brick wall", "Brick Wall"],
                                    "hierarchical_label": "  Tower "})
        return 200, json.dumps({"answer": f"This is {name}, seen from the river."})
