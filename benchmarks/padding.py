"""Padding in stage-3 batches of MGLD-like lengths, and what packing would cost (paper section 5.1; docs/train.md).

A stage-3 sample is the chat-templated question and answer plus the image placeholders (704 for
EECA at paper geometry: 128 HR latents + 576 LR tokens; 576 for LLaVA). Text lengths come from
MGLD records (``--records``: a synth or real MGLD ``train.json``; default: the tests' MGLD-style
records) tokenised with the tiny EECA tokenizer (one token per word or punctuation mark, close to
a BPE count for this English).

**Padding share** (pad tokens / all tokens of the padded [B, T] batches) for batches of ``--batch``
samples per device, as each sampler orders them:

* ``shuffled``: the Trainer's default random sampler, what stage 3 uses (the collator pads each
  batch to its longest sample);
* ``modality-grouped, W device(s)``: our ``ModalityLengthSampler`` (``group_by_modality_length``,
  LLaVA's), whose mega-batch is one optimiser step of all devices (``batch x W`` samples) sorted by
  length, consecutive batches going to consecutive devices;
* ``length-grouped (mega-batch x 50)``: transformers' ``LengthGroupedSampler`` (``group_by_length``);
* ``packed``: padding-free (every sample of a batch in one row, position ids restarting per
  sample): 0 by construction.

**Step time, padded vs packed** (``--step-width``, 0 skips it): forward + backward of a 2-layer
Llama of that width (SDPA, float32, one thread, CPU time of this process) on one batch of the
records' lengths + 704 placeholders, once padded with an attention mask, once packed into one row
with restarting position ids (transformers builds the block-diagonal mask from them); the two
losses must agree. Without a variable-length attention kernel each packed token attends over the
whole packed row. transformers looks for packed rows only when no attention mask and no KV cache
is given: ``use_cache=False`` is needed, or every sample silently attends to the ones before it.

    PYTHONPATH=src python benchmarks/padding.py --records runs/demo/mgld/train.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import types
from pathlib import Path

import torch

from eeca.model.tiny import tiny_tokenizer
from eeca.train.data import LlavaJsonDataset
from eeca.train.trainer import ModalityLengthSampler


def text_lengths(records: list[dict]) -> list[int]:
    tok = tiny_tokenizer()
    out = []
    for r in records:
        msgs = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"].replace("<image>", "")}
                for t in r["conversations"]]
        out.append(len(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]))
    return out


def padding_share(batches: list[list[int]]) -> float:
    real = sum(sum(b) for b in batches)
    padded = sum(max(b) * len(b) for b in batches)
    return 1 - real / padded


def device_batches(order: list[int], lengths: list[int], batch: int, devices: int = 1) -> list[list[int]]:
    """The per-device batches of a sampler's order: consecutive batches go to consecutive devices, so
    every batch is one device's (as accelerate shards a data loader); the lengths of each batch."""
    return [[lengths[i] for i in order[s:s + batch]] for s in range(0, len(order), batch)]


