"""Helpers for the MGLD tests: a small landmark set on disk and a fake OpenAI-compatible server."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

CATEGORIES = ["tower", "church", "bridge", "lake"]


def make_world(root: Path, n: int = 12, truth: bool = True) -> dict:
    """``n`` landmarks with one GLDv2-style image each, landmarks.parquet, a stage-1 choice and truth."""
    rows, lms, truth_recs = [], [], []
    for i in range(n):
        lid = 100 + i
        sid = hashlib.sha256(f"img{i}".encode()).hexdigest()[:16]
        path = root / "world" / "train" / sid[0] / sid[1] / sid[2] / f"{sid}.jpg"
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


class FakeOpenAI:
    """An OpenAI-compatible server on 127.0.0.1 that fails on request.

    ``script[landmark name]`` is a list of actions consumed one per chat request for that sample:
    ``429``, ``500``, ``timeout`` (sleeps past the client's timeout), ``garbage`` (not JSON),
    ``schema`` (JSON that breaks the reply schema); when it is empty the reply is valid.
    ``counts`` counts requests per endpoint; ``auth`` holds the Authorization headers seen.
    """

    def __init__(self, model: str = "fake-vlm", timeout_sleep: float = 1.0):
        self.model, self.timeout_sleep = model, timeout_sleep
        self.script: dict[str, list[str]] = defaultdict(list)
        self.counts: Counter = Counter()
        self.per_name: Counter = Counter()
        self.auth: set[str] = set()
        self.images: Counter = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, obj, headers=None):
                body = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

            def do_GET(self):
                server.auth.add(self.headers.get("Authorization", ""))
                with server._lock:
                    server.counts["models"] += 1
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                server.auth.add(self.headers.get("Authorization", ""))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                first = body["messages"][0]["content"]
                text = next(c["text"] for c in first if c["type"] == "text")
                url = next(c["image_url"]["url"] for c in first if c["type"] == "image_url")
                name = re.search(r"Landmark name(?: \(reference\))?: (.*)", text).group(1).strip()
                stage3 = "Original category label" in text
                with server._lock:
                    server.counts["chat"] += 1
                    server.per_name[name] += 1
                    server.images[url.split(",")[0]] += 1
                    action = server.script[name].pop(0) if server.script[name] else "ok"
                if body.get("model") != server.model:
                    return self._send(404, {"error": {"message": f"model {body.get('model')} not found"}})
                if action == "429":
                    return self._send(429, {"error": {"message": "rate limited"}}, {"retry-after-ms": "5"})
                if action == "500":
                    return self._send(500, {"error": {"message": "internal error"}})
                if action == "timeout":
                    time.sleep(server.timeout_sleep)
                if action == "garbage":
                    content = "Sure! The landmark is lovely, answer: yes"
                elif action == "schema":
                    content = json.dumps({"entities": "not a list"} if stage3 else {"answer": 42})
                elif stage3:
                    content = json.dumps({"entities": [f"{name} spire", "brick wall", "Brick Wall"],
                                          "hierarchical_label": "  Tower "})
                else:
                    content = json.dumps({"answer": f"This is {name}, seen from the river."})
                self._send(200, {"id": "c1", "object": "chat.completion", "created": 0, "model": server.model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": content}}],
                                 "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
