"""k = 5 answers per question: batched with a shared prefill vs a naive loop, on the same tiny LLaVA.

Baseline: per question, five separate ``model.generate(do_sample=True)`` calls at batch 1 (what a
LLaVA-style eval script does). Ours: ``eeca.evaluate.generate.generate_batch``, 8 questions per
batch, one prefill per question shared by its 5 samples. Both measured in this run on this
machine; prints tokens/s of each and the ratio. Also prints how many questions got the same five
answers at batch 8 and at batch 1 (the per-id reproducibility that eeca generate documents: exact
on CPU float32; on a GPU, batch-shape-dependent kernels can flip a token at a near-tie).

Then the ``static`` backend (a fixed-shape key/value cache; ``--compile``: its decoding step compiled
with torch.compile) over the same batches, with how many questions got the hf backend's answers.

    PYTHONPATH=src python benchmarks/generate_k.py [--device cuda] [--dtype bfloat16] [--compile]
"""

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from eeca.config import from_dict  # noqa: E402
from eeca.evaluate.generate import GenerateConfig, build_prompt, generate_batch, load_model  # noqa: E402
from tiny_llava import build_tiny_llava  # noqa: E402

N_QUESTIONS, K, NEW_TOKENS, BATCH = 16, 5, 32, 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--compile", action="store_true", help="also the compiled static backend (minutes on CPU)")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_llava(Path(tmp) / "model", image_size=64, patch=8)  # 64 image tokens per question
        model, processor = load_model(path, args.dtype, torch.device(args.device))
    cfg = from_dict(GenerateConfig, {"model": str(path), "test_json": "-", "image_root": "-", "k": K,
                                     "max_new_tokens": NEW_TOKENS, "batch_size": BATCH, "dtype": args.dtype})
    prompts = [build_prompt(processor, f"<image>\nWhich landmark is this? ({n})") for n in range(N_QUESTIONS)]
    images = [Image.new("RGB", (80, 64), (10 * n, 100, 200 - 10 * n)) for n in range(N_QUESTIONS)]
    ids = [f"q{n}" for n in range(N_QUESTIONS)]
    tok = processor.tokenizer

    def n_tokens(texts):
        return sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts)

    generate_batch(model, processor, prompts[:1], images[:1], ids[:1], cfg)  # warm-up

    t0 = time.perf_counter()
    ours = []
    for b in range(0, N_QUESTIONS, BATCH):
        for answers in generate_batch(model, processor, prompts[b:b + BATCH], images[b:b + BATCH], ids[b:b + BATCH], cfg):
            ours.extend(answers)
    t_ours = time.perf_counter() - t0

    static = {}  # the static-cache backend, eager and (with --compile) compiled, timed after a warm-up
    for compiled in [False] + ([True] if args.compile else []):
        scfg = replace(cfg, backend="static", compile=compiled)
        t0 = time.perf_counter()
        generate_batch(model, processor, prompts[:BATCH], images[:BATCH], ids[:BATCH], scfg)  # compiles
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        answers = [a for b in range(0, N_QUESTIONS, BATCH)
                   for a in generate_batch(model, processor, prompts[b:b + BATCH], images[b:b + BATCH],
                                           ids[b:b + BATCH], scfg)]
        static[compiled] = (time.perf_counter() - t0, t_warm, sum(a == o for a, o in zip(
            answers, [ours[n * K:(n + 1) * K] for n in range(N_QUESTIONS)], strict=True)))

    single = [a for n in range(N_QUESTIONS)
              for a in generate_batch(model, processor, prompts[n:n + 1], images[n:n + 1], ids[n:n + 1], cfg)]
    same = sum(single[n] == ours[n * K:(n + 1) * K] for n in range(N_QUESTIONS))

    t0 = time.perf_counter()
    naive = []
    with torch.no_grad():
        for prompt, image in zip(prompts, images, strict=True):
            inputs = processor(images=[image], text=[prompt], return_tensors="pt").to(model.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            for _ in range(K):
                seq = model.generate(**inputs, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                                     top_k=None, max_new_tokens=NEW_TOKENS, pad_token_id=tok.pad_token_id)
                naive.append(tok.decode(seq[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    t_naive = time.perf_counter() - t0

    tps_ours, tps_naive = n_tokens(ours) / t_ours, n_tokens(naive) / t_naive
    print(f"questions {N_QUESTIONS}, k {K}, max_new_tokens {NEW_TOKENS}, batch {BATCH} questions "
          f"({BATCH * K} rows), {args.device} {args.dtype}" + (", 1 CPU thread" if args.device == "cpu" else ""))
    print(f"naive (5 x generate, batch 1): {t_naive:.2f} s, {tps_naive:.0f} tokens/s")
    print(f"batched, shared prefill:       {t_ours:.2f} s, {tps_ours:.0f} tokens/s")
    print(f"speedup (tokens/s): {tps_ours / tps_naive:.1f}x")
    for compiled, (t, t_warm, same_static) in static.items():
        name = "static cache + torch.compile" if compiled else "static cache, eager"
        print(f"{name + ':':<31}{t:.2f} s, {n_tokens(ours) / t:.0f} tokens/s ({n_tokens(ours) / t / tps_ours:.2f}x "
              f"batched hf; first batch {t_warm:.1f} s); same answers as hf: {same_static}/{N_QUESTIONS}")
    print(f"same five answers at batch {BATCH} and at batch 1: {same}/{N_QUESTIONS} questions")


if __name__ == "__main__":
    main()
