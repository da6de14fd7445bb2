"""eeca generate: exact sampling, shared prefill, answers reproducible per id, resume, chunks, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from cli_env import eeca_env
from eeca.config import from_dict
from eeca.evaluate.generate import (
    GenerateConfig,
    PerRowSampler,
    build_prompt,
    generate_batch,
    load_model,
    run_generate,
)
from eeca.io import InputError, read_jsonl
from tiny_llava import build_tiny_llava

QUESTIONS = ["Which landmark is this?", "What is this place called?", "Describe the building.",
             "Where was this photo taken?", "Name the landmark in the picture."]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny LLaVA checkpoint and seven MGLD test records with images."""
    root = tmp_path_factory.mktemp("gen")
    model = build_tiny_llava(root / "model")
    images = root / "images"
    images.mkdir()
    records = []
    for n in range(7):
        Image.new("RGB", (40 + 3 * n, 36), (30 * n, 200 - 20 * n, 90)).save(images / f"{n}.jpg")
        records.append({"id": f"q{n}", "image": f"{n}.jpg",
                        "conversations": [{"from": "human", "value": f"<image>\n{QUESTIONS[n % 5]}"},
                                          {"from": "gpt", "value": "The Grey Tower."}],
                        "landmark_id": n, "landmark_name": f"Landmark {n}", "entities": ["stone", "spire"],
                        "hierarchical_label": "tower", "s_gt": 0.3, "rsr": 0.9})
    test_json = root / "test.json"
    test_json.write_text(json.dumps(records))
    return {"root": root, "model": model, "images": images, "test_json": test_json, "records": records}


def make_cfg(world, **kw) -> GenerateConfig:
    base = {"model": str(world["model"]), "test_json": str(world["test_json"]), "image_root": str(world["images"]),
            "k": 3, "max_new_tokens": 6, "batch_size": 2, "temperature": 1.0, "top_p": 0.95}
    return from_dict(GenerateConfig, {**base, **kw})


@pytest.fixture(scope="module")
def loaded(world):
    return load_model(world["model"], "float32", torch.device("cpu"))


def _batch_inputs(world, processor, recs):
    prompts = [build_prompt(processor, r["conversations"][0]["value"]) for r in recs]
    images = [Image.open(world["images"] / r["image"]).convert("RGB") for r in recs]
    return prompts, images, [r["id"] for r in recs]


def test_sampler_draws_from_the_warped_distribution():
    # Gumbel-max over 3 logits must reproduce softmax(logits / T); top_p removes the tail token.
    logits = torch.tensor([[2.0, 1.0, 0.0, -3.0]]).repeat(1, 1)
    n = 6000
    sampler = PerRowSampler(list(range(n)), temperature=0.7, top_p=0.97, top_k=0, device=torch.device("cpu"))
    picks = sampler(torch.zeros(n, 1, dtype=torch.long), logits.repeat(n, 1)).argmax(-1)
    freq = torch.bincount(picks, minlength=4).float() / n
    p = torch.softmax(logits[0] / 0.7, -1)
    kept = p[:3] / p[:3].sum()  # the last token is outside the top-0.97 mass
    assert freq[3] == 0
    assert torch.allclose(freq[:3], kept, atol=0.02), (freq, kept)


