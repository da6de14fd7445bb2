"""`eeca report`: tables with hand-computed numbers and deltas, a self-contained HTML, the markdown twin,
missing inputs, bad inputs, determinism, and no torch import."""

import base64
import html
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli_env import eeca_env

LEVELS = ("strongly_known", "known", "weakly_unknown", "unknown")
N = 100

# (selection, size, ablation) -> (Strongly Known, Known, Weakly Unknown) counts out of N = 100, so the
# counts are also the percentages; Unknown is the rest.
CELLS = {
    ("none", 0, "baseline"): (4, 6, 10),
    ("none", 0, "entity_prompt_infer"): (5, 3, 10),
    ("BRS", 20, "data"): (12, 8, 10), ("BRS", 40, "data"): (18, 12, 10),
    ("LCS", 20, "data"): (8, 6, 10), ("LCS", 40, "data"): (9, 7, 10),
    ("HSS", 20, "data"): (13, 9, 10), ("HSS", 40, "data"): (20, 14, 10),
    ("HDS", 20, "data"): (15, 10, 10), ("HDS", 40, "data"): (22, 16, 10),
    ("HSS", 40, "hr"): (21, 12, 10), ("HSS", 40, "hc"): (22, 13, 10), ("HSS", 40, "eac"): (24, 13, 10),
    ("HSS", 40, "entity_prompt_train"): (30, 10, 10),
    ("HDS", 20, "hr"): (17, 10, 10), ("HDS", 20, "hc"): (18, 10, 11), ("HDS", 20, "eac"): (19, 11, 10),
    ("HSS", 20, "hr"): (14, 9, 10),
}


def write_run(run: Path, cells=CELLS, judges=("rule",), metrics=True, analysis=True, size_scale=1) -> Path:
    rows = []
    for judge, ((sel, size, abl), (sk, k, wu)) in ((j, kv) for j in judges for kv in cells.items()):
        counts = dict(zip(LEVELS, (sk, k, wu, N - sk - k - wu), strict=True))
        cell_id = f"{sel}-{size * size_scale}-{abl}"
        row = {"cell_id": cell_id, "table": "table1", "selection": sel, "size": size * size_scale,
               "ablation": abl, "judge": judge, "n": N, "n_failed": 0,
               **{lv: 100.0 * c / N for lv, c in counts.items()}, "accuracy": 100.0 * (sk + k) / N,
               "acc_ci_low": (sk + k) - 3.5, "acc_ci_high": (sk + k) + 4.0,
               **{f"count_{lv}": c for lv, c in counts.items()}, "cell_dir": f"cells/{cell_id}"}
        rows.append(row)
        if metrics:
            d = run / "cells" / cell_id
            d.mkdir(parents=True, exist_ok=True)
            (d / "metrics.json").write_text(json.dumps(
                {"n": N, "n_failed": 0, "counts": counts, "percentages": {lv: row[lv] for lv in LEVELS},
                 "accuracy": row["accuracy"]}))
    run.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), run / "results.parquet")
    if analysis:
        a = run / "analysis"
        a.mkdir(exist_ok=True)
        labels = ["tower", "church", "bridge", "lake"]
        pts = [{"id": f"{s}{i:03d}", "subset": s, "x": float((i * 7) % 23 + 30 * j), "y": float((i * 5) % 19),
                "hierarchical_label": labels[i % 4]}
               for j, s in enumerate(("HDS", "HSS", "LCS", "BRS")) for i in range(40)]
        pq.write_table(pa.Table.from_pylist(pts), a / "tsne.parquet")
        pq.write_table(pa.Table.from_pylist(
            [{"subset": s, "hierarchical_label": lb, "count": 3 + i + 2 * j}
             for j, s in enumerate(("HDS", "HSS", "LCS")) for i, lb in enumerate(labels)]),
            a / "category_counts.parquet")
        (a / "knowledge.json").write_text(json.dumps({"auroc": {"s_gt": 0.8125, "rsr": 0.9}, "n": 400}))
        pq.write_table(pa.Table.from_pylist([{"id": f"i{i}", "landmark_id": i, "subset": "all", "s_gt": i / 8,
                                              "rsr": i / 8, "clip_seen": i % 2 == 0} for i in range(8)]),
                       a / "probe.parquet")
    return run


