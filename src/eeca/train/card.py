"""The model card (README.md) written beside every checkpoint that ``eeca train`` or ``eeca merge-lora`` saves.

It says how the weights were made, from the resolved recipe (paper 5.1, App. A Table 5): the base
checkpoints, the training data and how it was selected (paper 3.1: a ``selection.parquet`` beside the
data names the method, size and seed), the stage and trainable groups, the loss weights l1, l2, l3 of
L = l1 L_LM + l2 L_HC + l3 L_EAC (paper 4.2) with the last logged value of each term, the metrics
known when it was written, the command that made it, and how to load it with and without eeca.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eeca.io import atomic_write, read_parquet

CARD_NAME = "README.md"


def _selection(data_path: Path) -> str:
    manifest = Path(data_path).parent / "selection.parquet"
    if not manifest.exists():
        return "all records of the file (no selection.parquet beside it)"
    table = read_parquet(manifest, columns=["method", "size", "seed"])
    if table.num_rows == 0:
        return f"an empty selection ({manifest})"
    row = table.slice(0, 1).to_pylist()[0]
    return f"{row['method']}, {table.num_rows} of size {row['size']}, seed {row['seed']} ({manifest})"


def _records(path: Path | None) -> str:
    if path is None:
        return "none"
    try:
        from eeca.train.data import read_records

        return f"`{path}` ({len(read_records(path))} records)"
    except (OSError, ValueError):
        return f"`{path}`"


def _last_logged(log_history: list[dict], key: str) -> float | None:
    values = [e[key] for e in log_history if key in e]
    return values[-1] if values else None


def _fmt(value: Any) -> str:
    return "unknown" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def model_card(cfg, model_config, *, command: str | None, log_history: list[dict] = (),
               summary: dict | None = None, merged_from: Path | None = None) -> str:
    """The README.md text for a checkpoint trained with ``cfg`` (a ``TrainConfig``).

    Args:
        cfg: the resolved recipe.
        model_config: the saved model's config (its loss weights and HR settings are read from it).
        command: the command line that made the checkpoint; None = the Python API.
        log_history: the Trainer's log entries so far (the last ``loss_lm``/``loss_hc``/``loss_eac`` and
            ``eval_loss`` are reported).
        summary: ``train_summary.json`` of a finished run (steps, first/last losses, wall time).
        merged_from: the LoRA adapter folder this merged model came from.
    """
    m = cfg.model
    base = (f"`{m.checkpoint}` ({m.architecture})" if m.checkpoint is not None
            else f"vision tower `{m.vision_path}`, LLM `{m.llm_path}` ({m.architecture}, projectors and heads new)")
    weights = {name: getattr(model_config, f"{name}_loss_weight", 1.0 if name == "lm" else 0.0)
               for name in ("lm", "hc", "eac")}
    o = cfg.optim
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags: [eeca, llava, landmark-recognition]",
        "---",
        f"# {'EECA' if getattr(model_config, 'model_type', '') == 'eeca' else 'LLaVA'} stage-{cfg.stage} checkpoint",
        "",
        "Trained with eeca, the toolkit of \"Beyond Sight: Towards Cognitive Alignment in LVLM via Enriched "
        "Visual Knowledge\" (Entity-Enhanced Cognitive Alignment).",
        "",
        "## Base checkpoints",
        f"- {base}",
    ]
    if merged_from is not None:
        lines.append(f"- LoRA adapter `{merged_from}` merged into it")
    lines += [
        "",
        "## Data and selection",
        f"- train: {_records(cfg.data.path)}; images under `{cfg.data.image_root}`",
        f"- selection: {_selection(cfg.data.path)}",
        f"- eval: {_records(cfg.data.eval_path)}",
        f"- entities (L_EAC inputs): {cfg.data.entities}; hierarchical labels (L_HC): {cfg.data.hierarchical_labels}; "
        f"entity prompt: {cfg.data.entity_prompt}",
        "",
        "## Recipe",
        f"- stage {cfg.stage}; trained groups: {', '.join(cfg.trainable)}"
        + (f"; frozen prefixes: {', '.join(cfg.freeze)}" if cfg.freeze else ""),
        f"- LoRA: r {cfg.lora.r}, alpha {cfg.lora.alpha} on {', '.join(cfg.lora.target_modules)}" if cfg.lora.enabled
        else "- LoRA: off (full training of the trained groups)",
        f"- optimiser {o.optim}, lr {o.learning_rate}" + (f" (projectors/resampler {o.mm_learning_rate})"
                                                          if o.mm_learning_rate else "")
        + f", {o.lr_scheduler_type} schedule, warmup {o.warmup_ratio}, batch {o.per_device_train_batch_size} x "
        f"accumulation {o.gradient_accumulation_steps}, epochs {o.num_train_epochs}, max steps {o.max_steps}, "
        f"seed {o.seed}, bf16 {o.bf16}",
        f"- HR branch: {getattr(model_config, 'use_hr_branch', False)}"
        + (f" (grid {model_config.hr_grid}, {model_config.num_hr_latents} latents)"
           if getattr(model_config, "use_hr_branch", False) else ""),
        "- the full resolved recipe: `train_config.yaml` beside this file",
        "",
        "## Losses and weights",
        "| term | weight | last logged value |",
        "| --- | --- | --- |",
    ]
    for name in ("lm", "hc", "eac"):
        lines.append(f"| L_{name.upper()} | {weights[name]} | {_fmt(_last_logged(list(log_history), f'loss_{name}'))} |")
    s = summary or {}
    lines += [
        "",
        "## Metrics",
        f"- steps: {_fmt(s.get('steps', _last_logged(list(log_history), 'step')))}",
        f"- train loss: {_fmt(s.get('train_loss_first'))} -> {_fmt(s.get('train_loss_last', _last_logged(list(log_history), 'loss')))}",
        f"- eval loss: {_fmt(s.get('eval_loss_start'))} -> {_fmt(s.get('eval_loss_end', _last_logged(list(log_history), 'eval_loss')))}",
        "- MGLD accuracy, ROUGE-L and degenerate answers: not measured here (`eeca generate` + `eeca judge` + "
        "`eeca metrics`)",
        "",
        "## How it was made",
        "```",
        command or "eeca.train.recipes.run(cfg)  # the Python API; cfg is train_config.yaml",
        "```",
        "",
        "## Loading",
        "With eeca installed, `import eeca.model` registers the classes. Without it:",
        "```python",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)",
        "processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)",
        "```",
        "(configuration_eeca.py, modeling_eeca.py, losses.py and processing_eeca.py beside the weights "
        "hold the code.)",
        "",
    ]
    return "\n".join(lines)


def write_model_card(folder: str | Path, cfg, model_config, **kwargs) -> Path:
    """Write ``model_card(...)`` to ``folder/README.md``; returns its path."""
    path = Path(folder) / CARD_NAME
    atomic_write(path, model_card(cfg, model_config, **kwargs))
    return path


def read_summary(folder: Path) -> dict | None:
    """``train_summary.json`` of a finished ``eeca train`` run, or None."""
    path = Path(folder) / "train_summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