def test_shared_prefill_equals_hf_generate_on_copied_prompts(world, loaded):
    from transformers import GenerationConfig, LogitsProcessorList

    model, processor = loaded
    cfg = make_cfg(world)
    recs = world["records"][:2]
    prompts, images, ids = _batch_inputs(world, processor, recs)
    ours = generate_batch(model, processor, prompts, images, ids, cfg)
    # Reference: every prompt copied k times before a full prefill (what num_return_sequences does).
    from eeca.evaluate.generate import row_seed

    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    expanded = {k: v.repeat_interleave(cfg.k, 0) for k, v in inputs.items()}
    sampler = PerRowSampler([row_seed(cfg.seed, i, j) for i in ids for j in range(cfg.k)],
                            cfg.temperature, cfg.top_p, cfg.top_k, torch.device("cpu"))
    tok = processor.tokenizer
    seqs = model.generate(**expanded, generation_config=GenerationConfig(
        do_sample=False, max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id), logits_processor=LogitsProcessorList([sampler]))
    ref = [t.strip() for t in tok.batch_decode(seqs[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)]
    assert [a for answers in ours for a in answers] == ref
    assert len(set(ours[0])) > 1, "k samples of one question should differ at temperature 1"


def _static_answers(world, loaded, monkeypatch, compile):
    """Answers of the hf and the static backend for three prompts of different lengths (left padding)."""
    import eeca.evaluate.generate as generate

    model, processor = loaded
    recs = world["records"][:3]
    hf = generate_batch(model, processor, *_batch_inputs(world, processor, recs), make_cfg(world, max_new_tokens=10))
    caches = []

    def spy(*args):
        out = real(*args)
        caches.append(out)
        return out

    real = generate.static_decoding_cache
    monkeypatch.setattr(generate, "static_decoding_cache", spy)
    static = generate_batch(model, processor, *_batch_inputs(world, processor, recs),
                            make_cfg(world, max_new_tokens=10, backend="static", compile=compile))
    assert len(caches) == 1 and type(caches[0][0]).__name__ == "StaticCache"
    assert (caches[0][1] is not None) == compile
    return hf, static


def test_static_cache_backend_gives_the_hf_answers(world, loaded, monkeypatch):
    hf, static = _static_answers(world, loaded, monkeypatch, compile=False)
    assert static == hf
    assert len({a for answers in hf for a in answers}) > 3, "the answers must differ to compare anything"


@pytest.mark.slow
def test_compiled_static_backend_gives_the_hf_answers(world, loaded, monkeypatch):
    # torch.compile of the decoding step: minutes on a CPU (inductor builds C++ kernels)
    hf, static = _static_answers(world, loaded, monkeypatch, compile=True)
    assert static == hf


def test_answers_of_an_id_do_not_depend_on_its_batch(world, loaded):
    model, processor = loaded
    cfg = make_cfg(world)
    recs = world["records"][:4]
    alone = {r["id"]: generate_batch(model, processor, *_batch_inputs(world, processor, [r]), cfg)[0] for r in recs}
    shuffled = [recs[i] for i in (3, 1, 0, 2)]
    for size in (2, 3):
        for s in range(0, 4, size):
            part = shuffled[s:s + size]
            answers = generate_batch(model, processor, *_batch_inputs(world, processor, part), cfg)
            for r, a in zip(part, answers, strict=True):
                assert a == alone[r["id"]], (r["id"], size)
    other_seed = generate_batch(model, processor, *_batch_inputs(world, processor, recs[:1]), make_cfg(world, seed=7))
    assert other_seed[0] != alone[recs[0]["id"]]


def test_chunks_merge_to_one_run_and_rerun_is_a_no_op(world, tmp_path):
    cfg = make_cfg(world, batch_size=3)
    one = tmp_path / "one"
    stats = run_generate(cfg, one)
    assert stats["merged"] and stats["generated"] == 7
    rows = read_jsonl(one / "generations.jsonl")
    assert [r["id"] for r in rows] == [f"q{n}" for n in range(7)]
    assert all(len(r["responses"]) == 3 and r["gen_config_hash"] == cfg.hash() for r in rows)
    assert rows[0]["question"] == "Which landmark is this?"
    answers = read_jsonl(one / "answers.jsonl")
    assert len(answers) == 21 and answers[1]["question_id"] == "q0" and answers[1]["sample"] == 1

    chunked = tmp_path / "chunked"
    first = run_generate(make_cfg(world, batch_size=2), chunked, num_chunks=2, chunk_idx=1)
    assert not first["merged"] and not (chunked / "generations.jsonl").exists()
    assert run_generate(make_cfg(world, batch_size=2), chunked, num_chunks=2, chunk_idx=0)["merged"]
    for name in ("generations.jsonl", "answers.jsonl"):
        assert (chunked / name).read_bytes() == (one / name).read_bytes()
    assert run_generate(cfg, one)["generated"] == 0
    with pytest.raises(ValueError, match="gen_config_hash"):
        run_generate(make_cfg(world, temperature=0.5), one)


def test_kill_9_then_resume_gives_the_uninterrupted_output(world, tmp_path):
    ref = tmp_path / "ref"
    run_generate(make_cfg(world, batch_size=1), ref)
    yaml_path = tmp_path / "gen.yaml"
    cfg = {"model": str(world["model"]), "test_json": str(world["test_json"]), "image_root": str(world["images"]),
           "k": 3, "max_new_tokens": 6, "batch_size": 1, "temperature": 1.0, "top_p": 0.95}
    yaml_path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in cfg.items()) + "\n")
    out = tmp_path / "killed"
    part = out / "parts" / "generations.00000-of-00001.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "eeca", "generate", str(yaml_path), str(out),
                             "--overrides", "max_new_tokens=6"], env=eeca_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not part.exists() or part.read_text().count("\n") < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = part.read_text().count("\n")
    assert 2 <= done < 7, "the kill should land mid-run"
    with part.open("a") as f:
        f.write('{"id": "q6", "respo')  # a torn last line, as a kill during a write leaves
    assert run_generate(make_cfg(world, batch_size=1), out)["generated"] == 7 - done
    assert (out / "generations.jsonl").read_bytes() == (ref / "generations.jsonl").read_bytes()