class Page(HTMLParser):
    """Collects tables (id -> rows of cell texts), img srcs and every src/href attribute."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.links = {}, [], []
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href")]
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def row(table, first):
    return next(r for r in table if r[0] == first)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("run") / "run")
    proc = subprocess.run([sys.executable, "-m", "eeca", "report", str(run)], capture_output=True, text=True,
                          env=eeca_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return run / "report", proc.stdout


def test_table1_accuracy_and_gain_with_deltas_against_brs(full_report):
    page = parse(full_report[0] / "report.html")
    acc = page.tables["table1"]
    assert acc[0] == ["Category", "Selection", "20", "40"]
    assert [r[1] for r in acc[1:]] == ["BRS", "LCS", "HSS", "HDS"]
    assert row(acc, "Reference")[2:] == ["20.00", "30.00"]
    assert row(acc, "VE-Unknown")[2:] == ["14.00 (-6.00)", "16.00 (-14.00)"]
    assert acc[4][2:] == ["25.00 (+5.00)", "38.00 (+8.00)"]
    gain = page.tables["table1_gain"]  # 100 * (acc - 10) / 10, the paper's unit
    assert gain[1][2:] == ["100.00", "200.00"]
    assert gain[4][2:] == ["150.00 (+50.00)", "280.00 (+80.00)"]
    assert row(gain, "VE-Unknown")[2:] == ["40.00 (-60.00)", "60.00 (-140.00)"]


def test_table3_deltas_against_previous_row(full_report):
    t3 = parse(full_report[0] / "report.html").tables["table3"]
    assert t3[0] == ["Method", "Strongly Known", "Known", "Accuracy"]
    assert t3[1] == ["Baseline", "4.00", "6.00", "10.00"]
    assert t3[2] == ["+ HSS-40", "20.00 (+16.00)", "14.00 (+8.00)", "34.00 (+24.00)"]
    assert t3[3] == ["+ HR Branch", "21.00 (+1.00)", "12.00 (-2.00)", "33.00 (-1.00)"]
    assert t3[4] == ["+ L_HC", "22.00 (+1.00)", "13.00 (+1.00)", "35.00 (+2.00)"]
    assert t3[5] == ["+ L_EAC", "24.00 (+2.00)", "13.00 (+0.00)", "37.00 (+2.00)"]


def test_table2_and_table4_and_counts(full_report):
    page = parse(full_report[0] / "report.html")
    t2 = page.tables["table2"]
    assert row(t2, "Entity Prompt (Inference Only)")[1:] == ["5.00", "3.00", "8.00"]
    assert row(t2, "Entity Prompt (Training + Inference) (HSS-40)")[1:] == ["30.00", "10.00", "40.00"]
    assert row(t2, "EECA (HSS-40)")[1:] == ["24.00", "13.00", "37.00"]
    t4 = page.tables["table4"]  # size 20: HDS and HSS have steps beyond +data; deltas against the baseline
    assert t4[0] == ["Method", "HDS-20", "HSS-20", "LCS-20"]
    assert row(t4, "Baseline")[1:] == ["10.00"] * 3
    assert row(t4, "+ 20 Data")[1:] == ["25.00 (+15.00)", "22.00 (+12.00)", "14.00 (+4.00)"]
    assert row(t4, "+ HR Branch")[1:] == ["27.00 (+17.00)", "23.00 (+13.00)", "not run"]
    assert row(t4, "+ L_EAC")[1:] == ["30.00 (+20.00)", "not run", "not run"]
    t6 = page.tables["table6"]
    assert t6[0][:2] == ["Method", "n"]  # every absolute-count table states how many questions a row counts
    assert row(t6, "+ L_EAC")[1:] == ["100", "24", "13", "10", "53", "0"]
    t7 = page.tables["table7"]
    hds = [r[0] for r in t7].index("For HDS-20")
    assert t7[hds + 3][1:] == ["100", "18", "10", "11", "61", "0"]  # +L_HC of HDS-20
    cells = page.tables["cells"]
    assert len(cells) == 1 + len(CELLS)
    assert row(cells, "HSS-40 EECA")[6:] == ["37.00 [33.50, 41.00]", "24", "13", "10", "53", "0", "HSS-40-eac"]


def test_html_is_self_contained_and_markdown_twin(full_report):
    out = full_report[0]
    page = parse(out / "report.html")
    assert not [link for link in page.links if re.match(r"\s*(https?:)?//", link)]
    text = (out / "report.html").read_text()
    assert "<script" not in text and "<link" not in text and "url(" not in text and "@import" not in text
    pngs = sorted(out.glob("*.png"))
    names = {p.stem for p in pngs}
    assert {"fig3_tsne", "fig4_categories", "fig5_accuracy_vs_size", "levels", "accuracy_ci"} <= names
    assert len(page.imgs) == len(pngs)
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert sorted(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)) == sorted(p.name for p in pngs)
    assert "| + L_HC | 22.00 (+1.00) | 13.00 (+1.00) | 35.00 (+2.00) |" in md
    assert "| auroc.s_gt | 0.8125 |" in md
    # everything but the per-question files, which this run has not
    assert "## Not run, missing inputs and checks\n\n- Not run: Per-question browser.\n" in md
    assert "eeca report: 18 cells" in full_report[1]


def test_missing_inputs_are_listed_not_fatal(tmp_path, run_eeca):
    few = {k: v for k, v in CELLS.items() if k[2] in ("baseline", "eac")}
    run = write_run(tmp_path / "run", cells=few, metrics=False, analysis=False)
    run_eeca("report", run, "--out", tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    for title in ("Table 1: accuracy by data selection and size", "Table 2: Entity Prompt",
                  "Table 4: generalisability across subsets", "Figure 3: t-SNE of the subsets",
                  "Figure 4: category distribution"):
        assert f"**{title}**: not run" in md
    t3 = parse(tmp_path / "out" / "report.html").tables["table3"]  # only baseline and +L_EAC were run
    assert t3[2][1:] == ["not run"] * 3
    assert t3[5] == ["+ L_EAC", "24.00 (+20.00)", "13.00 (+7.00)", "37.00 (+27.00)"]
    assert f"- Missing: {run / 'analysis' / 'tsne.parquet'} not found." in md
    assert "metrics.json not found" in md


def test_metrics_mismatch_and_failures_are_reported(tmp_path, run_eeca):
    run = write_run(tmp_path / "run", analysis=False)
    path = run / "cells" / "HSS-40-eac" / "metrics.json"
    m = json.loads(path.read_text())
    m["counts"]["known"] = 12
    path.write_text(json.dumps(m))
    rows = pq.read_table(run / "results.parquet").to_pylist()
    rows[0].update(n_failed=3, acc_ci_high=rows[0]["accuracy"] - 1)
    pq.write_table(pa.Table.from_pylist(rows), run / "results.parquet")
    run_eeca("report", run)
    md = (run / "report" / "report.md").read_text()
    assert re.search(r"Check: HSS-40-eac: .*metrics.json disagrees with results.parquet: count_known 12 vs 13", md)
    cid = rows[0]["cell_id"]
    assert f"- Check: {cid} (rule): 3 of 100 judgments failed (counted apart, not scored as Unknown)." in md
    assert f"Check: {cid} (rule): exact interval [6.50, 9.00] does not contain the accuracy 10.00." in md


def test_paper_numbers_beside_ours_at_paper_sizes(tmp_path, run_eeca):
    cells = {(s, n, a): v for (s, n, a), v in CELLS.items() if n in (0, 20, 40)}
    run = write_run(tmp_path / "run", cells=cells, analysis=False, size_scale=1250)  # 20 -> 25k, 40 -> 50k
    run_eeca("report", run)
    page = parse(run / "report" / "report.html")
    gain = page.tables["table1_gain"]
    assert gain[0][-2:] == ["25k (paper)", "50k (paper)"]
    assert row(gain, "Reference")[-2:] == ["40.10", "56.20"]
    assert gain[4][-2:] == ["49.30 (+9.20)", "64.10 (+7.90)"]  # HDS, as printed in the paper
    t3 = page.tables["table3"]
    assert row(t3, "+ L_EAC")[-3:] == ["8.52", "7.00", "15.52"]
    assert row(page.tables["table6"], "Baseline")[-1] == "103/114/145/2138"
    t7 = page.tables["table7"]
    assert t7[[r[0] for r in t7].index("For LCS-25k") + 4][-1] == "198/110/266/1926"  # +L_EAC of LCS-25k


def test_no_paper_columns_for_other_sizes(full_report):
    page = parse(full_report[0] / "report.html")
    assert not any("paper" in c for t in page.tables.values() for c in t[0])


def test_deterministic_output(tmp_path, run_eeca):
    run = write_run(tmp_path / "run")
    run_eeca("report", run, "--out", tmp_path / "a")
    run_eeca("report", run, "--out", tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    for name in files:
        a, b = (tmp_path / d / name for d in "ab")
        if name == "report.html":
            strip = lambda s: re.sub(r"generated at [^<]*", "", s)  # noqa: E731
            assert strip(a.read_text()) == strip(b.read_text())
        else:
            assert a.read_bytes() == b.read_bytes(), name


def test_bad_results_name_file_row_and_field(tmp_path, run_eeca):
    run = write_run(tmp_path / "run", analysis=False)
    table = pq.read_table(run / "results.parquet")
    rows = table.to_pylist()
    rows[2]["ablation"] = "hr_branch"
    pq.write_table(pa.Table.from_pylist(rows), run / "results.parquet")
    proc = run_eeca("report", run, check=False)
    assert proc.returncode != 0
    assert f"{run / 'results.parquet'}: row 3 (cell_id 'BRS-20-data'): field 'ablation' is 'hr_branch'" in proc.stderr
    pq.write_table(table.drop_columns(["acc_ci_low"]), run / "results.parquet")
    proc = run_eeca("report", run, check=False)
    assert "missing column(s) acc_ci_low" in proc.stderr


def test_each_judge_gets_its_own_tables_and_figures(tmp_path, run_eeca):
    run = write_run(tmp_path / "run", judges=("openai/gpt-4o", "rule"), analysis=False)
    run_eeca("report", run)
    md = (run / "report" / "report.md").read_text()
    assert "## The paper's tables (judge: openai/gpt-4o)" in md and "## The paper's tables (judge: rule)" in md
    assert {"levels-openai_gpt-4o.png", "levels-rule.png"} <= {p.name for p in (run / "report").glob("*.png")}
    assert md.count("| + L_HC | 22.00 (+1.00) | 13.00 (+1.00) | 35.00 (+2.00) |") == 2


def test_nothing_to_report(tmp_path, run_eeca):
    proc = run_eeca("report", tmp_path, check=False)
    assert proc.returncode == 2
    assert "nothing to report" in proc.stderr


def test_report_does_not_import_torch(tmp_path):
    run = write_run(tmp_path / "run", analysis=False)
    code = ("import sys; from eeca.cli import main; rc = main(['report', sys.argv[1]]); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert rc == 0 and not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(run)], check=True, env=eeca_env(), capture_output=True,
                   timeout=300)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="needs Debian's chromium")
def test_report_renders_in_headless_chromium(full_report, tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "report_screenshot.py"
    proc = subprocess.run([sys.executable, str(script), str(full_report[0] / "report.html"),
                           "--png", str(tmp_path / "shot.png")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_controls_table_shows_each_cells_controls_and_older_runs_say_not_run(tmp_path, run_eeca):
    run = write_run(tmp_path / "run", analysis=False)
    run_eeca("report", run)
    assert "controls" not in parse(run / "report" / "report.html").tables  # an older run: no control columns
    rows = pq.read_table(run / "results.parquet").to_pylist()
    for i, r in enumerate(rows):
        r.update(degenerate_pct=0.5 * i, chance_accuracy=1.0, chance_weakly_unknown=2.0,
                 skyline_clip_seen_accuracy=40.0 if r["selection"] == "BRS" and r["ablation"] == "data" else None,
                 skyline_clip_seen_clip_top1=70.0 if r["selection"] == "BRS" and r["ablation"] == "data" else None)
    pq.write_table(pa.Table.from_pylist(rows), run / "results.parquet")
    run_eeca("report", run)
    table = parse(run / "report" / "report.html").tables["controls"]
    assert table[0][:3] == ["Cell", "Accuracy %", "Degenerate answers %"] and len(table) == len(rows) + 1
    brs = [t for t in table[1:] if t[0].startswith("BRS-") and t[6]]
    assert brs and all(t[6] == "40.00 / 70.00" and t[3] == "1.00" and t[4] == "2.00" for t in brs)


def _bench(name: str):
    """A module of benchmarks/ (the generated run and the Chromium helpers are shared with the tests)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    spec.loader.exec_module(module)
    return module