def step_times(lengths: list[int], width: int, repeats: int) -> tuple[float, float, float, float]:
    """(padded s, packed s, padded loss, packed loss) of one forward + backward, best of ``repeats``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=width, intermediate_size=width * 7 // 2, num_hidden_layers=2,
                      num_attention_heads=max(1, width // 64), num_key_value_heads=max(1, width // 256),
                      vocab_size=2048, max_position_embeddings=sum(lengths) + 1)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.config._attn_implementation = "sdpa"
    seqs = [torch.randint(10, cfg.vocab_size, (n,)) for n in lengths]
    labels = [torch.where(torch.arange(n) < n - 30, -100, s) for n, s in zip(lengths, seqs, strict=True)]  # answers
    t, b = max(lengths), len(lengths)
    padded = {"input_ids": torch.zeros(b, t, dtype=torch.long), "attention_mask": torch.zeros(b, t, dtype=torch.long),
              "labels": torch.full((b, t), -100)}
    for k, (s, y) in enumerate(zip(seqs, labels, strict=True)):
        padded["input_ids"][k, :len(s)], padded["attention_mask"][k, :len(s)], padded["labels"][k, :len(s)] = s, 1, y
    packed = {"input_ids": torch.cat(seqs)[None], "labels": torch.cat(labels)[None],
              "position_ids": torch.cat([torch.arange(n) for n in lengths])[None]}

    def step(batch) -> tuple[float, float]:
        model.zero_grad(set_to_none=True)
        t0 = time.process_time()
        loss = model(**batch, use_cache=False).loss  # with a cache, transformers does not look for packing
        loss.backward()
        return time.process_time() - t0, loss.item()

    best = {"padded": float("inf"), "packed": float("inf")}
    loss = {}
    for _ in range(repeats):  # interleaved: a load that changes hits both alike
        for name, batch in (("padded", padded), ("packed", packed)):
            sec, loss[name] = step(batch)
            best[name] = min(best[name], sec)
    return best["padded"], best["packed"], loss["padded"], loss["packed"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=Path, help="MGLD train.json (default: the tests' MGLD-style records)")
    ap.add_argument("--placeholders", type=int, nargs="+", default=[704, 576, 0],
                    help="image placeholders per sample (704 EECA, 576 LLaVA, 0 = text only)")
    ap.add_argument("--batch", type=int, default=16, help="samples per device and step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--step-width", type=int, default=512, help="Llama width for the step timing (0: skip it)")
    ap.add_argument("--step-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if a.records:
        records = json.loads(a.records.read_text())
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import tempfile

        from train_helpers import write_llava_json

        with tempfile.TemporaryDirectory() as tmp:
            records = json.loads(write_llava_json(Path(tmp), n=256).read_text())
    text = text_lengths(records)
    q = sorted(text)
    print(f"{len(text)} records from {a.records or 'tests/train_helpers.py'}: text tokens min {q[0]}, "
          f"median {q[len(q) // 2]}, max {q[-1]}; batch {a.batch} per device")
    # the sampler's own sort key (words + 128 for an image), as the Trainer computes it
    keys = LlavaJsonDataset.modality_lengths(types.SimpleNamespace(records=records))
    for ph in a.placeholders:
        lengths = [t + ph for t in text]
        order = list(range(len(lengths)))
        random.Random(a.seed).shuffle(order)
        shares = {"shuffled (stage-3 default)": padding_share(device_batches(order, lengths, a.batch))}
        for devices in (1, 8):
            sampler = ModalityLengthSampler(keys if ph else [-abs(k) for k in keys], a.batch * devices, seed=a.seed)
            shares[f"modality-grouped, {devices} device(s)"] = padding_share(
                device_batches(list(sampler), lengths, a.batch, devices))
        mega = a.batch * 50
        grouped = [i for s in range(0, len(order), mega) for i in sorted(order[s:s + mega], key=lambda i: -lengths[i])]
        shares["length-grouped (mega-batch x 50)"] = padding_share(device_batches(grouped, lengths, a.batch))
        print(f"placeholders {ph:>3}: padding share " + ", ".join(f"{k} {v:.2%}" for k, v in shares.items())
              + ", packed 0.00%", flush=True)
    if a.step_width:
        torch.set_num_threads(1)
        batch = [text[i] + 704 for i in random.Random(a.seed).sample(range(len(text)), a.step_batch)]
        padded, packed, loss_pad, loss_pack = step_times(batch, a.step_width, a.repeats)
        pad = 1 - sum(batch) / (max(batch) * len(batch))
        print(f"step (forward + backward), 2-layer Llama width {a.step_width}, SDPA, {len(batch)} samples of "
              f"{min(batch)}-{max(batch)} tokens ({pad:.2%} padding): padded {padded:.2f} s, packed {packed:.2f} s, "
              f"packed/padded {packed / padded:.2f}x; loss padded {loss_pad:.6f}, packed {loss_pack:.6f} "
              f"(|delta| {abs(loss_pad - loss_pack):.1e}); CPU seconds, best of {a.repeats}", flush=True)


if __name__ == "__main__":
    main()
