"""What an MGLD annotation run would send and cost, before anything is sent (``eeca mgld stage2/3 --dry-run``).

At the paper's scale (App. B.3-B.4) stages 2 and 3 send about 203k GPT-4o requests each, one image
per request. The estimate counts the samples still to annotate (those without an ``ok`` result in
``stageN.jsonl``), the prompt's text tokens (characters / 4, a rough rate for English with GPT-4o's
tokenizer) and the image's tokens by OpenAI's rule for GPT-4o: 85 at ``detail: low``; otherwise the
image is fitted into 2048 x 2048, its short side scaled down to 768, and each 512 px tile counts 170
on top of the 85 (``auto`` is counted as ``high``, an upper bound). Replies count ``max_tokens`` each
(an upper bound). The image sizes come from the files' headers; a file that cannot be read counts 85.
"""

from __future__ import annotations

import math

from PIL import Image

from eeca.io import JsonlStore

CHARS_PER_TOKEN = 4.0


def image_tokens(width: int, height: int, detail: str) -> int:
    """GPT-4o's token count for one image of ``width`` x ``height`` at ``detail``."""
    if detail == "low":
        return 85
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def _results(path) -> dict:
    """The records of a stage's resume file by id (none when the stage has not run: nothing is created)."""
    if not path.exists():
        return {}
    with JsonlStore(path) as store:
        return dict(store.records)


def estimate(cfg, stage: str) -> dict:
    """Requests, estimated input tokens, output tokens at most, and the cost at the annotator's prices."""
    from eeca.mgld.questions import load_questions, pick_question
    from eeca.mgld.stages import load_samples
    from eeca.mgld.tasks import load_task

    a = cfg.annotator
    samples = load_samples(cfg)
    task = load_task(stage, cfg.stage2_prompt if stage == "stage2" else cfg.stage3_prompt)
    done = {k for k, r in _results(cfg.out / f"{stage}.jsonl").items() if r.get("status") == "ok"}
    qa = _results(cfg.out / "stage2.jsonl") if stage == "stage3" else {}
    questions = load_questions(cfg.questions) if stage == "stage2" else []
    unknown_answer = "x" * int(a.max_tokens * CHARS_PER_TOKEN)  # a stage-2 answer not there yet: its longest
    todo = [s for s in samples if s.id not in done]
    chars = images = 0
    for s in todo:
        if stage == "stage2":
            text = task.template + s.facts["name"] + pick_question(questions, cfg.seed, s.id)
        else:
            rec = qa.get(s.id) or {}
            text = (task.template + s.facts["name"] + (s.original_label or "") + rec.get("question", "")
                    + rec.get("answer", unknown_answer))
        chars += len(text)
        try:
            with Image.open(cfg.image_root / s.image) as im:
                images += image_tokens(*im.size, a.image_detail)
        except (OSError, Image.DecompressionBombError):  # header only; what the loader refuses costs the minimum
            images += 85
    tokens_in = round(chars / CHARS_PER_TOKEN) + images
    tokens_out = len(todo) * a.max_tokens
    return {"samples": len(samples), "done": len(samples) - len(todo), "requests": len(todo),
            "input_tokens": tokens_in, "image_tokens": images, "max_output_tokens": tokens_out,
            "max_cost_usd": round((tokens_in * a.price_input_per_1m + tokens_out * a.price_output_per_1m) / 1e6, 2)}


def dry_run_line(cfg, stage: str) -> str:
    e = estimate(cfg, stage)
    a = cfg.annotator
    if a.backend != "openai":
        return (f"mgld {stage} dry run: {e['requests']} of {e['samples']} samples to annotate with the {a.backend} "
                f"backend (no API cost); nothing run")
    return (f"mgld {stage} dry run: {e['requests']} requests to {a.model} ({e['done']} of {e['samples']} samples "
            f"already done); ~{e['input_tokens']} input tokens ({e['image_tokens']} of them images at detail "
            f"{a.image_detail}), at most {e['max_output_tokens']} output tokens (max_tokens {a.max_tokens}); at most "
            f"${e['max_cost_usd']} at ${a.price_input_per_1m} / ${a.price_output_per_1m} per million tokens; "
            f"nothing sent")
