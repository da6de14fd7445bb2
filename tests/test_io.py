"""eeca.io: atomic writes, parquet/json round trips, JsonlStore resumption (torn lines, kill -9)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from cli_env import eeca_env
from eeca.io import (
    InputError,
    JsonlStore,
    atomic_path,
    atomic_write,
    read_json,
    read_jsonl,
    read_parquet,
    read_records,
    write_json,
    write_parquet,
)


def test_atomic_write_replaces_the_file(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write(p, "old")
    atomic_write(p, "néw")
    assert p.read_text(encoding="utf-8") == "néw"
    assert os.listdir(p.parent) == ["f.txt"]


def test_exception_inside_atomic_path_leaves_the_old_file(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write(p, b"old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        tmp.write_bytes(b"half of the new cont")
        raise RuntimeError("killed halfway")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]  # no temporary left behind


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    p = tmp_path / "f.txt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / f"f.txt.tmp-{dead}").write_text("half")
    (tmp_path / f"f.txt.tmp-{os.getppid()}").write_text("a live writer's")  # a running process: kept
    (tmp_path / "g.txt.tmp-1").write_text("another file's")
    atomic_write(p, "new")
    assert sorted(os.listdir(tmp_path)) == ["f.txt", f"f.txt.tmp-{os.getppid()}", "g.txt.tmp-1"]


def test_json_and_parquet_round_trip(tmp_path):
    obj = {"b": [1, 2.5, None], "a": "清水寺"}
    write_json(tmp_path / "x.json", obj)
    assert read_json(tmp_path / "x.json") == obj
    assert (tmp_path / "x.json").read_text(encoding="utf-8").endswith("}\n")
    write_parquet(tmp_path / "t.parquet", {"id": ["a", "b"], "n": pa.array([1, 2], pa.int64())})
    assert read_parquet(tmp_path / "t.parquet").to_pylist() == [{"id": "a", "n": 1}, {"id": "b", "n": 2}]
    assert read_parquet(tmp_path / "t.parquet", columns=["n"]).column_names == ["n"]


def test_jsonl_store_resumes_with_its_records(tmp_path):
    p = tmp_path / "s.jsonl"
    with JsonlStore(p) as s:
        s.extend([{"id": "a", "v": 1}, {"id": "b", "v": 2}])
        s.append({"id": "a", "v": 3})  # a retried record: the later one wins
    s = JsonlStore(p)
    assert len(s) == 2 and "a" in s and s.get("a") == {"id": "a", "v": 3} and s.torn_lines == 0
    s.append({"id": "c", "v": 4})
    s.close()
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b", "a", "c"]


def test_jsonl_store_cuts_a_torn_last_line(tmp_path):
    p = tmp_path / "s.jsonl"
    with JsonlStore(p) as s:
        s.append({"id": 1, "text": "done"})
    with open(p, "ab") as f:
        f.write(b'{"id": 2, "text": "half wri')
    with JsonlStore(p) as s:
        assert s.torn_lines == 1 and list(s.records) == ["1"]
        s.append({"id": 2, "text": "whole"})
    assert read_jsonl(p) == [{"id": 1, "text": "done"}, {"id": 2, "text": "whole"}]


def test_jsonl_store_cuts_a_complete_json_without_newline(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b"}', encoding="utf-8")  # the newline is what marks a record done
    with JsonlStore(p) as s:
        assert list(s.records) == ["a"] and s.torn_lines == 1


@pytest.mark.parametrize("middle", ['{"id": "b", "te', '{"text": "no id"}', "[1, 2]"])
def test_jsonl_store_damaged_middle_line_is_an_error_naming_file_and_line(tmp_path, middle):
    p = tmp_path / "s.jsonl"
    p.write_text('{"id": "a"}\n' + middle + '\n{"id": "c"}\n', encoding="utf-8")
    before = p.read_bytes()
    with pytest.raises(InputError, match=rf"{p}: line 2: "):
        JsonlStore(p)
    assert p.read_bytes() == before  # nothing is cut from a damaged file


def test_read_jsonl_names_the_bad_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"id": 1}\n\n{"id": \n', encoding="utf-8")
    with pytest.raises(InputError, match=rf"{p}: line 3: invalid JSON"):
        read_jsonl(p)


def test_read_records_reads_a_json_list_or_jsonl_and_names_the_bad_line(tmp_path):
    recs = [{"id": "a", "n": 1}, {"id": "b", "n": 2}]
    (tmp_path / "r.json").write_text(json.dumps(recs, indent=1), encoding="utf-8")
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    assert read_records(tmp_path / "r.json") == read_records(tmp_path / "r.jsonl") == recs
    bad = tmp_path / "bad.json"
    bad.write_text('[\n{"id": "a"},\n{"id": }\n]', encoding="utf-8")
    with pytest.raises(InputError, match=rf"{bad}: line 3: invalid JSON"):
        read_records(bad)
    bad.write_text('{"id": "a"}', encoding="utf-8")
    with pytest.raises(InputError, match="expected a JSON list of records, got dict"):
        read_records(bad)


WRITER = textwrap.dedent("""
    import sys
    from eeca.io import JsonlStore
    store = JsonlStore(sys.argv[1])
    for i in range(int(sys.argv[2])):
        if str(i) not in store:
            store.append({"id": str(i), "payload": "x" * 2000})
    store.close()
""")


def test_kill_9_while_writing_then_resume_gives_every_record_once(tmp_path):
    p, n = tmp_path / "k.jsonl", 500
    cmd = [sys.executable, "-c", WRITER, str(p), str(n)]
    proc = subprocess.Popen(cmd, env=eeca_env())
    deadline = time.monotonic() + 30
    while (not p.exists() or p.stat().st_size < 60_000) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with JsonlStore(p) as s:
        done = sorted(map(int, s.records))
    assert 0 < len(done) < n, "the writer must be killed part way"
    assert done == list(range(len(done)))  # a prefix: nothing lost
    subprocess.run(cmd, env=eeca_env(), check=True, timeout=120)
    ids = [r["id"] for r in read_jsonl(p)]
    assert sorted(map(int, ids)) == list(range(n))  # every record exactly once
    assert all(json.loads(line)["payload"] == "x" * 2000 for line in p.read_text().splitlines())
