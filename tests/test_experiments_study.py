"""eeca study's pooling and report on hand-built runs: paired comparisons over seeds, every cell's controls."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from eeca.evaluate.compare import compare_judgments
from eeca.experiments.study import StudyConfig, cell_controls, pooled_tables, render_markdown, seed_wall

CELLS = [("none", 0, "baseline"), ("BRS", 25, "data"), ("HDS", 25, "data"), ("BRS", 50, "data"), ("HDS", 50, "data")]


def write_run(run: Path, recognised: dict[tuple, list[bool]]) -> Path:
    rows = []
    for (sel, size, abl), flags in recognised.items():
        folder = run / "cells" / f"{sel}-{size}-{abl}"
        (folder / "judge").mkdir(parents=True)
        (folder / "generate").mkdir()
        (folder / "judge" / "judgments.jsonl").write_text("".join(
            json.dumps({"id": f"q{i}", "level": "known" if ok else "unknown", "status": "ok"}) + "\n"
            for i, ok in enumerate(flags)))
        (folder / "generate" / "generations.jsonl").write_text("".join(
            json.dumps({"id": f"q{i}", "responses": ["This is Karvel Tower.", "Thisss"]}) + "\n"
            for i in range(len(flags))))
        (folder / "controls.json").write_text(json.dumps({"degenerate": {"percent": 50.0}}))
        acc = 100.0 * sum(flags) / len(flags)
        rows.append({"selection": sel, "size": size, "ablation": abl, "n": len(flags), "accuracy": acc,
                     "acc_ci_low": 0.0, "acc_ci_high": 100.0, "chance_accuracy": 0.0, "chance_weakly_unknown": 0.0,
                     "weakly_unknown": 0.0, "cell_dir": f"cells/{sel}-{size}-{abl}"})
    pq.write_table(pa.Table.from_pylist(rows), run / "results.parquet")
    return run


def test_comparisons_pool_seeds_and_pair_questions(tmp_path):
    runs = []
    for seed in range(2):
        flags = {cell: [(i + k + seed) % 4 == 0 for i in range(20)] for k, cell in enumerate(CELLS)}
        runs.append(write_run(tmp_path / f"seed-{seed}", flags))
    tables = pooled_tables(runs, samples=500)
    rows = {t["row"]: t for t in tables}
    assert set(rows) == {"HDS-S vs BRS-S", "HDS-L vs BRS-L", "BRS-L vs BRS-S (data volume)"}  # what the runs hold
    expected = compare_judgments([r / "cells/BRS-25-data/judge/judgments.jsonl" for r in runs],
                                 [r / "cells/HDS-25-data/judge/judgments.jsonl" for r in runs], samples=500)
    assert rows["HDS-S vs BRS-S"]["diff"] == expected["diff"] and rows["HDS-S vs BRS-S"]["n"] == 40

    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps(["This is Karvel Tower."]))
    controls = cell_controls(runs, [[vocab], [vocab]])
    assert len(controls) == 2 * len(CELLS)
    assert all(c["degenerate_pct"] == 50.0 for c in controls)  # "Thisss": counted again from the answers
    md = render_markdown(StudyConfig(out=tmp_path, grid=tmp_path / "g.yaml", seeds=[3, 4]), tables, controls,
                         600.0, "eeca study configs/synth/study.yaml")
    assert "over 2 seeds" in md and "(10 min on 2 CPU cores" in md and "| HDS-S vs BRS-S | 40 |" in md
    assert "| 4 | HDS-50-data | 20 |" in md


def test_seed_wall_sums_invocations(tmp_path):
    assert seed_wall(tmp_path, 60.0) == 60.0
    assert seed_wall(tmp_path, 5.0) == 65.0
