"""EecaTrainer: loss scaling under gradient accumulation, per-term logs, lr groups, modality sampler."""

import pytest
import torch
from transformers import TrainingArguments

from eeca.model.tiny import tiny_eeca
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
from train_helpers import tiny_llava, tiny_processor, tiny_tokenizer, write_llava_json


def make_model(kind, proc, vocab):
    if kind == "llava":
        return tiny_llava(proc, seed=0)
    return tiny_eeca(seed=0, hierarchical_labels=vocab)[0].train()


def setup(tmp_path, kind="llava", n=2, text_only=0):
    if kind == "llava":
        tok = tiny_tokenizer("llama3")
        set_pad_token(tok, None)
        proc = tiny_processor(tok)
    else:
        proc = tiny_eeca()[1]
    path = write_llava_json(tmp_path / "data", n=n, text_only=text_only)
    records = read_records(path)
    # different answer lengths, so a mean of per-batch means differs from the token mean
    records[0]["conversations"][1]["value"] = "it is the red tower of northvale, a stone bridge over the river."
    eeca = kind == "eeca"
    cfg = DataConfig(path=path, image_root=path.parent, entities=eeca, hierarchical_labels=eeca)
    vocab = build_label_vocabulary(records)
    ds = LlavaJsonDataset(records, proc, cfg, resolve_chat_template(proc.tokenizer, "tokenizer"), vocab, str(path))
    return ds, proc, vocab


def one_sgd_step(tmp_path, kind, ds, proc, vocab, batch, accum, name):
    model = make_model(kind, proc, vocab)
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


def reference_gradient(kind, ds, proc, vocab):
    """Naive reference: the whole step as one batch; L_LM = token mean computed by hand from logits,
    plus l2 L_HC + l3 L_EAC as the model computes them over the two images."""
    model = make_model(kind, proc, vocab)
    batch = LlavaCollator(proc.tokenizer.pad_token_id)([ds[0], ds[1]])
    labels = batch.pop("labels")
    out = model(**batch)
    logits = out.logits[:, :-1]  # [B, T-1, V]
    target = labels[:, 1:]
    keep = target != -100
    loss = torch.nn.functional.cross_entropy(logits[keep], target[keep])
    if kind == "eeca":
        assert out.loss_hc is not None and out.loss_eac is not None and out.loss_eac > 0
        loss = loss + model.config.hc_loss_weight * out.loss_hc + model.config.eac_loss_weight * out.loss_eac
    loss.backward()
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}


@pytest.mark.parametrize("kind", ["llava", "eeca"])
def test_gradient_accumulation_2x1_equals_1x2_and_the_naive_reference(tmp_path, kind):
    """llava: L_LM only (HF LLaVA); eeca: L_LM + L_HC + L_EAC, every term on."""
    ds, proc, vocab = setup(tmp_path, kind)
    assert (ds[0]["labels"] != -100).sum() != (ds[1]["labels"] != -100).sum()
    ref = reference_gradient(kind, ds, proc, vocab)
    a, log_a = one_sgd_step(tmp_path, kind, ds, proc, vocab, batch=2, accum=1, name="b2")
    b, log_b = one_sgd_step(tmp_path, kind, ds, proc, vocab, batch=1, accum=2, name="b1x2")
    for n in ref:
        torch.testing.assert_close(a[n], ref[n], atol=1e-6, rtol=1e-4, msg=f"batch 2: {n}")
        torch.testing.assert_close(b[n], ref[n], atol=1e-6, rtol=1e-4, msg=f"accum 2: {n}")
    terms = ["loss_lm"] + (["loss_hc", "loss_eac"] if kind == "eeca" else [])
    for term in terms:
        assert log_a[0][term] == pytest.approx(log_b[0][term], rel=1e-5)
    assert log_a[0]["loss"] == pytest.approx(sum(log_a[0][t] for t in terms), rel=1e-4)


def test_projector_learning_rate_group(tmp_path):
    ds, proc, _ = setup(tmp_path)
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