def browser_json(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
                      .group(1).replace("<\\/", "</"))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run = _bench("report_browser").make_run(tmp_path_factory.mktemp("small") / "run", questions=6, cells=3)
    shuffled = run / "cells" / "none-0-baseline" / "judge-shuffled"  # the judge-chance control: not a judge
    shuffled.mkdir()
    (shuffled / "judgments.jsonl").write_text(json.dumps({"id": "q00000", "judge": "rule:v2", "status": "ok",
                                                          "level": "known", "explanation": "SHUFFLED"}) + "\n")
    (shuffled / "judge_summary.json").write_text(json.dumps({"shuffle_truth": True}))
    proc = subprocess.run([sys.executable, "-m", "eeca", "report", str(run)], capture_output=True, text=True,
                          env=eeca_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return run


def test_browser_holds_every_answer_verdict_truth_and_image(small_run):
    data = browser_json(small_run / "report" / "browser.html")
    S = data["strings"]
    assert data["cells"] == ["baseline", "LCS-40", "BRS-40"]  # cell order: selections as in the paper
    assert data["judges"] == ["llm:stand-in", "rule:v2"]
    assert len(data["questions"]) == 6
    truth = {r["id"]: r for r in json.loads((small_run / "test.json").read_text())}
    gens = [json.loads(x) for x in (small_run / "cells" / "LCS-40-data" / "generate" / "generations.jsonl")
            .read_text().splitlines()]
    rule = {j["id"]: j for j in map(json.loads, (small_run / "cells" / "LCS-40-data" / "judge" / "judgments.jsonl")
                                    .read_text().splitlines())}
    for q, g in zip(data["questions"], gens, strict=True):
        qid, img, name, reference, entities, label, question, cells = q
        assert qid == g["id"] and S[name] == truth[qid]["landmark_name"]
        assert [S[e] for e in entities] == truth[qid]["entities"] and S[label] == truth[qid]["hierarchical_label"]
        assert S[reference] == truth[qid]["conversations"][1]["value"] and S[question] == "What is this place?"
        assert S[img].startswith("data:image/jpeg;base64,")
        assert base64.b64decode(S[img].split(",", 1)[1])[:2] == b"\xff\xd8"
        answers, verdicts = cells[1]
        assert [S[a] for a in answers] == g["responses"]
        level, explanation = verdicts[data["judges"].index("rule:v2")]
        assert LEVELS[level] == rule[qid]["level"] and S[explanation] == rule[qid]["explanation"]
    assert "SHUFFLED" not in S
    text = (small_run / "report" / "browser.html").read_text()
    assert not re.search(r"(src|href)=\"?(https?:)?//", text) and "default-src 'none'" in text
    assert "Per-question browser: browser.html beside this page (6 questions x 3 cells" in (
        small_run / "report" / "report.md").read_text()


def test_loss_curves_read_from_trainer_state(tmp_path, run_eeca):
    from eeca.report.data import load_train_log

    run = write_run(tmp_path / "run", analysis=False)
    history = [{"step": 5, "loss": 4.2, "loss_lm": 0.6, "loss_hc": 2.5, "loss_eac": 1.1, "learning_rate": 1e-4},
               {"step": 10, "loss": 3.9, "loss_lm": 0.4, "loss_hc": 2.4, "loss_eac": 1.1, "learning_rate": 5e-5},
               {"step": 10, "train_loss": 4.0, "train_runtime": 7.0}]  # the Trainer's closing entry: no series
    train = run / "cells" / "HSS-40-eac" / "train"
    train.mkdir(parents=True)
    (train / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    killed = run / "cells" / "HSS-40-hc" / "train" / "checkpoint-10"  # a killed run: its latest checkpoint
    killed.mkdir(parents=True)
    (killed / "trainer_state.json").write_text(json.dumps({"log_history": history[:1]}))
    log = load_train_log(run, "cells/HSS-40-eac")
    assert log["loss_hc"] == [(5, 2.5), (10, 2.4)] and log["learning_rate"] == [(5, 1e-4), (10, 5e-5)]
    assert load_train_log(run, "cells/HSS-40-hc")["loss"] == [(5, 4.2)]
    assert load_train_log(run, "cells/none-0-baseline") is None
    run_eeca("report", run)
    assert "![Training losses and learning rate per cell.](training_loss.png)" in (run / "report" / "report.md").read_text()
    assert (run / "report" / "training_loss.png").read_bytes()[:4] == b"\x89PNG"


def _write_probe(analysis: Path, seen: bool) -> None:
    """knowledge.json and probe.parquet as `eeca knowledge analyze` writes them (hand-made numbers)."""
    stats = lambda n, mean: {"n": n, "mean": mean, "median": mean + 0.01, "p10": mean - 0.2, "p90": mean + 0.1}  # noqa: E731
    knowledge = {"all": {"s": stats(8, 0.5), "rsr": stats(8, 0.8)},
                 "subsets": {"HDS": {"s": stats(2, 0.9), "rsr": stats(2, 1.0)}, "LCS": {"s": stats(2, 0.1), "rsr": stats(2, 0.6)}}}
    if seen:
        knowledge["subsets"]["HDS"]["clip_seen_fraction"] = 1.0
        knowledge["subsets"]["LCS"]["clip_seen_fraction"] = 0.0
        knowledge["clip_seen_separation"] = {"auroc_s_image": 0.9375, "auroc_rsr_image": 0.875, "auroc_s_landmark": 1.0,
                                             "auroc_rsr_landmark": 0.75, "images_seen": 4, "images_unseen": 4,
                                             "landmarks_seen": 2, "landmarks_unseen": 2}
    (analysis / "knowledge.json").write_text(json.dumps(knowledge))
    s = [0.9, 0.8, 0.7, 0.2, 0.6, 0.3, 0.1, 0.0]
    rows = [{"id": f"i{i}", "landmark_id": i // 2, "subset": "all", "s_gt": v, "rsr": 1 - i / 10,
             "clip_seen": (i < 4) if seen else None} for i, v in enumerate(s)]
    rows += [{**r, "subset": "HDS"} for r in rows[:2]] + [{**r, "subset": "LCS"} for r in rows[6:]]
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([
        ("id", pa.string()), ("landmark_id", pa.int64()), ("subset", pa.string()), ("s_gt", pa.float64()),
        ("rsr", pa.float64()), ("clip_seen", pa.bool_())])), analysis / "probe.parquet")


