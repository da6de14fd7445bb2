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


@dataclass(frozen=True)
class GridSpec:
    """One block of cells: every selection x size x ablation combination."""

    selections: list[Selection] = field(default_factory=lambda: ["BRS"])
    sizes: list[int] = field(default_factory=lambda: [25000])
    ablations: list[Ablation] = field(default_factory=lambda: ["data"])

    def __post_init__(self):
        if any(s <= 0 for s in self.sizes):
            raise ValueError("sizes must be positive")
        if not self.ablations:
            raise ValueError("ablations must not be empty")


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
            for selection, size in combos:
                cell = {
                    "table": table,
                    "selection": selection,
                    "size": size,
                    "ablation": ablation,
                    "seed": seed,
                    **train_switches(ablation, hc_weight, eac_weight),
                    "entity_prompt_at_inference": ablation in ("entity_prompt_infer", "entity_prompt_train"),
                }
                cells.setdefault(cell_id(cell), cell)
    return list(cells.values())


def cell_id(cell: dict) -> str:
    """A readable, content-addressed id: ``<selection>-<size>-<ablation>-<hash8>``."""
    digest = hashlib.sha256(json.dumps(cell, sort_keys=True).encode()).hexdigest()[:8]
    return f"{cell['selection']}-{cell['size']}-{cell['ablation']}-{digest}"


def cell_dir(run_dir: Path, cell: dict) -> Path:
    return Path(run_dir) / "cells" / cell_id(cell)
