"""The experiment grid of the paper's Tables 1-4 and Figure 5: which cells exist and what each means.

A grid is selection methods x data sizes x ablation steps (paper 3.3, 5.2, 5.3). Each cell is
resolved to a plain dict (its selection, size, ablation, and the training / generation switches the
ablation implies) and identified by the sha256 of that dict, so a finished cell is found again on a
rerun whatever order the grid is written in, and changing anything that affects a cell gives it a
new identity.

Ablation steps, cumulative as in Table 3 (paper 5.2):

=====================  ==============  =========  ======  =======  ===============
ablation               trains stage 3  HR branch  L_HC    L_EAC    entity prompt
=====================  ==============  =========  ======  =======  ===============
baseline               no              --         --      --       none
data                   yes             off        0       0        none
hr                     yes             on         0       0        none
hc                     yes             on         l2      0        none
hr_eac                 yes             on         0       l3       none
eac                    yes             on         l2      l3       none
entity_prompt_infer    no              --         --      --       inference only
entity_prompt_train    yes             off        0       0        train + infer
=====================  ==============  =========  ======  =======  ===============

The paper's loss symbols were lost from its text, so the order of its two loss rows is not known:
``[baseline, data, hr, hc, eac]`` adds L_HC first (the default reading), ``[baseline, data, hr,
hr_eac, eac]`` adds L_EAC first; a grid listing both runs both orders (the report shows a Table 3
for each).

A block may sweep one hyperparameter over ``values`` (App. A, Figure 7: the robustness of EECA to
the balancing coefficient, the sparsification threshold sigma and the number of HR tokens): each
of its cells is repeated once per value, tagged ``sweep: {param, value}``. ``hc_loss_weight`` /
``eac_loss_weight`` replace the grid's weight; ``eac_sigma`` and ``num_hr_latents`` are passed to
the model's config. Only cells that use the swept parameter may be swept.

``baseline`` and ``entity_prompt_infer`` evaluate the starting model (the paper's LLaVA
initialisation) without stage-3 training, so they take no selection and size 0 (Table 2).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Selection = Literal["HDS", "HSS", "LCS", "BRS"]
Ablation = Literal["baseline", "data", "hr", "hc", "hr_eac", "eac", "entity_prompt_infer", "entity_prompt_train"]

UNTRAINED = ("baseline", "entity_prompt_infer")
# Figure 7's sweeps: parameter -> the ablation steps that use it
SWEEPS = {"hc_loss_weight": ("hc", "eac"), "eac_loss_weight": ("hr_eac", "eac"), "eac_sigma": ("hr_eac", "eac"),
          "num_hr_latents": ("hr", "hc", "hr_eac", "eac")}


@dataclass(frozen=True)
class GridSpec:
    """One block of cells: every selection x size x ablation combination."""

    selections: list[Selection] = field(default_factory=lambda: ["BRS"])
    sizes: list[int] = field(default_factory=lambda: [25000])
    ablations: list[Ablation] = field(default_factory=lambda: ["data"])
    sweep: str | None = None  # one of SWEEPS: repeat every cell of the block once per value (Figure 7)
    values: list[float] = field(default_factory=list)

    def __post_init__(self):
        if any(s <= 0 for s in self.sizes):
            raise ValueError("sizes must be positive")
        if not self.ablations:
            raise ValueError("ablations must not be empty")
        if self.sweep is None:
            if self.values:
                raise ValueError("values given without sweep (the parameter they are for)")
            return
        if self.sweep not in SWEEPS:
            raise ValueError(f"sweep must be one of {', '.join(SWEEPS)}, got {self.sweep!r}")
        if not self.values:
            raise ValueError(f"sweep {self.sweep}: values must list at least one value")
        unused = [a for a in self.ablations if a not in SWEEPS[self.sweep]]
        if unused:
            raise ValueError(f"sweep {self.sweep}: ablation(s) {', '.join(unused)} do not use it "
                             f"(sweepable: {', '.join(SWEEPS[self.sweep])})")
        if self.sweep == "num_hr_latents" and any(v < 1 or v != int(v) for v in self.values):
            raise ValueError(f"sweep num_hr_latents: values must be whole numbers >= 1, got {self.values}")
        if self.sweep == "eac_sigma" and any(not 0 <= v < 1 for v in self.values):
            raise ValueError(f"sweep eac_sigma: values must be in [0, 1), got {self.values}")
        if self.sweep.endswith("_loss_weight") and any(v < 0 for v in self.values):
            raise ValueError(f"sweep {self.sweep}: values must be >= 0, got {self.values}")


def train_switches(ablation: str, hc_weight: float, eac_weight: float) -> dict:
    """The model and data switches an ablation step implies (the table in the module docstring)."""
    hr = ablation in ("hr", "hc", "hr_eac", "eac")
    return {
        "use_hr_branch": hr,
        "hc_loss_weight": hc_weight if ablation in ("hc", "eac") else 0.0,
        "eac_loss_weight": eac_weight if ablation in ("hr_eac", "eac") else 0.0,
        "entity_prompt": "train_and_infer" if ablation == "entity_prompt_train" else "none",
    }


def expand(blocks: list[GridSpec], table: str, hc_weight: float, eac_weight: float, seed: int) -> list[dict]:
    """All cells of ``blocks`` as resolved dicts, deduplicated, in a stable order."""
    cells: dict[str, dict] = {}
    for block in blocks:
        for ablation in block.ablations:
            if ablation in UNTRAINED:
                combos = [("none", 0)]
            else:
                combos = [(s, n) for s in block.selections for n in block.sizes]
            for (selection, size), value in ((c, v) for c in combos for v in (block.values or [None])):
                cell = {
                    "table": table,
                    "selection": selection,
                    "size": size,
                    "ablation": ablation,
                    "seed": seed,
                    **train_switches(ablation, hc_weight, eac_weight),
                    "entity_prompt_at_inference": ablation in ("entity_prompt_infer", "entity_prompt_train"),
                }
                if block.sweep is not None:
                    value = int(value) if block.sweep == "num_hr_latents" else float(value)
                    cell["sweep"] = {"param": block.sweep, "value": value}
                    if block.sweep in cell:  # a loss weight: the swept value replaces the grid's
                        cell[block.sweep] = value
                cells.setdefault(cell_id(cell), cell)
    return list(cells.values())


def model_overrides(cell: dict) -> dict:
    """The model-config values a cell sets beyond its switches: a swept sigma or number of HR tokens."""
    sweep = cell.get("sweep")
    return {sweep["param"]: sweep["value"]} if sweep and sweep["param"] in ("eac_sigma", "num_hr_latents") else {}


def cell_id(cell: dict) -> str:
    """A readable, content-addressed id: ``<selection>-<size>-<ablation>[-<param>=<value>]-<hash8>``."""
    digest = hashlib.sha256(json.dumps(cell, sort_keys=True).encode()).hexdigest()[:8]
    sweep = cell.get("sweep")
    swept = f"-{sweep['param']}={sweep['value']:g}" if sweep else ""
    return f"{cell['selection']}-{cell['size']}-{cell['ablation']}{swept}-{digest}"


def cell_dir(run_dir: Path, cell: dict) -> Path:
    return Path(run_dir) / "cells" / cell_id(cell)
