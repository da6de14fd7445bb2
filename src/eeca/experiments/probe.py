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
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from eeca.evaluate.generate import build_prompt, load_model
from eeca.evaluate.judge import normalise
from eeca.gldv2.paths import image_relpath
from eeca.images import image_file, load_image
from eeca.io import read_jsonl, write_json

KIND_PROBE = "What kind of landmark is this?"
ENTITY_PROBE = "What are its notable features?"
TEXT_PROBE = "Describe {name}."


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
