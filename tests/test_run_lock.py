"""Run folders are locked for the whole run: a second process writing into one gets a clear error
naming the holder, never a silent mix of two runs (eeca.io.run_lock)."""

import json
import socket
import subprocess
import sys

from cli_env import eeca_env
from eeca.cli import main

HOLD = ("import sys; from eeca.io import run_lock\n"
        "with run_lock(sys.argv[1], sys.argv[2], *sys.argv[3:]):\n"
        "    print('locked', flush=True); sys.stdin.read()\n")


def _holder(folder, verb, *scope):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), verb, *scope], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=eeca_env())
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _release(proc):
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0


def _judge_inputs(tmp_path):
    test = [{"id": "a", "image": "a.jpg", "landmark_id": 1, "landmark_name": "Orno Tower",
             "conversations": [{"from": "human", "value": "<image>\nWhere?"}, {"from": "gpt", "value": "Orno Tower."}]}]
    (tmp_path / "test.json").write_text(json.dumps(test))
    (tmp_path / "gens.jsonl").write_text(json.dumps({"id": "a", "responses": ["Orno Tower"] * 5}) + "\n")
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(f"generations: {tmp_path / 'gens.jsonl'}\ntest_json: {tmp_path / 'test.json'}\njudge: rule\n")
    return cfg


def test_a_second_process_is_refused_with_the_holder_named_and_runs_once_the_first_ends(tmp_path, capsys):
    run = tmp_path / "run"
    judge_cfg = _judge_inputs(tmp_path)
    holder = _holder(run, "experiment")
    try:
        # another real process: one line naming pid, host, verb and start time; exit status 2
        proc = subprocess.run([sys.executable, "-m", "eeca", "judge", str(judge_cfg), str(run)],
                              capture_output=True, text=True, env=eeca_env(), timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        line = proc.stderr.strip()
        assert "\n" not in line and "in use by another run" in line
        assert f"eeca experiment, pid {holder.pid} on host {socket.gethostname()}, started 20" in line
        assert not (run / "judgments.jsonl").exists()
        # every verb that writes a run folder takes the same lock
        mgld = tmp_path / "mgld.yaml"
        mgld.write_text(f"stage1: {judge_cfg}\nlandmarks: {judge_cfg}\nimage_root: {tmp_path}\nout: {run}\n")
        gen = tmp_path / "gen.yaml"
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text("{}")  # a saved model as far as the checks go
        gen.write_text(f"model: {tmp_path / 'model'}\ntest_json: {tmp_path / 'test.json'}\nimage_root: {tmp_path}\n")
        for argv in (["score", "i.parquet", "l.parquet", str(tmp_path), str(run), "--model", str(tmp_path)],
                     ["mgld", "stage2", str(mgld)], ["mgld", "stage3", str(mgld)],
                     ["synth", "world", "--out", str(run)], ["gldv2", "ingest", str(tmp_path), str(run)]):
            assert main(argv) == 2, argv
            assert f"pid {holder.pid}" in capsys.readouterr().err, argv
    finally:
        _release(holder)
    subprocess.run([sys.executable, "-m", "eeca", "judge", str(judge_cfg), str(run)], check=True,
                   capture_output=True, env=eeca_env(), timeout=300)
    assert (run / "judgments.jsonl").exists()

    # generate's chunks share one folder: another chunk may run, the same chunk may not
    holder = _holder(run, "generate", "chunk0-of-2-rank0")
    try:
        assert main(["generate", str(gen), str(run), "--num_chunks", "2", "--chunk_idx", "0"]) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
        main(["generate", str(gen), str(run), "--num_chunks", "2", "--chunk_idx", "1"])  # runs: its image is missing
        err = capsys.readouterr().err
        assert "in use by another run" not in err and "every one of 1 records was skipped" in err
    finally:
        _release(holder)