def test_probe_section_tables_histograms_and_roc(tmp_path, run_eeca):
    from eeca.report.figures import roc_figure

    run = write_run(tmp_path / "run")
    _write_probe(run / "analysis", seen=True)
    run_eeca("report", run)
    page = parse(run / "report" / "report.html")
    probe = page.tables["probe"]
    assert probe[0] == ["Subset", "n", "S mean", "S median", "S p10", "S p90", "RSR mean", "RSR median", "RSR p10",
                        "RSR p90", "CLIP-seen %"]
    assert row(probe, "all scored images") == ["all scored images", "8", "0.500", "0.510", "0.300", "0.600",
                                               "0.800", "0.810", "0.600", "0.900", "50.00"]
    assert row(probe, "LCS")[-1] == "0.00" and len(probe) == 4
    assert page.tables["probe_separation"][1:] == [["S", "0.938", "1.000"], ["RSR", "0.875", "0.750"]]
    md = (run / "report" / "report.md").read_text()
    assert "all.rsr.mean" not in md  # no flattened keys
    assert "(probe_histograms.png)" in md and "(probe_roc.png)" in md
    # without a world's truth: histograms per subset, no ROC
    _write_probe(run / "analysis", seen=False)
    run_eeca("report", run)
    md = (run / "report" / "report.md").read_text()
    assert "S and RSR of each subset." in md and "probe_roc" not in md and "How well S and RSR tell" not in md
    assert roc_figure([{"subset": "all", "s_gt": 0.5, "rsr": 0.5, "clip_seen": True}]) is None  # one side: undefined


