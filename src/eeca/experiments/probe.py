"""What a trained LVLM of the synthetic world sees and still knows, measured after each training stage.

The testbed can show the paper's mechanism only if the image reaches the LLM and the LLM keeps its
text knowledge (docs/synth.md, "The testbed"). Stages 1-2 are meant to teach the projector what an
image shows; every stage may erode what the LLM knew in text (paper section 2, Figure 1: the LLM
describes a landmark from its name but does not recognise its image). Three greedy probes:

* ``category``: on held-out views (never in any training set), "What kind of landmark is this?";
  right when the answer holds the landmark's category (12 categories: chance about 8%).
* ``entities``: on the same views, "What are its notable features?"; the share of the landmark's
  entities the answer names (its colour-material part, its feature, its accent colour).
* ``text``: no image, "Describe <name>."; right when the answer names the landmark's place
  (Figure 1's text-only probe) -- the LLM's own knowledge, which stage 3 must not erase.

Writes ``probe.json`` in the model folder with the rates and twenty answers of each probe.

:func:`text_knowledge` is Figure 1's probe on the test landmarks of a grid: "Do you know the landmark
<name>? Please describe the landmark.", text only, beside the CLIP's zero-shot top-1 on the
landmark's test image, so that VE-known x LLM-known can be counted (paper section 2: the LLM
describes a landmark from its name that the LVLM does not recognise in its image).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch

from eeca.evaluate.generate import build_prompt, load_model
from eeca.evaluate.judge import load_ground_truth, normalise, rule_verdict
from eeca.experiments.controls import clip_top1
from eeca.gldv2.paths import image_relpath
from eeca.images import image_file, load_image
from eeca.io import read_json, read_jsonl, write_json

KIND_PROBE = "What kind of landmark is this?"
ENTITY_PROBE = "What are its notable features?"
TEXT_PROBE = "Describe {name}."
FIGURE1_PROBE = "Do you know the landmark {name}? Please describe the landmark."  # paper section 2, Figure 1


@torch.no_grad()
def greedy(model, processor, prompts: list[str], images: list | None, max_new_tokens: int = 40) -> list[str]:
    """Greedy answers to a batch of prompts (with one image each, or text only)."""
    kwargs = {"images": images} if images else {}
    inputs = processor(text=prompts, return_tensors="pt", padding=True, **kwargs)
    inputs = {k: (v.to(model.dtype) if v.is_floating_point() else v).to(model.device) for k, v in inputs.items()}
    tok = processor.tokenizer
    out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
    return [t.strip() for t in tok.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)]


def _mentions(answer: str, phrase: str) -> bool:
    return normalise(phrase) in normalise(answer)


def probe_images(world: Path, exclude: set[str], n: int, seed: int) -> list[dict]:
    """Up to ``n`` held-out views (truth rows), not in ``exclude``, seeded."""
    rows = [r for r in read_jsonl(world / "truth" / "images.jsonl") if r["heldout"] and r["id"] not in exclude]
    rows.sort(key=lambda r: r["id"])
    return random.Random(seed).sample(rows, min(n, len(rows)))


def probe_model(model_dir: Path, world: Path, exclude: set[str] = frozenset(), n: int = 96, batch_size: int = 16,
                seed: int = 0) -> dict:
    """Run the three probes on ``model_dir``; write and return ``probe.json``."""
    model, processor = load_model(Path(model_dir), "float32", torch.device("cpu"))
    truth = {r["landmark_id"]: r for r in read_jsonl(world / "truth" / "landmarks.jsonl")}
    views = probe_images(world, set(exclude), n, seed)
    results: dict[str, list[dict]] = {"category": [], "entities": [], "text": []}
    for b in range(0, len(views), batch_size):
        chunk = views[b:b + batch_size]
        images = [load_image(image_file(world, image_relpath(r["id"]))) for r in chunk]
        for key, question in (("category", KIND_PROBE), ("entities", ENTITY_PROBE)):
            prompts = [build_prompt(processor, "<image>\n" + question) for _ in chunk]
            for r, answer in zip(chunk, greedy(model, processor, prompts, images), strict=True):
                lm = truth[r["landmark_id"]]
                score = (float(_mentions(answer, lm["hierarchical_label"])) if key == "category" else
                         sum(_mentions(answer, e) for e in lm["entities"]) / len(lm["entities"]))
                results[key].append({"id": r["id"], "truth": lm["hierarchical_label"] if key == "category"
                                     else lm["entities"], "answer": answer, "score": score})
    landmarks = sorted({r["landmark_id"] for r in views})
    for b in range(0, len(landmarks), batch_size):
        chunk = [truth[i] for i in landmarks[b:b + batch_size]]
        prompts = [build_prompt(processor, TEXT_PROBE.format(name=lm["name"])) for lm in chunk]
        for lm, answer in zip(chunk, greedy(model, processor, prompts, None), strict=True):
            results["text"].append({"landmark_id": lm["landmark_id"], "truth": lm["place"], "answer": answer,
                                    "score": float(_mentions(answer, lm["place"]))})
    summary = {key: {"n": len(rows), "rate": sum(r["score"] for r in rows) / len(rows) if rows else None,
                     "examples": rows[:20]} for key, rows in results.items()}
    write_json(Path(model_dir) / "probe.json", summary)
    return summary


def probe_line(name: str, summary: dict) -> str:
    """One line for a summary: the three rates of a probed model."""
    def rate(key: str) -> str:
        v = summary[key]["rate"]
        return "n/a" if v is None else f"{100 * v:.0f}%"

    return (f"  {name:<22} category {rate('category'):>4}  entities {rate('entities'):>4}  "
            f"text-only place {rate('text'):>4}  (n {summary['category']['n']} views, {summary['text']['n']} names)")


def llm_describes(answer: str, truth) -> tuple[bool, str]:
    """Whether a text-only description shows the LLM knows the landmark, by the rule judge with the
    landmark's name and aliases taken out of the truth (the question gives the name, so repeating it
    proves nothing): its Weakly Unknown hints, i.e. the answer holds the landmark's town, or its
    country and one of its entities, or two of its entities. (verdict, the judge's explanation)"""
    verdict = rule_verdict([answer], dataclasses.replace(truth, name="", aliases=()))
    return verdict.level == "weakly_unknown", verdict.explanation


def text_knowledge(model_dir: Path, test_json: Path, out: Path, truth: Path | None = None,
                   scores: Path | None = None, batch_size: int = 16) -> dict:
    """Figure 1's text-only probe per test landmark, and VE-known x LLM-known; writes and returns ``out``.

    VE-known: the CLIP's zero-shot top-1 (``scores.parquet``) is the landmark on most of its test
    images (None without ``scores``). LLM-known: :func:`llm_describes` on one greedy text-only answer.
    """
    # a CUDA build of torch names CUDA as its accelerator even where no GPU is present
    device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")
    model, processor = load_model(Path(model_dir), "float32" if device.type == "cpu" else "bfloat16", device)
    ground = load_ground_truth(Path(test_json), truth)
    by_landmark: dict[int, list[str]] = {}
    for r in read_json(test_json):
        by_landmark.setdefault(int(r["landmark_id"]), []).append(str(r["id"]))
    clip = clip_top1(scores, {i for ids in by_landmark.values() for i in ids}) if scores is not None else {}
    rows = []
    landmarks = sorted(by_landmark)
    for b in range(0, len(landmarks), batch_size):
        chunk = landmarks[b:b + batch_size]
        prompts = [build_prompt(processor, FIGURE1_PROBE.format(name=ground[by_landmark[lid][0]].name)) for lid in chunk]
        for lid, answer in zip(chunk, greedy(model, processor, prompts, None, max_new_tokens=64), strict=True):
            ids = by_landmark[lid]
            known, why = llm_describes(answer, ground[ids[0]])
            right = [clip[i] for i in ids if i in clip]
            rows.append({"landmark_id": lid, "name": ground[ids[0]].name, "answer": answer, "llm_known": known,
                         "ve_known": 2 * sum(right) > len(right) if right else None, "why": why})
    table = {f"{ve}/{llm}": sum(1 for r in rows if r["ve_known"] is v and r["llm_known"] is w)
             for ve, v in (("ve_known", True), ("ve_unknown", False)) for llm, w in (("llm_known", True),
                                                                                    ("llm_unknown", False))}
    summary = {"prompt": FIGURE1_PROBE, "n": len(rows), "llm_known": sum(r["llm_known"] for r in rows),
               "ve_measured": sum(r["ve_known"] is not None for r in rows), "table": table, "landmarks": rows}
    write_json(Path(out), summary)
    return summary
