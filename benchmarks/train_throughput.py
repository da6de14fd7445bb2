"""Stage-3 training throughput: `eeca train` (EecaTrainer, HR branch off) vs a plain HF Trainer on HF LLaVA.

Both train the same tiny weights on the same encoded samples with the same TrainingArguments values;
the difference is our recipe (EecaTrainer's explicit loss scaling and per-term logging, the EECA
class with its extra inputs) against `transformers.Trainer` + `LlavaForConditionalGeneration`.
Prints samples per second of each training loop (from the Trainer's train-begin to train-end
events, so loading and saving are not counted; after one warm-up run of each, ``--repeats`` paired
runs in alternating order; torch limited to one thread) and the median paired ratio; the goal is
>= 0.95. On a CPU the second is CPU time rather than wall time, because on a shared machine other
processes' load dominates wall time; on a GPU it is wall time, in bf16.

    python benchmarks/train_throughput.py [--samples 64] [--repeats 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration, Trainer, TrainerCallback, TrainingArguments

from eeca.config import from_dict
from eeca.model.tiny import tiny_eeca
from eeca.train.data import DataConfig, LlavaCollator, LlavaJsonDataset, read_records, resolve_chat_template
from eeca.train.recipes import TrainConfig, run

OPTIM = {"bf16": torch.cuda.is_available(), "per_device_train_batch_size": 8, "learning_rate": 1e-4, "logging_steps": 1, "save_steps": 10_000,
         "seed": 0, "warmup_ratio": 0.03, "lr_scheduler_type": "cosine", "num_train_epochs": 1}


def write_data(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    records = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "img" / f"{i}.jpg")
        records.append({"id": str(i), "image": f"img/{i}.jpg", "hierarchical_label": "tower",
                        "entities": ["red brick facade"],
                        "conversations": [{"from": "human", "value": "<image>\nwhat is this landmark ?"},
                                          {"from": "gpt", "value": "it is the red tower of the old town ." * (1 + i % 3)}]})
    (root / "data.json").write_text(json.dumps(records))
    return root / "data.json"


class LoopTimer(TrainerCallback):
    """Seconds between the Trainer's train-begin and train-end events: CPU time of this process on a
    CPU (robust to other processes' load), wall time after a device sync on a GPU."""

    def now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self.now()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = self.now() - self.start


def eeca_train(root: Path, ckpt: Path, data: Path, k: int) -> float:
    out = root / f"eeca{k}"
    cfg = from_dict(TrainConfig, {
        "stage": 3, "output_dir": str(out), "model": {"checkpoint": str(ckpt), "architecture": "eeca"},
        "data": {"path": str(data), "image_root": str(data.parent), "max_length": 256},
        "trainable": ["projector", "llm"], "optim": OPTIM, "resume": False})
    timer = LoopTimer()
    run(cfg, callbacks=[timer])
    return timer.seconds


def plain_trainer(root: Path, ckpt: Path, data: Path, k: int) -> float:
    model = LlavaForConditionalGeneration.from_pretrained(ckpt)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("model.multi_modal_projector.", "model.language_model.", "lm_head.")))
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(ckpt)
    ds = LlavaJsonDataset(read_records(data), processor, DataConfig(path=data, image_root=data.parent, max_length=256),
                          resolve_chat_template(processor.tokenizer, "tokenizer"))
    args = TrainingArguments(output_dir=str(root / f"plain{k}"), report_to="none", remove_unused_columns=False,
                             save_strategy="steps", save_steps=OPTIM["save_steps"], optim="adamw_torch", weight_decay=0.0, bf16=OPTIM["bf16"],
                             warmup_steps=OPTIM["warmup_ratio"], data_seed=0,
                             **{key: OPTIM[key] for key in ("per_device_train_batch_size", "learning_rate",
                                                           "logging_steps", "seed", "lr_scheduler_type",
                                                           "num_train_epochs")})
    timer = LoopTimer()
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[timer],
                      data_collator=LlavaCollator(processor.tokenizer.pad_token_id))
    trainer.train()
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=4)
    a = parser.parse_args()
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, processor = tiny_eeca(image_size=64, use_hr_branch=False, eac_loss_weight=0.0, hc_loss_weight=0.0)
        model.save_pretrained(root / "ckpt")
        processor.save_pretrained(root / "ckpt")
        data = write_data(root / "data", a.samples)
        plain_trainer(root, root / "ckpt", data, -1)  # warm-up: first-call costs hit neither measurement
        eeca_train(root, root / "ckpt", data, -1)
        ours, base = [], []
        for k in range(a.repeats):  # alternating order (ABBA), so drifting load hits both alike
            first, second = (plain_trainer, eeca_train) if k % 2 == 0 else (eeca_train, plain_trainer)
            results = {fn: a.samples / fn(root, root / "ckpt", data, k) for fn in (first, second)}
            base.append(results[plain_trainer])
            ours.append(results[eeca_train])
    unit = f"s on {torch.cuda.get_device_name()} (bf16)" if torch.cuda.is_available() else "CPU-s"
    ratios = sorted(o / b for o, b in zip(ours, base, strict=True))
    print(f"stage-3 training, {a.samples} samples, {a.repeats} paired runs: plain HF Trainer + Llava "
          f"{np.median(base):.2f} samples/{unit}, eeca train (HR off) {np.median(ours):.2f} samples/{unit} (medians); "
          f"median paired ratio {np.median(ratios):.3f} (goal >= 0.95); pairs: "
          + ", ".join(f"{o:.2f}/{b:.2f}" for o, b in zip(ours, base, strict=True)))

if __name__ == "__main__":
    main()