def test_paired_intervals_match_compare_judgments_and_edges_are_exact(tmp_path, run_eeca):
    from eeca.evaluate.compare import compare_judgments

    # baseline 0/40, BRS-40 40/40 (rates 0 and 1), LCS-40 at 30%
    run = _bench("report_browser").make_run(tmp_path / "run", questions=40, cells=3, rates=[0.0, 1.0, 0.3])
    run_eeca("report", run)
    page = parse(run / "report" / "report.html")
    cells = page.tables["cells"]
    assert row(cells, "baseline")[6] == "0.00 [0.00, 8.81]"  # Clopper-Pearson: 1 - 0.025 ** (1 / 40)
    assert row(cells, "BRS-40")[6] == "100.00 [91.19, 100.00]"
    paired = page.tables["paired"]
    assert paired[0][:3] == ["Comparison", "b vs a", "b - a, points [95% CI]"]
    lcs_brs = row(paired, "Table 1: selection vs BRS")
    ref = compare_judgments(run / "cells" / "BRS-40-data" / "judge" / "judgments.jsonl",
                            run / "cells" / "LCS-40-data" / "judge" / "judgments.jsonl", samples=2000)
    assert lcs_brs[1] == "LCS-40 vs BRS-40"
    assert lcs_brs[2] == f"{ref['diff']:+.2f} [{ref['diff_ci_low']:+.2f}, {ref['diff_ci_high']:+.2f}]"
    assert lcs_brs[5:] == [f"{ref['a_only']} / {ref['b_only']}", f"{ref['mcnemar_p']:.3g}", "40", "1"]
    brs_base = next(r for r in paired if r[1] == "BRS-40 vs baseline")
    assert brs_base[2] == "+100.00 [+100.00, +100.00]" and brs_base[5] == "0 / 40"
    assert brs_base[0] == "Tables 3-4: step vs the step above"
    assert {r[1] for r in paired[1:]} == {"LCS-40 vs BRS-40", "LCS-40 vs baseline", "BRS-40 vs baseline"}