def test_missing_image_is_a_counted_skip_and_bad_records_are_named(world, tmp_path):
    records = [dict(r) for r in world["records"][:3]]
    records[1]["image"] = "nope.jpg"
    (world["images"] / "escape.jpg").symlink_to(world["images"].parent / "elsewhere.jpg")
    records[2]["image"] = "escape.jpg"  # a link out of the image root
    path = tmp_path / "t.json"
    path.write_text(json.dumps(records))
    out = tmp_path / "o"
    run_generate(make_cfg(world, test_json=str(path)), out)
    assert [r["id"] for r in read_jsonl(out / "generations.jsonl")] == ["q0"]
    skipped = read_jsonl(out / "skipped.jsonl")
    assert [s["id"] for s in skipped] == ["q1", "q2"] and skipped[1]["reason"].startswith("path escapes the image root")
    assert skipped[0]["reason"] == "missing file"

    records[1] = {**records[0]}
    path.write_text(json.dumps(records))
    with pytest.raises(InputError, match=r"record 1 \(id=q0\): id: duplicate of record 0"):
        run_generate(make_cfg(world, test_json=str(path)), tmp_path / "o2")
    path.write_text(json.dumps([{**records[0], "conversations": [{"from": "gpt", "value": "x"}]}]))
    with pytest.raises(InputError, match=r"record 0 \(id=q0\): conversations"):
        run_generate(make_cfg(world, test_json=str(path)), tmp_path / "o3")


def test_entity_prompt_appends_the_record_entities(world, tmp_path):
    out, path = tmp_path / "ep", tmp_path / "one.json"
    path.write_text(json.dumps(world["records"][:1]))
    run_generate(make_cfg(world, entity_prompt=True, test_json=str(path)), out)
    row = read_jsonl(out / "generations.jsonl")[0]
    assert row["question"] == "Which landmark is this?\nEntities in the image: stone, spire."
    assert row["gen_config_hash"] != make_cfg(world).hash()


@pytest.mark.slow
def test_accelerate_launch_two_processes_equals_one_run(world, tmp_path):
    # EECA_SLOW=1 pytest tests/test_evaluate_generate.py -m slow  (--multi_gpu: torchrun processes; on a
    # machine without an accelerator they coordinate over gloo on CPU)
    cfg = {"model": str(world["model"]), "test_json": str(world["test_json"]), "image_root": str(world["images"]),
           "k": 3, "max_new_tokens": 6, "batch_size": 2, "temperature": 1.0, "top_p": 0.95}
    yaml_path = tmp_path / "gen.yaml"
    yaml_path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in cfg.items()) + "\n")
    run_generate(make_cfg(world), tmp_path / "one")
    subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "-m", "eeca", "generate", str(yaml_path), str(tmp_path / "two")],
                   env=eeca_env(), check=True, capture_output=True, timeout=600)
    assert (tmp_path / "two" / "parts" / "generations.00001-of-00002.jsonl").exists()
    assert (tmp_path / "two" / "generations.jsonl").read_bytes() == (tmp_path / "one" / "generations.jsonl").read_bytes()


