"""The EECA Trainer: L = l1 L_LM + l2 L_HC + l3 L_EAC with each term scaled and logged by name (paper 4.2, 5.1).

How the loss is scaled (the decision about ``num_items_in_batch``):

* L_LM is a token mean. The Trainer counts the label tokens of the whole optimizer step (all
  micro-batches of the gradient-accumulation window, summed over processes) and passes that count
  to the model as ``num_items_in_batch``; the model's causal-LM loss is then
  ``sum of token losses / num_items_in_batch``. Summing the micro-batch losses, and multiplying by the
  number of processes to undo DDP's gradient averaging, gives the exact token mean of the step, so
  gradient accumulation 2 x batch 1 equals 1 x batch 2 even when samples differ in length.
* L_HC and L_EAC are means over the images of a micro-batch (paper Eqs. 4-5: 1/B sum over images).
  They are NOT normalised by the token count; each is divided by the number of accumulation steps
  (and DDP averages over processes), giving the mean over the images of the whole step when
  micro-batches have equal size.
* The total is recomposed here from the model's named parts ``loss_lm``, ``loss_hc``, ``loss_eac``
  and the weights l1, l2, l3 of its config (``lm_loss_weight``, ``hc_loss_weight``,
  ``eac_loss_weight``); the model's own ``loss`` field is not used in training, so how the model
  combines its terms cannot change the scaling. A model without these parts (plain HF LLaVA) is
  all L_LM with weight 1.
* ``loss_is_scaled_for_ga = True``: the Trainer must not divide again.

Each term's per-step value is averaged over the logging window, reduced across processes, and
logged as ``loss_lm``, ``loss_hc``, ``loss_eac`` next to the Trainer's ``loss``.

Options: a separate learning rate for the projectors and the resampler (``mm_learning_rate``), and
LLaVA's grouping by modality length (image and text-only samples in separate mega-batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Sampler
from transformers import Trainer

LOSS_TERMS = ("loss_lm", "loss_hc", "loss_eac")
MM_MODULES = ("multi_modal_projector", "resampler", "hr_projector")


def loss_weights(model) -> dict[str, float]:
    """l1, l2, l3 from the model config; a model without auxiliary losses has only L_LM (weight 1)."""
    cfg = getattr(model, "config", None)
    return {"loss_lm": float(getattr(cfg, "lm_loss_weight", 1.0)),
            "loss_hc": float(getattr(cfg, "hc_loss_weight", 0.0)),
            "loss_eac": float(getattr(cfg, "eac_loss_weight", 0.0))}


class EecaTrainer(Trainer):
    """``transformers.Trainer`` that scales L_LM / L_HC / L_EAC explicitly and logs each by name."""

    loss_is_scaled_for_ga = True

    def __init__(self, *args, mm_learning_rate: float | None = None,
                 mm_modules: Sequence[str] = MM_MODULES, group_by_modality_length: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.mm_learning_rate, self.mm_modules = mm_learning_rate, tuple(mm_modules)
        self.group_by_modality_length = group_by_modality_length
        # l1, l2, l3 are fixed for a run; read once (unwrapping the model every step costs
        # milliseconds: accelerate probes installed packages on each unwrap)
        self.loss_weights = loss_weights(self.model)
        self._term_sums: torch.Tensor | None = None
        self._term_window_start = 0

    # ---- loss -------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**inputs)
        parts = {name: getattr(outputs, name, None) for name in LOSS_TERMS}
        if parts["loss_lm"] is None:
            parts["loss_lm"] = outputs.loss
        # in evaluation there is no accumulation; the token count still spans every process
        ga = self.current_gradient_accumulation_steps if model.training else 1
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            # undo DDP's gradient averaging: the token count already covers every process
            lm_scale = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
        else:
            lm_scale = 1.0 / ga  # the model returned this micro-batch's token mean
        scales = {"loss_lm": lm_scale, "loss_hc": 1.0 / ga, "loss_eac": 1.0 / ga}
        loss = None
        for name, value in parts.items():
            if value is None:
                continue
            term = self.loss_weights[name] * value * scales[name]
            loss = term if loss is None else loss + term
            if model.training:
                self._accumulate(name, value.detach() * scales[name])
        return (loss, outputs) if return_outputs else loss

    def _accumulate(self, name: str, value: torch.Tensor) -> None:
        if self._term_sums is None:  # first micro-batch of a logging window (also right after a resume)
            self._term_sums = torch.zeros(2, len(LOSS_TERMS), device=value.device)  # [sum; seen]
            self._term_window_start = self.state.global_step
        k = LOSS_TERMS.index(name)
        self._term_sums[0, k] += value.float()
        self._term_sums[1, k] = 1.0

    # ---- logging ----------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # every process reaches the training log together (the Trainer gathers its own loss there)
        if "loss" in logs and self._term_sums is not None:
            steps = max(self.state.global_step - self._term_window_start, 1)
            gathered = self.accelerator.gather(self._term_sums[None])  # [P, 2, n_terms]
            sums, seen = gathered[:, 0].mean(0), gathered[:, 1].amax(0)
            logs.update({name: round(float(sums[k]) / steps, 6)
                         for k, name in enumerate(LOSS_TERMS) if seen[k] > 0})
            self._term_sums = None
        super().log(logs, start_time)

    # ---- resume -----------------------------------------------------------------------------------
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Full-model checkpoints are restored through ``from_pretrained``.

        ``save_pretrained`` writes LLaVA/EECA weights in the llava-hf key layout
        (``language_model.model.*``), and the Trainer's own resume loads them raw with a non-strict
        ``load_state_dict``: every weight would silently stay as initialised (transformers #43701).
        ``from_pretrained`` applies the key mapping; the strict load then proves every weight arrived.
        Adapters (PEFT) and DeepSpeed / FSDP checkpoints keep the Trainer's own paths.
        """
        model = self.model if model is None else model
        folder = Path(resume_from_checkpoint)
        full = any((folder / f).exists() for f in ("model.safetensors", "model.safetensors.index.json"))
        if hasattr(model, "peft_config") or self.is_deepspeed_enabled or self.is_fsdp_enabled or not full:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        restored = type(model).from_pretrained(folder, config=model.config, dtype=model.dtype)
        model.load_state_dict(restored.state_dict())

    # ---- optimizer --------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if self.mm_learning_rate is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[bool, bool], list] = {}
        for n, p in opt_model.named_parameters():
            if p.requires_grad:
                groups.setdefault((any(m in n for m in self.mm_modules), n in decay), []).append(p)
        param_groups = [{"params": ps, "weight_decay": self.args.weight_decay if dec else 0.0,
                         **({"lr": self.mm_learning_rate} if mm else {})}
                        for (mm, dec), ps in sorted(groups.items())]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    # ---- sampling ---------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if not self.group_by_modality_length:
            return super()._get_train_sampler(train_dataset)
        return ModalityLengthSampler(dataset.modality_lengths(),
                                     self.args.train_batch_size * self.args.world_size, seed=self.args.seed)