def test_runs_side_by_side_pool_paired_comparisons(tmp_path, run_eeca):
    from eeca.evaluate.compare import compare_judgments

    make_run = _bench("report_browser").make_run
    runs = [make_run(tmp_path / f"seed{s}" / "run", questions=30, cells=3, seed=s) for s in (0, 1)]
    proc = run_eeca("report", *runs, check=False)
    assert proc.returncode == 2 and "2 runs: --out names the folder for their report" in proc.stderr
    run_eeca("report", *runs, "--out", tmp_path / "both")
    page = parse(tmp_path / "both" / "report.html")
    acc = page.tables["runs_accuracy"]
    assert acc[0] == ["Cell", "seed0/run", "seed1/run"]
    for i, run in enumerate(runs):
        lcs = json.loads((run / "cells" / "LCS-40-data" / "metrics.json").read_text())
        assert row(acc, "LCS-40")[1 + i] == f"{lcs['accuracy']:.2f} [{lcs['acc_ci_low']:.2f}, {lcs['acc_ci_high']:.2f}] n=30"
    pooled = compare_judgments([r / "cells" / "BRS-40-data" / "judge" / "judgments.jsonl" for r in runs],
                               [r / "cells" / "LCS-40-data" / "judge" / "judgments.jsonl" for r in runs])
    lcs_brs = next(r for r in page.tables["paired"] if r[1] == "LCS-40 vs BRS-40")
    assert lcs_brs[2] == f"{pooled['diff']:+.2f} [{pooled['diff_ci_low']:+.2f}, {pooled['diff_ci_high']:+.2f}]"
    assert lcs_brs[-2:] == ["60", "2"]
    md = (tmp_path / "both" / "report.md").read_text()
    assert "## The paper's tables (run seed0/run)" in md and "## The paper's tables (run seed1/run)" in md
    assert browser_json(tmp_path / "both" / "browser.html")["cells"] == [
        "baseline [seed0/run]", "LCS-40 [seed0/run]", "BRS-40 [seed0/run]",
        "baseline [seed1/run]", "LCS-40 [seed1/run]", "BRS-40 [seed1/run]"]
    assert {p.name for p in (tmp_path / "both").glob("levels*.png")} == {"levels-seed0_run.png", "levels-seed1_run.png"}


