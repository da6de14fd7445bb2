"""``eeca gldv2 download``: pending list, moving img2dataset shards into the GLDv2 layout, resume.

The end-to-end test runs the real img2dataset against an http server on 127.0.0.1 (slow: it
needs the ``download`` extra; run with ``EECA_SLOW=1 python -m pytest tests/test_gldv2_download.py``).
"""

import csv
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from eeca.gldv2.csvfiles import SkipLog
from eeca.gldv2.download import download, download_command, harvest, write_pending
from eeca.gldv2.paths import image_path
from gldv2_fixtures import write_csv

IDS = ["0123456789abcdef", "1123456789abcdef", "2123456789abcdef", "3123456789abcdef"]


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (seed * 40 % 256, 90, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def test_pending_lists_only_missing_images_and_records_bad_rows(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    write_csv(root / "train.csv", ("id", "url", "landmark_id"),
              [(IDS[0], "http://h/0", 1), (IDS[1], "http://h/1", 1), ("nothex", "http://h/x", 1),
               (IDS[2], "http://h/2", 2), (IDS[1], "http://h/1", 1), (IDS[3], "http://h/3", 2)])
    image_path(root, IDS[0]).parent.mkdir(parents=True)
    image_path(root, IDS[0]).write_bytes(_jpeg(0))
    out = io.StringIO()
    listed, present, written = write_pending(root / "train.csv", root, tmp_path / "p.parquet", SkipLog(out))
    assert (listed, present, written) == (5, 1, 3)
    assert pq.read_table(tmp_path / "p.parquet").to_pylist() == [
        {"id": IDS[1], "url": "http://h/1"}, {"id": IDS[2], "url": "http://h/2"}, {"id": IDS[3], "url": "http://h/3"}]
    assert [r[:3] for r in csv.reader(io.StringIO(out.getvalue()))][1:] == [["train.csv", "4", "id"],
                                                                             ["train.csv", "6", "id"]]
    _, _, written = write_pending(root / "train.csv", root, tmp_path / "p.parquet", SkipLog(io.StringIO()), limit=2)
    assert written == 2 and pq.read_table(tmp_path / "p.parquet").column("id").to_pylist() == IDS[1:3]


def _fake_shard(staging, shard, rows, finished=True):
    """A shard as img2dataset's "files" writer leaves it: <shard>/<key>.jpg, <shard>.parquet, <shard>_stats.json."""
    (staging / shard).mkdir(parents=True)
    for key, image_id, status in rows:
        if status == "success":
            (staging / shard / f"{key}.jpg").write_bytes(image_id.encode())
    pq.write_table(pa.table({
        "url": [f"http://h/{i}" for _, i, _ in rows], "id": [i for _, i, _ in rows], "key": [k for k, _, _ in rows],
        "status": [s for _, _, s in rows],
        "error_message": [None if s == "success" else "HTTP Error 404: Not Found" for _, _, s in rows]}),
        staging / f"{shard}.parquet")
    if finished:
        (staging / f"{shard}_stats.json").write_text(json.dumps({"count": len(rows)}))


def test_harvest_moves_finished_shards_into_the_layout(tmp_path):
    staging, root = tmp_path / "staging", tmp_path / "root"
    _fake_shard(staging, "00000", [("000000000", IDS[0], "success"), ("000000001", IDS[1], "failed_to_download")])
    _fake_shard(staging, "00001", [("000010000", IDS[2], "success")])
    _fake_shard(staging, "00002", [("000020000", IDS[3], "success")], finished=False)  # killed mid-shard
    out = io.StringIO()
    assert harvest(staging, root, csv.writer(out)) == (2, 1)
    assert image_path(root, IDS[0]).read_bytes() == IDS[0].encode()
    assert image_path(root, IDS[2]).read_bytes() == IDS[2].encode()
    assert not image_path(root, IDS[1]).exists() and not image_path(root, IDS[3]).exists()
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [
        [IDS[1], f"http://h/{IDS[1]}", "failed_to_download: HTTP Error 404: Not Found"]]
    assert harvest(staging, root) == (2, 1)  # repeated after a kill between moves: nothing lost
    assert image_path(root, IDS[0]).read_bytes() == IDS[0].encode()


def test_without_img2dataset_the_verb_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "img2dataset", None)
    write_csv(tmp_path / "train.csv", ("id", "url", "landmark_id"), [(IDS[0], "http://h/0", 1)])
    assert download_command(tmp_path) == 1
    assert "pip install 'eeca[download]'" in capsys.readouterr().err


@pytest.fixture
def server():
    """http://127.0.0.1:PORT/<n>.jpg serves a JPEG for n in 0..2; anything else is a 404. Logs requests."""
    images = {f"/{n}.jpg": _jpeg(n) for n in range(3)}
    log = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            log.append((self.path, self.headers.get("User-Agent", "")))
            body = images.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/jpeg" if body else "text/plain")
            self.end_headers()
            self.wfile.write(body or b"not here")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", images, log
    httpd.shutdown()


@pytest.mark.slow
def test_download_from_a_local_server_with_one_broken_url(tmp_path, server):
    pytest.importorskip("img2dataset")
    base, images, log = server
    root = tmp_path / "gldv2"
    root.mkdir()
    rows = [(IDS[n], f"{base}/{n}.jpg", 5) for n in range(3)] + [(IDS[3], f"{base}/gone.jpg", 5)]
    write_csv(root / "train.csv", ("id", "url", "landmark_id"), rows)

    summary = download(root, retries=1, timeout=5, threads=4, shard_size=2, user_agent_token="eeca-test", limit=1)
    assert "1 fetched, 0 failed" in summary and image_path(root, IDS[0]).read_bytes() == images["/0.jpg"]

    summary = download(root, retries=1, timeout=5, threads=4, shard_size=2, user_agent_token="eeca-test")
    assert "4 images listed, 1 already on disk" in summary and "2 fetched, 1 failed" in summary
    for n in range(3):  # the served bytes, unchanged, at train/a/b/c/<id>.jpg
        assert image_path(root, IDS[n]).read_bytes() == images[f"/{n}.jpg"]
    with open(root / "download" / "failed.csv", newline="") as f:
        failed = list(csv.DictReader(f))
    assert [(r["id"], r["url"]) for r in failed] == [(IDS[3], f"{base}/gone.jpg")] and "404" in failed[0]["error"]
    assert [p for p, _ in log].count("/gone.jpg") == 2  # retries=1: two attempts
    assert all("eeca-test" in ua for _, ua in log)
    assert not (root / "download" / "staging").exists()

    before = len(log)
    summary = download(root, retries=0, timeout=5, threads=4, user_agent_token="eeca-test")
    assert "3 already on disk" in summary and "0 fetched, 1 failed" in summary
    assert [p for p, _ in log[before:]] == ["/gone.jpg"]  # only the missing image is asked for again
