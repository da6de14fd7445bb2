"""The three training stages as one recipe driven by a YAML ``TrainConfig`` (paper 5.1, App. A Table 5).

* Stage 1 (feature alignment): projectors + resampler trained, vision tower and LLM frozen.
* Stage 2 (instruction tuning): the LLM trained too.
* Stage 3 (EECA): an MGLD subset with L_LM + L_HC + L_EAC.

Which modules train is data, not code: ``trainable`` names groups of parameters (``vision_tower``,
``projector``, ``resampler``, ``hc_head``, ``eac_temperature``, ``llm``) and ``freeze`` lists extra
name prefixes to freeze. Every parameter must belong to exactly one group, so a new module can never
be silently frozen or trained. With ``lora.enabled`` the LLM gets LoRA adapters (PEFT) and the other
trainable groups are trained fully and saved with the adapter (``modules_to_save``).

The run writes the resolved config (``train_config.yaml``) into the output folder and into every
checkpoint, resumes from the latest complete checkpoint after a kill, and ends with the model (or
adapter), the processor and ``trainer_state.json`` (the loss curves) in ``output_dir``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eeca.config import FieldError, InputPath, check_inputs, config_path, dump_config, load_config
from eeca.io import atomic_write, check_checkpoint, readable_like_umask, run_lock
from eeca.train.data import (
    DataConfig,
    LlavaCollator,
    LlavaJsonDataset,
    build_label_vocabulary,
    read_records,
    resolve_chat_template,
    select_records,
    set_pad_token,
)

log = logging.getLogger(__name__)

# named parameter groups -> parameter-name prefixes (HF LLaVA layout, plus EECA's HR modules and heads)
GROUPS: dict[str, tuple[str, ...]] = {
    "vision_tower": ("model.vision_tower.",),
    "projector": ("model.multi_modal_projector.", "model.hr_projector."),
    "resampler": ("model.hr_resampler.",),
    "hc_head": ("hc_head.",),
    "eac_temperature": ("eac_logit_scale",),
    "llm": ("model.language_model.", "lm_head."),
}
LORA_LLM_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CONFIG_NAME = "train_config.yaml"


@dataclass(frozen=True)
class ModelInit:
    """Where the model comes from: an existing checkpoint (eeca or llava-hf), or a CLIP + LLM pair.

    ``architecture``: ``eeca`` (EECA model; HR branch etc. from ``config_overrides``) or ``llava``
    (plain HF LLaVA, the baseline without EECA's extras).
    """

    # a folder or a hub id; checked by io.check_checkpoint (models are not plain input files)
    checkpoint: Path | None = None
    vision_path: Path | None = None
    llm_path: Path | None = None
    architecture: Literal["eeca", "llava"] = "eeca"
    config_overrides: dict[str, Any] = field(default_factory=dict)
    # a checkpoint whose HR resampler and HR projector start this model's (a stage-1 pass with the HR
    # branch on pre-aligns them; docs/train.md); without it a model that turns the HR branch on starts it new
    hr_init: Path | None = None

    def __post_init__(self):
        if (self.checkpoint is None) == (self.vision_path is None or self.llm_path is None):
            raise ValueError("give either model.checkpoint, or model.vision_path and model.llm_path")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the LLM's attention and MLP projections (LLaVA-1.5's LoRA recipe: r 128, alpha 256)."""

    enabled: bool = False
    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LORA_LLM_MODULES))