def test_table3_in_both_loss_orders_with_the_assumption_beside_the_paper(tmp_path, run_eeca):
    # HSS-40 (-> 50k): + L_HC first (hc), and + L_EAC first (hr_eac), both ending in EECA (eac)
    cells = {k: v for k, v in CELLS.items() if k[1] in (0, 40)} | {("HSS", 40, "hr_eac"): (23, 14, 10)}
    run = write_run(tmp_path / "run", cells=cells, analysis=False, size_scale=1250)
    run_eeca("report", run)
    page = parse(run / "report" / "report.html")
    hc_first, eac_first = page.tables["table3"], page.tables["table3_eac_first"]
    assert [r[0] for r in hc_first[1:]] == ["Baseline", "+ HSS-50k", "+ HR Branch", "+ L_HC", "+ L_EAC"]
    assert [r[0] for r in eac_first[1:]] == ["Baseline", "+ HSS-50k", "+ HR Branch", "+ L_EAC", "+ L_HC"]
    assert eac_first[4][1:4] == ["23.00 (+2.00)", "14.00 (+2.00)", "37.00 (+4.00)"]  # hr_eac vs hr (21, 12)
    assert eac_first[5][1:4] == ["24.00 (+1.00)", "13.00 (-1.00)", "37.00 (+0.00)"]  # eac vs hr_eac
    # the paper's rows stand at their printed positions in both
    assert hc_first[4][-3:] == eac_first[4][-3:] == ["8.48", "5.92", "14.40"]
    md = (run / "report" / "report.md").read_text()
    assert "read as + L_HC then + L_EAC" in md and "read as + L_EAC then + L_HC" in md
    assert md.count("Assumed: the paper's loss symbols were lost") == 3  # Tables 3 (both orders) and 6