def test_extra_processor_outputs_reach_the_prefill_only(world, loaded):
    # EECA's processor adds pixel_values_hr (B, G*G, 3, S, S); generate passes it through to the prefill.
    from transformers import LlavaForConditionalGeneration

    seen = []

    class HrModel(LlavaForConditionalGeneration):
        def forward(self, *args, pixel_values_hr=None, **kwargs):
            seen.append(None if pixel_values_hr is None else tuple(pixel_values_hr.shape))
            return super().forward(*args, **kwargs)

    class HrProcessor:
        def __init__(self, inner):
            self.inner, self.tokenizer = inner, inner.tokenizer

        def __call__(self, **kw):
            out = self.inner(**kw)
            out["pixel_values_hr"] = torch.zeros(out["pixel_values"].shape[0], 4, *out["pixel_values"].shape[1:])
            return out

    base, processor = loaded
    model = HrModel(base.config).eval()
    model.load_state_dict(base.state_dict())
    cfg = make_cfg(world)
    prompts, images, ids = _batch_inputs(world, processor, world["records"][:2])
    answers = generate_batch(model, HrProcessor(processor), prompts, images, ids, cfg)
    assert seen[0] == (2, 4, 3, 32, 32) and all(s is None for s in seen[1:])
    assert answers == generate_batch(base, processor, prompts, images, ids, cfg)


def test_skips_are_retried_and_a_wrong_root_is_an_error(world, tmp_path):
    from eeca.io import InputError
    from image_cases import write_png_bomb

    out = tmp_path / "o"
    with pytest.raises(InputError, match="every one of 7 records was skipped"):
        run_generate(make_cfg(world, image_root=str(tmp_path / "wrong")), out)
    assert run_generate(make_cfg(world), out)["generated"] == 7  # right root, same folder: all retried
    assert (out / "generations.jsonl").read_bytes() == (_reference(world, tmp_path) / "generations.jsonl").read_bytes()
    assert read_jsonl(out / "skipped.jsonl") == []

    # a hostile image is a skip with its reason; once fixed, the rerun generates it
    root = tmp_path / "images"
    shutil.copytree(world["images"], root, symlinks=True)
    rel = world["records"][0]["image"]
    good = (root / rel).read_bytes()
    write_png_bomb(root / rel)
    out2 = tmp_path / "o2"
    run_generate(make_cfg(world, image_root=str(root)), out2)
    assert [s["reason"].split(" (")[0] for s in read_jsonl(out2 / "skipped.jsonl")] == ["too many pixels"]
    (root / rel).write_bytes(good)
    assert run_generate(make_cfg(world, image_root=str(root)), out2)["generated"] == 1
    assert read_jsonl(out2 / "skipped.jsonl") == [] and len(read_jsonl(out2 / "generations.jsonl")) == 7


def test_run_check_covers_image_root_and_test_file(world, tmp_path):
    out = tmp_path / "o"
    run_generate(make_cfg(world), out)
    other_root = tmp_path / "images"
    shutil.copytree(world["images"], other_root, symlinks=True)
    with pytest.raises(ValueError, match="image_root"):
        run_generate(make_cfg(world, image_root=str(other_root)), out)
    edited = tmp_path / "t.json"
    edited.write_text(json.dumps([{**world["records"][0], "conversations": [
        {"from": "human", "value": "<image>\nWhere is this?"}, *world["records"][0]["conversations"][1:]]}]
        + world["records"][1:]))
    with pytest.raises(ValueError, match="test_json_sha256"):
        run_generate(make_cfg(world, test_json=str(edited)), out)
    with pytest.raises(ValueError, match="images"):
        run_generate(make_cfg(world, images={"max_pixels": 1000}), out)


def _reference(world, tmp_path):
    ref = tmp_path / "ref"
    if not (ref / "generations.jsonl").exists():
        run_generate(make_cfg(world), ref)
    return ref
