"""EecaTrainer: loss scaling under gradient accumulation, per-term logs, lr groups, modality sampler."""

import pytest
import torch
from train_helpers import tiny_llava, tiny_processor, tiny_tokenizer, write_llava_json
from transformers import TrainingArguments

from eeca.train.data import (
    DataConfig,
    LlavaCollator,
    LlavaJsonDataset,
    build_label_vocabulary,
    read_records,
    resolve_chat_template,
    set_pad_token,
)
from eeca.train.trainer import EecaTrainer, ModalityLengthSampler


def setup(tmp_path, n=2, text_only=0):
    tok = tiny_tokenizer("llama3")
    set_pad_token(tok, None)
    proc = tiny_processor(tok)
    path = write_llava_json(tmp_path / "data", n=n, text_only=text_only)
    records = read_records(path)
    # different answer lengths, so a mean of per-batch means differs from the token mean
    records[0]["conversations"][1]["value"] = "it is the red tower of northvale, a stone bridge over the river."
    cfg = DataConfig(path=path, image_root=path.parent)
    ds = LlavaJsonDataset(records, proc, cfg, resolve_chat_template(tok, "tokenizer"),
                          build_label_vocabulary(records), str(path))
    return ds, proc


def one_sgd_step(tmp_path, ds, proc, batch, accum, name):
    model = tiny_llava(proc, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(output_dir=str(tmp_path / name), per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accum, max_steps=1, optim="sgd", learning_rate=1.0,
                             lr_scheduler_type="constant", max_grad_norm=0.0, report_to="none", logging_steps=1,
                             save_strategy="no", remove_unused_columns=False, disable_tqdm=True)
    trainer = EecaTrainer(model=model, args=args, train_dataset=ds,
                          data_collator=LlavaCollator(proc.tokenizer.pad_token_id))
    trainer.train()
    update = {n: before[n] - p.detach() for n, p in model.named_parameters()}  # = lr * grad
    return update, trainer.state.log_history


def reference_gradient(ds, proc):
    """Naive reference: the whole step as one batch, L_LM = token mean computed by hand from logits."""
    model = tiny_llava(proc, seed=0)
    batch = LlavaCollator(proc.tokenizer.pad_token_id)([ds[0], ds[1]])
    labels = batch.pop("labels")
    logits = model(**batch).logits[:, :-1]  # [B, T-1, V]
    target = labels[:, 1:]
    keep = target != -100
    loss = torch.nn.functional.cross_entropy(logits[keep], target[keep])
    loss.backward()
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}


def test_gradient_accumulation_2x1_equals_1x2_and_the_token_mean(tmp_path):
    ds, proc = setup(tmp_path)
    assert (ds[0]["labels"] != -100).sum() != (ds[1]["labels"] != -100).sum()
    ref = reference_gradient(ds, proc)
    a, log_a = one_sgd_step(tmp_path, ds, proc, batch=2, accum=1, name="b2")
    b, log_b = one_sgd_step(tmp_path, ds, proc, batch=1, accum=2, name="b1x2")
    for n in ref:
        torch.testing.assert_close(a[n], ref[n], atol=1e-6, rtol=1e-4, msg=f"batch 2: {n}")
        torch.testing.assert_close(b[n], ref[n], atol=1e-6, rtol=1e-4, msg=f"accum 2: {n}")
    assert log_a[0]["loss_lm"] == pytest.approx(log_b[0]["loss_lm"], rel=1e-5)
    assert log_a[0]["loss"] == pytest.approx(log_a[0]["loss_lm"], rel=1e-5)


def test_projector_learning_rate_group(tmp_path):
    ds, proc = setup(tmp_path)
    model = tiny_llava(proc)
    args = TrainingArguments(output_dir=str(tmp_path / "o"), learning_rate=2e-5, report_to="none",
                             remove_unused_columns=False)
    trainer = EecaTrainer(model=model, args=args, train_dataset=ds, mm_learning_rate=2e-3,
                          data_collator=LlavaCollator(proc.tokenizer.pad_token_id))
    opt = trainer.create_optimizer()
    projector = {id(p) for n, p in model.named_parameters() if "multi_modal_projector" in n}
    for group in opt.param_groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= projector if group["lr"] == 2e-3 else not ids & projector
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_modality_length_sampler_never_mixes_a_group():
    lengths = [10, -5, 30, -7, 12, 40, -2, 9, -11, 25]
    sampler = ModalityLengthSampler(lengths, group=2, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))
    full = [order[k: k + 2] for k in range(0, 8, 2)]  # 6 image + 4 text samples: four full groups of 2
    for group in full:
        assert len({lengths[i] > 0 for i in group}) == 1
    sampler.set_epoch(1)
    assert list(sampler) != order