def test_figure7_from_sweep_cells_kept_out_of_the_tables(tmp_path, run_eeca):
    run = write_run(tmp_path / "run", cells={k: v for k, v in CELLS.items() if k[0] in ("none", "HSS")},
                    analysis=False)
    rows = pq.read_table(run / "results.parquet").to_pylist()
    eac = next(r for r in rows if r["cell_id"] == "HSS-40-eac")
    for r in rows:
        r["sweep_param"], r["sweep_value"] = None, None
    for param, value, sk in (("eac_sigma", 0.0, 30), ("eac_sigma", 0.2, 20), ("num_hr_latents", 4, 10),
                             ("num_hr_latents", 32, 25)):
        cid = f"HSS-40-eac-{param}={value:g}"
        counts = {"strongly_known": sk, "known": 10, "weakly_unknown": 10, "unknown": 80 - sk}
        rows.append({**eac, "cell_id": cid, "cell_dir": f"cells/{cid}", "sweep_param": param, "sweep_value": value,
                     **{lv: float(c) for lv, c in counts.items()}, **{f"count_{lv}": c for lv, c in counts.items()},
                     "accuracy": float(sk + 10), "acc_ci_low": sk + 10 - 3.5, "acc_ci_high": sk + 10 + 4.0})
        (run / "cells" / cid).mkdir(parents=True)
        (run / "cells" / cid / "metrics.json").write_text(json.dumps(
            {"n": N, "n_failed": 0, "counts": counts, "accuracy": float(sk + 10)}))
    pq.write_table(pa.Table.from_pylist(rows), run / "results.parquet")
    run_eeca("report", run)
    page = parse(run / "report" / "report.html")
    assert row(page.tables["table3"], "+ L_EAC")[1:4] == ["24.00 (+2.00)", "13.00 (+0.00)", "37.00 (+2.00)"]
    fig7 = page.tables["fig7"]
    assert fig7[1:] == [
        ["sparsification threshold sigma", "HSS-40 eac", "0", "40.00 [36.50, 44.00]", "100"],
        ["sparsification threshold sigma", "HSS-40 eac", "0.2", "30.00 [26.50, 34.00]", "100"],
        ["number of HR tokens P", "HSS-40 eac", "4", "20.00 [16.50, 24.00]", "100"],
        ["number of HR tokens P", "HSS-40 eac", "32", "35.00 [31.50, 39.00]", "100"]]
    assert any("fig7_sweeps" in src for src in page.imgs) or (run / "report" / "fig7_sweeps.png").is_file()


def test_judge_named_once_in_captions_and_wide_tables_wrap(full_report):
    md = (full_report[0] / "report.md").read_text()
    for name in ("Recognition levels per cell.", "Accuracy per cell with exact 95% interval (Clopper-Pearson).",
                 "Figure 5: accuracy vs training data size."):
        caption = next(line for line in md.splitlines() if line.startswith(f"**{name}**"))
        assert caption.endswith("Judge: rule."), caption
    html = (full_report[0] / "report.html").read_text()
    assert "th { background: #f2f2f2; white-space: normal;" in html and '<div class="scroll">' in html


# After load: images that loaded, rows drawn, rows after choosing a level in the filter, and any
# resource fetched from somewhere other than a data: URI (the page's CSP forbids them; this counts them)
CHROMIUM_PROBE = """<script>window.addEventListener('load', () => {
  const imgs = Array.from(document.images), out = {images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    rows: document.querySelectorAll('#list .q').length};
  const level = document.getElementById('level'); level.value = '0'; level.dispatchEvent(new Event('change'));
  out.rows_strongly_known = document.querySelectorAll('#list .q').length;
  out.count_text = document.getElementById('count').textContent;
  out.outside = performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'));
  const d = document.createElement('pre'); d.id = 'eeca-probe'; d.textContent = JSON.stringify(out);
  document.body.appendChild(d); });</script>"""


def test_browser_in_headless_chromium(small_run):
    screenshot = _bench("report_screenshot")
    binary = screenshot.find_chromium()
    if binary is None:
        pytest.skip("no chromium on PATH: install Debian's chromium (apt-get install -y chromium; .ci/run does)")
    page = small_run / "report" / "browser.html"
    dom = screenshot.open_page(binary, page, CHROMIUM_PROBE)
    found = re.search(r'<pre id="eeca-probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    print("chromium:", result)
    data = browser_json(page)
    expected = sum(1 for q in data["questions"] if any(c and any(v and v[0] == 0 for v in c[1]) for c in q[7]))
    assert result["images"] == result["loaded"] == result["rows"] == 6  # one thumbnail per question, all drawn
    assert result["rows_strongly_known"] == expected and 0 < expected < 6
    assert result["count_text"].startswith(f"{expected} of 6 questions")
    assert result["outside"] == []
    report = small_run / "report" / "report.html"  # the report page: every figure loads, nothing outside
    dom = screenshot.open_page(binary, report, screenshot.PROBE)
    loaded, total = map(int, re.search(r'id="eeca-img-check">(\d+)/(\d+)<', dom).groups())
    assert loaded == total == len(re.findall(r"<img\b", report.read_text())) > 0


def test_browser_thumbnails_come_from_the_one_image_loader(tmp_path):
    """A 16-bit PNG is its grey (PIL's convert('RGB') makes it white) and a decompression bomb is no
    thumbnail, not a crashed report."""
    import base64
    import io

    from image_cases import write_16bit_png, write_png_bomb
    from PIL import Image

    from eeca.report.questions import thumbnail

    uri = thumbnail(write_16bit_png(tmp_path / "grey.png", value=20000))  # 78 of 255
    im = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("L")
    assert abs(im.getpixel((0, 0)) - 78) <= 3
    assert thumbnail(write_png_bomb(tmp_path / "bomb.png")) is None
    assert thumbnail(tmp_path / "missing.jpg") is None
