"""User errors end in one line naming the file and field, exit status 2, never a traceback; a question
too long to generate for is a counted skip; and train, generate and ``mgld validate`` share one
record validator, so what one refuses the others refuse too."""

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from eeca.cli import main
from eeca.evaluate.generate import load_test_records
from eeca.io import InputError, read_jsonl
from eeca.mgld.validate import checked_records, validate_records
from eeca.train.data import DataError
from eeca.train.data import read_records as train_records
from train_helpers import stage3_config


def _record(i, **over):
    rec = {"id": f"q{i}", "image": f"{i}.jpg", "landmark_id": i, "landmark_name": f"Tower {i}",
           "entities": ["spire"], "hierarchical_label": "tower", "s_gt": 0.3, "rsr": 0.5,
           "conversations": [{"from": "human", "value": "<image>\nWhich landmark is this?"},
                             {"from": "gpt", "value": f"It is Tower {i}."}]}
    rec.update(over)
    return rec


def _conv(q, a):
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


def _one_line(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("eeca "), err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_user_errors_are_one_line_naming_file_and_field_with_status_2(tmp_path, capsys):
    data = tmp_path / "data.json"
    data.write_text(json.dumps([_record(0)]))
    base = stage3_config(tmp_path, tmp_path, data)
    recipe = tmp_path / "stage3.yaml"
    recipe.write_text(yaml.safe_dump(base))
    train_cases = [  # (override, field named in the error)
        ("model.checkpoint=/nonexistent/ckpt", "model.checkpoint"),
        (f"data.path={tmp_path / 'none.json'}", "data.path"),
        ("data.eval_path=/nonexistent/eval.json", "data.eval_path"),
        ("optim.deepspeed=/nonexistent/zero2.json", "optim.deepspeed"),
        ("optim.logging_steps=0", "optim.logging_steps"),
        ("optim.logging_steps=-5", "optim.logging_steps"),
        ("optim.per_device_eval_batch_size=0", "optim.per_device_eval_batch_size"),
        ("optim.learning_rate=-1e-5", "optim.learning_rate"),
        ("optim.learning_rate=0", "optim.learning_rate"),
        ("optim.max_steps=0", "optim.max_steps"),
    ]
    for override, field in train_cases:
        assert main(["train", str(recipe), "--overrides", override]) == 2, override
        err = _one_line(capsys, f"field '{field}'")
        assert str(recipe) in err or f"--overrides {override}" in err, err  # the file, or the override that set it

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # a saved model as far as the start-up checks go
    gen = tmp_path / "gen.yaml"
    gen.write_text(yaml.safe_dump({"model": str(model), "test_json": str(data), "image_root": str(tmp_path)}))
    assert main(["generate", str(gen), str(tmp_path / "g"), "--num-chunks", "2", "--chunk-idx", "5"]) == 2
    _one_line(capsys, "--chunk-idx 5")
    assert main(["generate", str(gen), str(tmp_path / "g"), "--overrides", "model=/nonexistent/model"]) == 2
    _one_line(capsys, str(gen), "field 'model'")
    bad_records = {  # generate's record problems, found by the shared validator
        "two <image>": _record(0, conversations=_conv("<image>\n<image>\nWhich?", "A.")),
        "int image": _record(0, image=7),
        "non-string entities": _record(0, entities=["spire", 3]),
        "no image": {k: v for k, v in _record(0).items() if k != "image"},
    }
    for what, rec in bad_records.items():
        test = tmp_path / "bad_test.json"
        test.write_text(json.dumps([rec]))
        assert main(["generate", str(gen), str(tmp_path / "g"), "--overrides", f"test_json={test}"]) == 2, what
        _one_line(capsys, str(test), "record 0 (id=q0)")

    judge = tmp_path / "judge.yaml"
    gens = tmp_path / "gens.jsonl"
    gens.write_text("")
    judge.write_text(yaml.safe_dump({"generations": str(gens), "test_json": str(data), "judge": "rule",
                                     "bootstrap_samples": 0}))
    assert main(["judge", str(judge), str(tmp_path / "j")]) == 2
    _one_line(capsys, str(judge), "field 'bootstrap_samples'")
    for gen_line, test_rec, field in (('{"id": "q0", "responses": [1, 2]}', _record(0), "responses"),
                                      ('["q0"]', _record(0), "JSON object"),
                                      ('{"id": "q0", "responses": ["a"]}', _record(0, landmark_id="x"), "landmark_id")):
        gens.write_text(gen_line + "\n")
        test = tmp_path / "judge_test.json"
        test.write_text(json.dumps([test_rec]))
        judge.write_text(yaml.safe_dump({"generations": str(gens), "test_json": str(test), "judge": "rule"}))
        assert main(["judge", str(judge), str(tmp_path / "j")]) == 2, field
        _one_line(capsys, field)
    gens.write_text("")
    assert main(["metrics", str(gens), "--bootstrap-samples", "0"]) == 2
    _one_line(capsys, "--bootstrap-samples 0")

    scores = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "landmark_id": [1, 2], "s_gt": [0.1, 0.2], "rsr": [0.5, 0.6]}), scores)
    for size in ("0", "-3", "3"):
        assert main(["select", str(scores), "hds", size, str(tmp_path / "sel.parquet")]) == 2, size
        _one_line(capsys, "size" if size != "3" else "asked for 3 images but the pool has only 2")

    # a 1 MB question is a counted skip, never sent to the model (none is even loaded here)
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps([_record(0, conversations=_conv("<image>\n" + "why " * 250_000, "A."))]))
    assert main(["generate", str(gen), str(tmp_path / "huge"), "--overrides", f"test_json={huge}"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress bar: one line, nothing left to answer
    assert "every one of 1 records was skipped" in last and "max_question_chars=4000" in last


def test_train_generate_and_validate_refuse_the_same_records_and_configs_refuse_nonsense(tmp_path, capsys):
    bad = {
        "empty answer": [_record(0, conversations=_conv("<image>\nWhich?", ""))],
        "whitespace answer": [_record(0, conversations=_conv("<image>\nWhich?", " \n\t "))],
        "zero-width answer": [_record(0, conversations=_conv("<image>\nWhich?", "\u200b\u2060\ufeff"))],
        "swapped roles": [_record(0, conversations=[{"from": "gpt", "value": "<image>\nIt is X."},
                                                    {"from": "human", "value": "Which?"}])],
        "duplicate ids": [_record(0), _record(1, id="q0")],
        "blank question": [_record(0, conversations=_conv("<image>\n \u200b", "It is X."))],
    }
    for what, records in bad.items():
        path = tmp_path / "records.json"
        path.write_text(json.dumps(records))
        assert main(["mgld", "validate", str(path)]) == 1, what
        with pytest.raises(DataError, match=r"records.json: record \d \(id=q0\): "):
            train_records(path)
        with pytest.raises(InputError, match=r"records.json: record \d \(id=q0\): "):
            load_test_records(path)
    capsys.readouterr()

    data = tmp_path / "data.json"
    data.write_text(json.dumps([_record(0)]))
    recipe = tmp_path / "stage3.yaml"
    recipe.write_text(yaml.safe_dump(stage3_config(tmp_path, tmp_path, data)))
    for override, field in (("optim.num_train_epochs=0", "optim.num_train_epochs"),
                            ("optim.save_steps=0", "optim.save_steps"),
                            ("optim.max_grad_norm=-1.0", "optim.max_grad_norm")):
        assert main(["train", str(recipe), "--overrides", override]) == 2, override
        _one_line(capsys, f"field '{field}'")
    # a key given twice: YAML would keep the last silently
    twice = tmp_path / "twice.yaml"
    twice.write_text(recipe.read_text() + "stage: 2\n")
    assert main(["train", str(twice)]) == 2
    _one_line(capsys, str(twice), "field 'stage': given twice")
    nested = tmp_path / "nested.yaml"
    nested.write_text(recipe.read_text().replace("  learning_rate:", "  logging_steps: 3\n  learning_rate:", 1))
    assert main(["train", str(nested)]) == 2
    _one_line(capsys, "field 'logging_steps': given twice")


# ---- fuzz: the record validator over random records and random files ---------------------------

def _mutations(rng: random.Random):
    """Random record-level damage: a field dropped, retyped, or replaced by odd text."""
    odd = ["", " ", "\u200b", "<image>", "<image><image>", "\x00", "é" * 3, "\ud7ff", "1e309", "../x.jpg",
           "/etc/passwd", "🗼", "q0", "NaN"]
    values = [None, 0, -1, 1.5, float("inf"), True, [], {}, ["a", 1], [""], {"from": "human"}, *odd]
    fields = ["id", "image", "conversations", "landmark_id", "landmark_name", "entities", "hierarchical_label",
              "s_gt", "rsr", "extra"]

    def mutate(rec: dict) -> dict:
        rec = json.loads(json.dumps(rec))
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            if op < 0.25:
                rec.pop(rng.choice(fields), None)
            elif op < 0.55:
                rec[rng.choice(fields)] = rng.choice(values)
            elif op < 0.9 and isinstance(rec.get("conversations"), list) and rec["conversations"]:
                turns = rec["conversations"]
                j = rng.randrange(len(turns))
                choice = rng.random()
                if choice < 0.3:
                    turns[j] = rng.choice(values)
                elif choice < 0.6 and isinstance(turns[j], dict):
                    turns[j]["value"] = rng.choice(odd) + rng.choice(["", "text", " answer "])
                elif choice < 0.8 and isinstance(turns[j], dict):
                    turns[j]["from"] = rng.choice(["human", "gpt", "system", "user", "", None])
                else:
                    turns.insert(rng.randrange(len(turns) + 1), rng.choice(turns))
            else:
                rec["id"] = rng.choice(["q0", "q1", 0, 1])
        return rec

    return mutate


def _really_valid(records: list) -> bool:
    """An independent statement of what an accepted record is (kind llava)."""
    ids = [str(r.get("id")) if isinstance(r, dict) else None for r in records]
    if None in ids or len(set(ids)) != len(ids):
        return False
    for r in records:
        if not isinstance(r.get("id"), str | int) or isinstance(r.get("id"), bool):
            return False
        conv = r.get("conversations")
        if not isinstance(conv, list) or not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in conv):
            return False
        if conv and conv[0].get("from") == "system":
            conv = conv[1:]
        if len(conv) < 2 or len(conv) % 2:
            return False
        for k, t in enumerate(conv):
            if t.get("from") != ("human", "gpt")[k % 2] or not "".join(
                    c for c in t["value"].replace("<image>", "") if not c.isspace() and c not in "\u200b\u2060\ufeff"):
                return False
        tokens = sum(t["value"].count("<image>") for t in r["conversations"])
        if "image" in r:
            if not isinstance(r["image"], str) or not r["image"] or tokens != 1 or not conv[0]["value"].startswith("<image>"):
                return False
            if r["image"].startswith("/") or ".." in r["image"].split("/"):
                return False
        elif tokens:
            return False
        if "entities" in r and not (isinstance(r["entities"], list) and all(isinstance(e, str) for e in r["entities"])):
            return False
        if "hierarchical_label" in r and not isinstance(r["hierarchical_label"], str):
            return False
    return True


def test_fuzz_the_record_validator_clear_error_or_exact_records_never_a_traceback(tmp_path):
    rng = random.Random(17)
    mutate = _mutations(rng)
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(3000):  # record lists: refused with a message, or accepted exactly when truly valid
        records = [mutate(_record(i)) if rng.random() < 0.7 else _record(i) for i in range(rng.randint(1, 3))]
        messages = validate_records(records, "llava")
        assert all(isinstance(m, str) and m.startswith("record ") for _, m in messages)
        assert (not messages) == _really_valid(records), (records, messages)
        outcomes["accepted" if not messages else "refused"] += 1
    good = json.dumps([_record(0), _record(1)], ensure_ascii=False).encode()
    path = tmp_path / "fuzz.json"
    for n in range(600):  # files: cut, damaged, re-encoded bytes through every reader of records
        kind = n % 4
        if kind == 0:
            blob = good[: rng.randrange(len(good))]
        elif kind == 1:
            blob = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                blob[rng.randrange(len(blob))] = rng.randrange(256)
            blob = bytes(blob)
        elif kind == 2:
            blob = good.decode().encode(rng.choice(["utf-16", "latin-1", "utf-8-sig", "cp1252"]), errors="replace")
        else:
            blob = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        path.write_bytes(blob)
        results = []
        for reader in (checked_records, train_records, load_test_records):
            try:
                results.append(reader(path))
            except InputError as e:
                assert str(path) in str(e) and "\n" not in str(e)
                results.append("refused")
        assert results[0] == results[1] and results[2] in (results[0], "refused"), results
        if results[0] == "refused":  # generate also needs an image and a human first turn: never accepts more
            assert results[2] == "refused"
        else:
            assert results[0] == json.loads(blob) and _really_valid(results[0])
        outcomes["accepted" if results[0] != "refused" else "refused"] += 1
    assert outcomes["accepted"] > 100 and outcomes["refused"] > 1000


def test_a_missing_checkpoint_is_one_line_naming_config_field_and_path(tmp_path, monkeypatch, capsys):
    from transformers import CLIPVisionConfig, LlamaConfig

    monkeypatch.chdir(tmp_path)  # outside a demo run: runs/demo/models does not exist here
    assert main(["model", "summary", "synth/model"]) == 2
    _one_line(capsys, "synth/model", "field 'vision'", "no model folder runs/demo/models/clip")
    vision, llm = tmp_path / "clip", tmp_path / "llm"
    CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     image_size=32, patch_size=8).save_pretrained(vision)
    llm.mkdir()  # a folder, but no saved model in it
    over = ["--overrides", f"vision={vision}", f"llm={llm}"]
    assert main(["model", "summary", "synth/model", *over]) == 2
    _one_line(capsys, "field 'llm'", f"{llm} is a folder without config.json")
    LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=100).save_pretrained(llm)
    assert main(["model", "summary", "synth/model", *over]) == 0  # both found: the summary is printed
    assert "visual tokens per image" in capsys.readouterr().out


def test_synth_check_without_stand_ins_is_one_line_naming_the_folder(tmp_path, capsys):
    assert main(["synth", "check", "--world", str(tmp_path), "--models", str(tmp_path / "models")]) == 2
    _one_line(capsys, f"--models {tmp_path / 'models'}: no model folder {tmp_path / 'models' / 'clip'}")