@dataclass(frozen=True)
class OptimSettings:
    """The subset of ``transformers.TrainingArguments`` a recipe sets (Table 5 defaults)."""

    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-5
    mm_learning_rate: float | None = None
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    optim: Literal["adamw_torch", "adamw_torch_fused", "sgd"] = "adamw_torch"
    max_grad_norm: float = 1.0
    num_train_epochs: float = 1.0
    max_steps: int = -1
    bf16: bool = False
    deepspeed: InputPath | None = None
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int | None = 1
    eval_steps: int | None = None
    seed: int = 42
    dataloader_num_workers: int = 0
    group_by_modality_length: bool = False
    report_to: str = "none"
    use_cpu: bool = False  # several CPU processes (gloo) under torchrun / accelerate launch

    def __post_init__(self):
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise FieldError("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "mm_learning_rate", "num_train_epochs"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise FieldError(name, f"must be a finite number > 0, got {value}")
        for name in ("max_grad_norm", "weight_decay"):  # max_grad_norm 0 turns clipping off
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise FieldError(name, f"must be a finite number >= 0, got {getattr(self, name)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise FieldError("max_steps", f"must be -1 (use num_train_epochs) or >= 1, got {self.max_steps}")
        for name in ("eval_steps", "save_total_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1 or null, got {getattr(self, name)}")
        if self.dataloader_num_workers < 0:
            raise FieldError("dataloader_num_workers", f"must be >= 0, got {self.dataloader_num_workers}")


@dataclass(frozen=True)
class TrainConfig:
    """One training stage: model init, data, trainable groups, optimisation, LoRA."""

    stage: Literal[1, 2, 3]
    output_dir: Path
    model: ModelInit
    data: DataConfig
    trainable: list[str]
    freeze: list[str] = field(default_factory=list)
    optim: OptimSettings = field(default_factory=OptimSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    resume: bool = True

    def __post_init__(self):
        unknown = sorted(set(self.trainable) - set(GROUPS))
        if unknown or not self.trainable:
            raise ValueError(f"trainable must name groups from {sorted(GROUPS)}, got {self.trainable}")
        if self.lora.enabled and "llm" not in self.trainable:
            raise ValueError("lora.enabled trains the LLM through adapters: add 'llm' to trainable")
        if self.lora.enabled and self.model.checkpoint is None:
            raise ValueError("lora.enabled needs model.checkpoint (the base the adapter is merged into)")


# ---- model --------------------------------------------------------------------------------------
def model_class(architecture: str):
    if architecture == "llava":
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration
    from eeca.model import EecaForConditionalGeneration

    return EecaForConditionalGeneration


# the modules EECA adds to LLaVA (paper section 4.2): new, by design, when EECA starts from a LLaVA checkpoint
EECA_NEW_MODULES = ("model.hr_resampler.", "model.hr_projector.", "eac_logit_scale.", "hc_head.")


def load_model_and_processor(init: ModelInit, extra: dict[str, Any]):
    """The model to train and its processor; ``extra`` adds config values (e.g. the label vocabulary)."""
    from transformers import AutoProcessor

    from eeca.logs import from_pretrained

    overrides = {**init.config_overrides, **extra}
    if init.checkpoint is not None:
        from eeca.model.processing_eeca import processor_for

        # the modules EECA adds are new by design when the base checkpoint lacks them (LLaVA, or an EECA
        # base trained with the HR branch off); anything else missing or unexpected is reported
        expected_new = EECA_NEW_MODULES if init.architecture == "eeca" else ()
        model = from_pretrained(model_class(init.architecture), init.checkpoint, expected_new, **overrides)
        processor = processor_for(model.config, AutoProcessor.from_pretrained(init.checkpoint))
    else:
        from eeca.model.build import build_eeca

        model, processor = build_eeca(init.vision_path, init.llm_path, overrides)
    if init.hr_init is not None and getattr(model.config, "use_hr_branch", False):
        load_hr_branch(model, Path(init.hr_init))
    return model, processor


HR_PREFIXES = ("model.hr_resampler.", "model.hr_projector.")


def load_hr_branch(model, folder: Path) -> int:
    """Copy the HR resampler and HR projector of the checkpoint in ``folder`` into ``model``; the number
    of tensors copied. Its HR branch must have this model's geometry, every tensor of it."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"model.hr_init: no *.safetensors weights in {folder}")
    state = {}
    for path in files:
        with safe_open(path, "pt") as f:
            state.update({k: f.get_tensor(k) for k in f.keys() if k.startswith(HR_PREFIXES)})
    own = {k: v for k, v in model.state_dict().items() if k.startswith(HR_PREFIXES)}
    bad = sorted(k for k in own if k not in state or state[k].shape != own[k].shape)
    if bad or set(state) - set(own):
        raise ValueError(f"model.hr_init: {folder} has no HR branch of this model's geometry "
                         f"({len(bad)} of its {len(own)} HR tensors missing or shaped otherwise, e.g. "
                         f"{(bad or sorted(set(state) - set(own)))[0]}); pre-align with the same hr_grid, "
                         f"num_hr_latents and resampler_*")
    model.load_state_dict(state, strict=False)
    return len(state)


def checkpoint_label_vocabulary(init: ModelInit) -> list[str]:
    """The L_HC vocabulary an existing checkpoint already carries (empty when none)."""
    if init.checkpoint is None:
        return []
    config = json.loads((Path(init.checkpoint) / "config.json").read_text(encoding="utf-8"))
    return list(config.get("hierarchical_labels") or [])


def parameter_groups(model) -> dict[str, list[str]]:
    """Each group's parameter names; an error names any parameter in no group or in two."""
    out: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name, _ in model.named_parameters():
        hits = [g for g, prefixes in GROUPS.items() if name.startswith(prefixes)]
        if len(hits) != 1:
            raise ValueError(f"parameter {name!r} belongs to {len(hits)} groups of {sorted(GROUPS)}; "
                             "extend eeca.train.recipes.GROUPS for this model")
        out[hits[0]].append(name)
    return out


def set_trainable(model, trainable: list[str], freeze: list[str]) -> dict[str, int]:
    """Freeze everything but the ``trainable`` groups, then the ``freeze`` prefixes; counts per group."""
    groups = parameter_groups(model)
    train_names = {n for g in trainable for n in groups[g]}
    counts = dict.fromkeys(GROUPS, 0)
    owner = {n: g for g, names in groups.items() for n in names}
    for name, p in model.named_parameters():
        p.requires_grad_(name in train_names and not name.startswith(tuple(freeze)))
        if p.requires_grad:
            counts[owner[name]] += p.numel()
    return counts


def apply_lora(model, cfg: TrainConfig):
    """Wrap the LLM with LoRA; the other trainable groups' modules are trained fully and saved with it."""
    from peft import LoraConfig, get_peft_model

    modules_to_save = sorted({prefix.split(".")[-2] for g in cfg.trainable if g not in ("llm", "eac_temperature")
                              for prefix in GROUPS[g]})
    modules_to_save = [m for m in modules_to_save if any(n.endswith(f".{m}") or n == m
                                                         for n, _ in model.named_modules())]
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=rf"model\.language_model\..*\.({'|'.join(map(re.escape, cfg.lora.target_modules))})",
                      modules_to_save=modules_to_save or None, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    if "eac_temperature" in cfg.trainable:
        # a bare parameter, not a module: PEFT freezes it; it only scales L_EAC, so it is trained
        # here and not needed by the merged model for generation
        for name, p in model.named_parameters():
            if name.endswith("eac_logit_scale"):
                p.requires_grad_(True)
    return model


# ---- checkpoints --------------------------------------------------------------------------------
def latest_checkpoint(output_dir: Path) -> Path | None:
    """The highest-step ``checkpoint-N`` that was completely written.

    ``trainer_state.json`` is written last, but not atomically: a kill during its write leaves it
    empty or cut, so a checkpoint counts only when that file parses as JSON.
    """
    found = []
    for d in Path(output_dir).glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", d.name)
        if m and _complete_state(d / "trainer_state.json"):
            found.append((int(m.group(1)), d))
    return max(found)[1] if found else None


def _complete_state(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def save_adapter_base_config(model, folder: Path) -> None:
    """Beside a LoRA adapter, the base model's config (label vocabulary, HR settings) for merging."""
    if model is not None and hasattr(model, "peft_config"):
        model.get_base_model().config.save_pretrained(folder)


def finish_checkpoint(folder: Path, cfg: TrainConfig, model, command: str | None, log_history, summary=None) -> None:
    """What every saved checkpoint carries besides the weights: the adapter's base config (LoRA), the
    model card, and file modes that follow the umask (the weights come out 0600 otherwise)."""
    from eeca.train.card import write_model_card

    save_adapter_base_config(model, folder)
    base = model.get_base_model() if hasattr(model, "peft_config") else model
    write_model_card(folder, cfg, base.config, command=command, log_history=log_history, summary=summary)
    readable_like_umask(folder)


def _config_callback(text: str, cfg: TrainConfig, command: str | None):
    from transformers import TrainerCallback

    class SaveResolvedConfig(TrainerCallback):
        """Writes the resolved config and the model card into each checkpoint, so any checkpoint says
        how it was made."""

        def on_save(self, args, state, control, model=None, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                atomic_write(folder / CONFIG_NAME, text)
                finish_checkpoint(folder, cfg, model, command, state.log_history)

    return SaveResolvedConfig()


# ---- the recipe ---------------------------------------------------------------------------------
def training_arguments(cfg: TrainConfig, has_eval: bool):
    from transformers import TrainingArguments

    o = cfg.optim
    return TrainingArguments(
        output_dir=str(cfg.output_dir), per_device_train_batch_size=o.per_device_train_batch_size,
        per_device_eval_batch_size=o.per_device_eval_batch_size,
        gradient_accumulation_steps=o.gradient_accumulation_steps, learning_rate=o.learning_rate,
        lr_scheduler_type=o.lr_scheduler_type, warmup_steps=o.warmup_ratio, weight_decay=o.weight_decay,
        optim=o.optim, max_grad_norm=o.max_grad_norm, num_train_epochs=o.num_train_epochs, max_steps=o.max_steps,
        bf16=o.bf16, deepspeed=str(config_path(o.deepspeed)) if o.deepspeed else None,
        activation_checkpointing=o.gradient_checkpointing, logging_steps=o.logging_steps, save_strategy="steps",
        save_steps=o.save_steps, save_total_limit=o.save_total_limit,
        eval_strategy="steps" if has_eval and o.eval_steps else "no", eval_steps=o.eval_steps, seed=o.seed,
        data_seed=o.seed, dataloader_num_workers=o.dataloader_num_workers, report_to=o.report_to,
        # pinned memory only helps copies to an accelerator (without one torch warns on every loader)
        dataloader_pin_memory=not o.use_cpu and _accelerator_available(),
        remove_unused_columns=False,  # pixel_values_hr, entity_ids, hc_labels are not in every signature
        # only the LM labels decide whether a batch has a loss (EECA's forward also takes hc_labels,
        # which stages 1-2 do not have: the Trainer would otherwise skip their eval loss)
        label_names=["labels"],
        save_only_model=False, disable_tqdm=False, use_cpu=o.use_cpu)


def _accelerator_available() -> bool:
    import torch

    return torch.accelerator.is_available()


def check_models(model: ModelInit, source: str | None = None) -> None:
    """A missing model is one line, before anything is written (a folder or a cached hub id); the
    line names the recipe file ``source`` and the field when given."""
    for name in ("checkpoint", "vision_path", "llm_path"):
        if getattr(model, name) is not None:
            field = f"{source}: field 'model.{name}'" if source else f"model.{name}"
            check_checkpoint(getattr(model, name), field, local_files_only=True)


def run(cfg: TrainConfig, callbacks: Sequence[Any] = (), command: str | None = None) -> dict[str, Any]:
    """Train one stage; returns a summary (steps, first/last train and eval losses, wall time).

    ``callbacks`` are extra ``transformers.TrainerCallback`` objects (progress hooks, timers);
    ``command`` is the command line quoted in each checkpoint's model card (None: the Python API).
    """
    from transformers import set_seed

    from eeca.train.trainer import EecaTrainer

    t0 = time.time()
    check_models(cfg.model)
    records = read_records(cfg.data.path)
    if cfg.data.selection is not None:
        records = select_records(records, cfg.data.selection, str(cfg.data.path))
    extra: dict[str, Any] = {}
    if cfg.data.hierarchical_labels:
        vocab = checkpoint_label_vocabulary(cfg.model) or build_label_vocabulary(records)
        extra.update(hierarchical_labels=vocab)  # the L_HC head's size is the vocabulary's length
    set_seed(cfg.optim.seed)  # newly initialised modules (e.g. the L_HC head) start the same in every run
    model, processor = load_model_and_processor(cfg.model, extra)
    tokenizer = processor.tokenizer
    if set_pad_token(tokenizer, cfg.data.pad_token):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    template = resolve_chat_template(tokenizer, cfg.data.chat_template)
    tokenizer.chat_template = template  # saved with the processor, used again at inference
    labels = extra.get("hierarchical_labels", [])
    train_ds = LlavaJsonDataset(records, processor, cfg.data, template, labels, str(cfg.data.path))
    eval_ds = None
    if cfg.data.eval_path is not None:
        eval_ds = LlavaJsonDataset(read_records(cfg.data.eval_path), processor, cfg.data, template, labels,
                                   str(cfg.data.eval_path))
    counts = set_trainable(model, cfg.trainable, cfg.freeze)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg)
    text = dump_config(cfg)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(cfg.output_dir) / CONFIG_NAME, text)
    trainer = EecaTrainer(
        model=model, args=training_arguments(cfg, eval_ds is not None), train_dataset=train_ds,
        eval_dataset=eval_ds, data_collator=LlavaCollator(tokenizer.pad_token_id), processing_class=processor,
        callbacks=[_config_callback(text, cfg, command), *callbacks], mm_learning_rate=cfg.optim.mm_learning_rate,
        group_by_modality_length=cfg.optim.group_by_modality_length)
    resume = latest_checkpoint(cfg.output_dir) if cfg.resume else None
    eval_start = trainer.evaluate()["eval_loss"] if eval_ds is not None and resume is None else None
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    eval_end = trainer.evaluate()["eval_loss"] if eval_ds is not None else None
    trainer.save_model(str(cfg.output_dir))
    trainer.save_state()
    # the whole run's curve: a resumed Trainer carries the log history of the checkpoint it resumed
    # from, whereas result.training_loss averages only the steps run since the resume
    history = json.loads((Path(cfg.output_dir) / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    train_losses = [e["loss"] for e in history if "loss" in e]
    summary = {"stage": cfg.stage, "steps": trainer.state.global_step, "resumed_from": str(resume) if resume else None,
               "train_loss_first": train_losses[0] if train_losses else None,
               "train_loss_last": train_losses[-1] if train_losses else None,
               "train_loss_mean": mean_logged_loss(history) if train_losses else result.training_loss,
               "eval_loss_start": eval_start, "eval_loss_end": eval_end,
               "trainable_parameters": counts, "wall_s": round(time.time() - t0, 1)}
    if trainer.is_world_process_zero():
        atomic_write(Path(cfg.output_dir) / "train_summary.json", json.dumps(summary, indent=2))
        finish_checkpoint(Path(cfg.output_dir), cfg, trainer.model, command, trainer.state.log_history, summary)
    return summary


def mean_logged_loss(log_history: list[dict]) -> float:
    """The mean training loss per step over every logged step of a run, resumed parts included.

    Each logged ``loss`` is the mean over the steps since the previous log entry, so entries are
    weighted by the steps they cover (the last window of a run can be shorter than logging_steps).
    """
    total = covered = 0.0
    previous = 0
    for e in sorted((e for e in log_history if "loss" in e), key=lambda e: e["step"]):
        total += e["loss"] * (e["step"] - previous)
        covered += e["step"] - previous
        previous = e["step"]
    return total / covered


def train_command(config: str, overrides: list[str]) -> None:
    """Train one stage (1 projectors, 2 instruction tuning, 3 EECA on MGLD) from a YAML recipe.

    Writes the model (or LoRA adapter), its processor, trainer_state.json (loss curves),
    train_config.yaml (the resolved config) and train_summary.json into output_dir; rerunning
    resumes from the latest complete checkpoint there.

    Args:
        config: recipe YAML, e.g. configs/synth/stage3.yaml or configs/paper/stage3.yaml
        overrides: field=value settings applied on top, e.g. optim.max_steps=10 output_dir=runs/x
    """
    from accelerate import PartialState

    cfg = load_config(TrainConfig, config, overrides)
    check_inputs(cfg, config)
    check_models(cfg.model, config)
    with run_lock(cfg.output_dir, "train"):
        s = run(cfg, command=shlex.join(["eeca", "train", config, *overrides]))
    if not PartialState().is_main_process:
        return
    start = "n/a (resumed)" if s["eval_loss_start"] is None else f"{s['eval_loss_start']:.4f}"
    evals = f", eval loss {start} -> {s['eval_loss_end']:.4f}" if s["eval_loss_end"] is not None else ""
    print(f"trained stage {cfg.stage}: {s['steps']} steps, train loss {s['train_loss_first']} -> "
          f"{s['train_loss_last']}{evals}, {s['wall_s']} s -> {cfg.output_dir}")