class ModalityLengthSampler(Sampler[int]):
    """LLaVA's modality-length grouping: mega-batches hold only image or only text-only samples.

    ``lengths`` are positive for samples with an image and negative for text-only ones. Each
    modality is shuffled (seeded per epoch), cut into mega-batches of ``group`` samples sorted by
    length, and the mega-batches are shuffled together, so a step never mixes the two modalities
    except in the one leftover mega-batch.
    """

    def __init__(self, lengths: Sequence[int], group: int, seed: int = 0):
        self.lengths, self.group, self.seed, self.epoch = list(lengths), group, seed, 0

    def __len__(self) -> int:
        return len(self.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        megabatches, leftovers = [], []
        for sign in (1, -1):
            idx = [i for i, n in enumerate(self.lengths) if (n > 0) == (sign > 0)]
            idx = [idx[k] for k in torch.randperm(len(idx), generator=g).tolist()]
            for s in range(0, len(idx), self.group):
                chunk = sorted(idx[s: s + self.group], key=lambda i: -abs(self.lengths[i]))
                (megabatches if len(chunk) == self.group else leftovers).append(chunk)
        order = torch.randperm(len(megabatches), generator=g).tolist()
        out = [i for k in order for i in megabatches[k]]
        return iter(out + [i for chunk in leftovers for i in chunk])
