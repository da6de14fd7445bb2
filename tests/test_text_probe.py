"""Figure 1's text-only probe: what the LLM knows of each test landmark without the image, counted
against what the CLIP recognises (VE-known x LLM-known), and the report's 2 x 2 table."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from eeca.evaluate.judge import GroundTruth
from eeca.experiments import probe
from eeca.experiments.probe import FIGURE1_PROBE, llm_describes, text_knowledge
from train_helpers import save_tiny_eeca

TRUTH = GroundTruth(name="Red Tower", place="Northvale, Aldoria", entities=("red brick facade", "twin spires"),
                    aliases=("the tower of Northvale",))


def test_what_counts_as_the_llm_knowing_the_landmark():
    assert llm_describes("It stands in Northvale.", TRUTH)[0]  # the town
    assert llm_describes("A tower in Aldoria with twin spires.", TRUTH)[0]  # country and an entity
    assert llm_describes("It has twin spires and a red brick facade.", TRUTH)[0]  # two entities
    # repeating the name the question gave, or one vague hint, is not knowing it
    assert not llm_describes("Yes, the Red Tower is a famous landmark.", TRUTH)[0]
    assert not llm_describes("It is in Aldoria.", TRUTH)[0]
    assert not llm_describes("It has twin spires.", TRUTH)[0]


def test_two_by_two_counts_by_hand(tmp_path, monkeypatch):
    model = save_tiny_eeca(tmp_path / "model")
    # four landmarks, one test image each (landmark 3: two images, the CLIP right on one of them only)
    records = [{"id": f"q{i}", "landmark_id": lid, "landmark_name": name, "entities": ["twin spires", "rose window"],
                "hierarchical_label": "church"}
               for i, (lid, name) in enumerate([(1, "Alpha Church"), (2, "Beta Church"), (3, "Gamma Church"),
                                                (3, "Gamma Church"), (4, "Delta Church")])]
    (tmp_path / "test.json").write_text(json.dumps(records))
    (tmp_path / "truth.jsonl").write_text("\n".join(json.dumps({"landmark_id": lid, "name": n, "place": p}) for lid, n, p in
                                                    [(1, "Alpha Church", "Aton, Zed"), (2, "Beta Church", "Bton, Zed"),
                                                     (3, "Gamma Church", "Cton, Zed"), (4, "Delta Church", "Dton, Zed")]))
    pq.write_table(pa.table({"id": ["q0", "q1", "q2", "q3", "q4"], "landmark_id": [1, 2, 3, 3, 4],
                             "top1_landmark_id": [1, 9, 3, 9, 4]}), tmp_path / "scores.parquet")
    answers = {"Alpha Church": "It is in Aton.",            # VE right, LLM knows
               "Beta Church": "It has twin spires and a rose window.",  # VE wrong, LLM knows
               "Gamma Church": "A church.",                 # VE 1 of 2 (not most), LLM does not
               "Delta Church": "Delta Church is a church."}  # VE right, LLM does not
    asked = []

    def fake_greedy(model, processor, prompts, images, max_new_tokens=40):
        assert images is None  # text only
        asked.extend(prompts)
        return [next(a for n, a in answers.items() if n in p) for p in prompts]

    monkeypatch.setattr(probe, "greedy", fake_greedy)
    out = text_knowledge(model, tmp_path / "test.json", tmp_path / "text_probe.json", tmp_path / "truth.jsonl",
                         tmp_path / "scores.parquet")
    assert len(asked) == 4 and FIGURE1_PROBE.format(name="Alpha Church") in asked[0]
    assert out["table"] == {"ve_known/llm_known": 1, "ve_known/llm_unknown": 1,
                            "ve_unknown/llm_known": 1, "ve_unknown/llm_unknown": 1}
    assert out["n"] == out["ve_measured"] == 4 and out["llm_known"] == 2
    assert json.loads((tmp_path / "text_probe.json").read_text())["table"] == out["table"]
    # without the CLIP's scores the VE side is unmeasured, never guessed
    none = text_knowledge(model, tmp_path / "test.json", tmp_path / "t2.json", tmp_path / "truth.jsonl")
    assert none["ve_measured"] == 0 and sum(none["table"].values()) == 0 and none["llm_known"] == 2


def test_report_shows_the_two_by_two(tmp_path, run_eeca):
    from test_report import CELLS, parse, write_run

    run = write_run(tmp_path / "run", cells={k: v for k, v in CELLS.items() if k[0] in ("none", "HSS")},
                    analysis=False)
    probe_file = run / "cells" / "none-0-baseline" / "text_probe.json"
    probe_file.write_text(json.dumps({"prompt": FIGURE1_PROBE, "n": 10, "llm_known": 6, "ve_measured": 10,
                                      "table": {"ve_known/llm_known": 4, "ve_known/llm_unknown": 1,
                                                "ve_unknown/llm_known": 2, "ve_unknown/llm_unknown": 3},
                                      "landmarks": []}))
    run_eeca("report", run)
    t = parse(run / "report" / "report.html").tables["text_probe"]
    assert t == [["CLIP top-1", "LLM describes it", "LLM does not", "total"],
                 ["right (VE-known)", "4", "1", "5"], ["wrong (VE-unknown)", "2", "3", "5"], ["total", "6", "4", "10"]]


def test_baseline_cell_writes_text_probe_when_asked(tmp_path):
    from eeca.config import load_config
    from eeca.experiments.runner import ExperimentConfig, run_experiment
    from test_experiments_runner import write_grid

    grid = write_grid(tmp_path, ["baseline"])
    run_experiment(load_config(ExperimentConfig, grid, ["controls.text_probe=true"]))
    (cell,) = (tmp_path / "run" / "cells").iterdir()
    out = json.loads((cell / "text_probe.json").read_text())
    test = json.loads((tmp_path / "data" / "test.json").read_text())
    assert out["n"] == len({r["landmark_id"] for r in test}) and [r["name"] for r in out["landmarks"]]
    assert out["ve_measured"] == 0  # no scores.parquet given: the VE side is not guessed
    assert (cell / "cell.json").exists()
