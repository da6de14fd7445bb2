"""Share of padding tokens in stage-3 batches of MGLD-like lengths (paper section 5.1; docs/train.md).

A stage-3 sample is the chat-templated question and answer plus the image placeholders (704 for
EECA at paper geometry: 128 HR latents + 576 LR tokens; 576 for LLaVA). Text lengths come from
MGLD records (``--records``: a synth or real MGLD ``train.json``; default: the tests' MGLD-style
records) tokenised with the tiny EECA tokenizer (one token per word or punctuation mark, close to
a BPE count for this English). For batches of ``--batch`` samples the benchmark prints the padding
share (pad tokens / all tokens in the padded [B, T] batches) of:

* ``random``: shuffled batches, what the Trainer's default sampler gives (the collator pads each
  batch to its longest sample);
* ``grouped``: LLaVA's length grouping (mega-batches of 50 batches sorted by length, as
  ``--group_by_length`` / ``group_by_modality_length`` do);
* ``packed``: padding-free packing (every sample of a batch in one row, position ids restarting
  per sample): 0 by construction.

    PYTHONPATH=src python benchmarks/padding.py --records runs/demo/mgld/train.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from eeca.model.tiny import tiny_tokenizer


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=Path, help="MGLD train.json (default: the tests' MGLD-style records)")
    ap.add_argument("--placeholders", type=int, nargs="+", default=[704, 576, 0],
                    help="image placeholders per sample (704 EECA, 576 LLaVA, 0 = text only)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
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
          f"median {q[len(q) // 2]}, max {q[-1]}; batch {a.batch}")
    rng = random.Random(a.seed)
    for ph in a.placeholders:
        lengths = [t + ph for t in text]
        order = list(range(len(lengths)))
        rng.shuffle(order)
        batches = [[lengths[i] for i in order[s:s + a.batch]] for s in range(0, len(order), a.batch)]
        mega = a.batch * 50
        grouped_order = [i for s in range(0, len(order), mega)
                         for i in sorted(order[s:s + mega], key=lambda i: -lengths[i])]
        grouped = [[lengths[i] for i in grouped_order[s:s + a.batch]] for s in range(0, len(order), a.batch)]
        print(f"placeholders {ph:>3}: padding share random {padding_share(batches):.2%}, "
              f"grouped {padding_share(grouped):.2%}, packed 0.00%")


if __name__ == "__main__":
    main()
