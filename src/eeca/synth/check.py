"""Are the stand-ins what they are meant to be? Figures for the CLIP and the LLM (DESIGN section 8).

The world and stand-ins are built so that (paper section 2, Figure 1; section 3.1):

* the CLIP recognises the landmarks it was trained on (VE-Known) on images it did not train on,
  and not the landmarks it never saw (VE-Unknown): zero-shot top-1 over ALL names, on held-out
  images of seen landmarks vs images of unseen landmarks, against chance 1/M;
* the LLM knows every landmark in text: asked to describe a landmark by name it produces the
  right place and attributes, and given a description it produces the right name (greedy
  decoding, case-insensitive substring match).

Each LLM rate comes with a *shuffled-truth* reference: the same responses scored against another
landmark's truth (a seeded derangement), which is what a model that ignored the question would
score. Questions are asked in a phrasing used in training and in one never used in training.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm
from transformers import AutoTokenizer, CLIPModel, CLIPProcessor, LlamaForCausalLM

from eeca.gldv2.paths import image_path
from eeca.io import check_checkpoint, read_jsonl, write_json
from eeca.synth.texts import DESCRIBE_QUESTIONS, NAME_QUESTIONS, landmark_fields
from eeca.synth.world import read_truth

NEW_DESCRIBE_QUESTION = "What can you tell me about the landmark {name}?"
NEW_NAME_QUESTION = "A {category} in {place}, known for its {e0}, its {e1} and its {e2}. What is its name?"


@torch.no_grad()
def clip_top1(world: Path, clip_dir: Path, landmarks: list[dict], images: list[dict], batch: int = 256) -> dict:
    """Zero-shot top-1 / top-5 over all M names per clip_split (train, heldout, unseen) and per view."""
    model = CLIPModel.from_pretrained(clip_dir).eval()
    proc = CLIPProcessor.from_pretrained(clip_dir)
    lids = [lm["landmark_id"] for lm in landmarks]
    col = {lid: j for j, lid in enumerate(lids)}
    text = proc.tokenizer([lm["name"] for lm in landmarks], padding=True, truncation=True, return_tensors="pt")
    t = model.get_text_features(**text)
    t = torch.nn.functional.normalize(t if torch.is_tensor(t) else t.pooler_output, dim=-1)  # [M, D]
    ranks = np.zeros(len(images), dtype=np.int64)
    bar = tqdm(total=len(images), desc="synth check: CLIP", unit="img")
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        pil = []
        for r in chunk:
            with Image.open(image_path(world, r["id"])) as im:
                pil.append(im.convert("RGB"))
        v = model.get_image_features(**proc.image_processor(images=pil, return_tensors="pt"))
        v = torch.nn.functional.normalize(v if torch.is_tensor(v) else v.pooler_output, dim=-1)  # [b, D]
        sim = v @ t.T  # [b, M]
        gt = torch.tensor([col[r["landmark_id"]] for r in chunk])
        s_gt = sim[torch.arange(len(chunk)), gt]
        ranks[i:i + len(chunk)] = (1 + (sim > s_gt[:, None]).sum(1)).numpy()  # ties do not count
        bar.update(len(chunk))
    bar.close()
    out: dict = {"chance_top1": 1.0 / len(landmarks), "chance_top5": min(1.0, 5.0 / len(landmarks)),
                 "names": len(landmarks)}
    for key, sel in (("split", "clip_split"), ("view", "view")):
        for value in sorted({r[sel] for r in images}):
            idx = [k for k, r in enumerate(images) if r[sel] == value]
            out[f"{key}={value}"] = {"n": len(idx), "top1": float(np.mean(ranks[idx] == 1)),
                                     "top5": float(np.mean(ranks[idx] <= 5)), "median_rank": float(np.median(ranks[idx]))}
    return out


@torch.no_grad()
def generate(llm: LlamaForCausalLM, tok, questions: list[str], max_new_tokens: int = 64, batch: int = 100) -> list[str]:
    """Greedy answers to single-turn questions in the chat template (left-padded batches)."""
    out = []
    for i in range(0, len(questions), batch):
        convs = [[{"role": "user", "content": q}] for q in questions[i:i + batch]]
        enc = tok.apply_chat_template(convs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                      padding=True, return_tensors="pt")
        gen = llm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def _rates(responses: list[str], truths: list[dict]) -> dict:
    low = [r.lower() for r in responses]
    place = [t["place"].lower() in r for r, t in zip(low, truths, strict=True)]
    attrs = [np.mean([e.lower() in r for e in t["entities"]]) for r, t in zip(low, truths, strict=True)]
    name = [t["name"].lower() in r for r, t in zip(low, truths, strict=True)]
    return {"place": float(np.mean(place)), "attributes": float(np.mean(attrs)), "name": float(np.mean(name))}


def _derangement(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    while True:
        perm = list(range(n))
        rng.shuffle(perm)
        if all(i != p for i, p in enumerate(perm)):
            return perm


def llm_knowledge(llm_dir: Path, landmarks: list[dict], seed: int = 0) -> dict:
    """Place / attribute rates when describing by name, name rate when given the description."""
    llm = LlamaForCausalLM.from_pretrained(llm_dir).eval()
    tok = AutoTokenizer.from_pretrained(llm_dir)
    fields = [landmark_fields(lm) for lm in landmarks]
    shuffled = [landmarks[j] for j in _derangement(len(landmarks), seed)]
    out: dict = {"landmarks": len(landmarks)}
    asks = {"describe_trained": DESCRIBE_QUESTIONS[0], "describe_new": NEW_DESCRIBE_QUESTION,
            "name_trained": NAME_QUESTIONS[0], "name_new": NEW_NAME_QUESTION}
    examples = {}
    for key, template in tqdm(asks.items(), desc="synth check: LLM", unit="question set"):
        responses = generate(llm, tok, [template.format(**f) for f in fields])
        got, ref = _rates(responses, landmarks), _rates(responses, shuffled)
        keep = ("place", "attributes") if key.startswith("describe") else ("name",)
        out[key] = {k: got[k] for k in keep} | {f"{k}_shuffled_truth": ref[k] for k in keep}
        examples[key] = {"question": template.format(**fields[0]), "response": responses[0]}
    out["examples"] = examples
    return out


def evaluate_standins(world: str | Path, models: str | Path, threads: int = 1) -> dict:
    """The CLIP's zero-shot top-1 (seen held-out vs unseen vs chance) and the LLM's text knowledge."""
    world, models = Path(world), Path(models)
    for part in ("clip", "llm"):  # one line, not a transformers traceback, when eeca synth models has not run
        check_checkpoint(models / part, f"--models {models}", local_files_only=True)
    torch.set_num_threads(threads)
    landmarks = read_truth(world)
    images = read_jsonl(world / "truth" / "images.jsonl")
    return {"clip": clip_top1(world, models / "clip", landmarks, images),
            "llm": llm_knowledge(models / "llm", landmarks)}


def format_table(r: dict) -> str:
    c, k = r["clip"], r["llm"]
    rows = [("CLIP zero-shot top-1 over all names", "", ""),
            ("  held-out images, seen landmarks", f"{c['split=heldout']['top1']:.3f}", f"n={c['split=heldout']['n']}"),
            ("  images of unseen landmarks", f"{c['split=unseen']['top1']:.3f}", f"n={c['split=unseen']['n']}"),
            ("  training images (fit)", f"{c['split=train']['top1']:.3f}", f"n={c['split=train']['n']}"),
            ("  chance 1/M", f"{c['chance_top1']:.3f}", f"M={c['names']}")]
    for phr in ("trained", "new"):
        d, n = k[f"describe_{phr}"], k[f"name_{phr}"]
        rows += [(f"LLM, {phr} phrasing (vs shuffled truth)", "", ""),
                 ("  describe by name: right place", f"{d['place']:.3f}", f"{d['place_shuffled_truth']:.3f}"),
                 ("  describe by name: attributes", f"{d['attributes']:.3f}", f"{d['attributes_shuffled_truth']:.3f}"),
                 ("  name from description", f"{n['name']:.3f}", f"{n['name_shuffled_truth']:.3f}")]
    w = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:<{w}}  {b:>6}  {c_}" for a, b, c_ in rows)


def check_command(world: str = "runs/demo/world", models: str = "runs/demo/models", out: str | None = None,
                  threads: int = 1) -> int:
    """Measure the stand-ins: CLIP top-1 on seen vs unseen landmarks, LLM place/attribute/name rates.

    Args:
        world: world folder written by `eeca synth world`
        models: folder written by `eeca synth models` (clip/, llm/)
        out: JSON file for the figures (default: MODELS/check.json)
        threads: torch CPU threads
    """
    r = evaluate_standins(world, models, threads)
    path = Path(out) if out else Path(models) / "check.json"
    write_json(path, r)
    print(format_table(r))
    c = r["clip"]
    print(f"synth check: CLIP top-1 seen {c['split=heldout']['top1']:.3f} / unseen {c['split=unseen']['top1']:.3f} / "
          f"chance {c['chance_top1']:.3f}; LLM place {r['llm']['describe_new']['place']:.3f}, attributes "
          f"{r['llm']['describe_new']['attributes']:.3f}, name {r['llm']['name_new']['name']:.3f} (new phrasing) -> {path}")
    return 0
