"""The per-question browser at scale: file size and time to open in headless Chromium.

    python benchmarks/report_browser.py [--questions 2500] [--cells 10] [--out /tmp/eeca-browser]
    python benchmarks/report_browser.py --run runs/demo/experiment     # an existing run instead

Writes a generated run (``make_run``: results.parquet, each cell's generations, two judges'
verdicts, the MGLD test records and one JPEG per question), runs ``eeca report`` on it and opens
``browser.html`` in headless Chromium (:mod:`report_screenshot`). Open time is the in-page time from
navigation start to the first page of questions drawn (``performance.now()`` at the end of the
script), and the wall time of the Chromium run beside that of an empty page measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_screenshot import find_chromium, open_page  # noqa: E402

LEVELS = ("strongly_known", "known", "weakly_unknown", "unknown")
CELLS = [("none", 0, "baseline"), ("BRS", 40, "data"), ("LCS", 40, "data"), ("HSS", 40, "data"),
         ("HDS", 40, "data"), ("HSS", 40, "hr"), ("HSS", 40, "hc"), ("HSS", 40, "eac"),
         ("HDS", 40, "eac"), ("HSS", 40, "entity_prompt_train"), ("none", 0, "entity_prompt_infer")]
WORDS = ("tower church bridge lake dome mountain castle harbour temple market granite red blue twin "
         "spires arches ivy sandy slopes domes").split()


def make_run(out: Path, questions: int = 40, cells: int = 5, seed: int = 0, judges=("rule:v2", "llm:stand-in"),
             rates: list[float] | None = None) -> Path:
    """A run directory as ``eeca experiment`` writes it, with made-up answers and verdicts: cell i
    recognises each question with probability ``rates[i]`` (default 0.1 + 0.05 i), each judge drawn
    apart; its results row is what ``eeca.evaluate.metrics`` computes from the first judge's verdicts."""
    from PIL import Image

    from eeca.evaluate.metrics import compute_metrics

    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    records = []
    for q in range(questions):
        qid = f"q{q:05d}"
        name = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()} {q}"
        ents = rng.sample(WORDS, 3)
        colour = tuple(rng.randrange(256) for _ in range(3))
        img = Image.new("RGB", (224, 160), colour)
        img.paste(tuple(255 - c for c in colour), (rng.randrange(150), rng.randrange(100), 200, 150))
        img.save(out / "images" / f"{qid}.jpg", quality=85)
        records.append({"id": qid, "image": f"{qid}.jpg", "landmark_name": name, "entities": ents,
                        "hierarchical_label": rng.choice(WORDS[:8]),
                        "conversations": [{"from": "human", "value": "<image>\nWhat is this place?"},
                                          {"from": "gpt", "value": f"This is {name}, known for its {', '.join(ents)}."}]})
    (out / "test.json").write_text(json.dumps(records))
    rows = []
    for ci, (sel, size, abl) in enumerate(CELLS[:cells]):
        cid = f"{sel}-{size}-{abl}"
        folder = out / "cells" / cid
        (folder / "generate").mkdir(parents=True, exist_ok=True)
        (folder / "generate" / "generation_config.json").write_text(json.dumps(
            {"config": {"test_json": str(out / "test.json"), "image_root": str(out / "images"), "k": 5}}))
        p = rates[ci] if rates else 0.1 + 0.05 * ci
        gens = []
        for j, judge in enumerate(judges):
            folder_j = folder / ("judge" if j == 0 else f"judge-{j}")
            folder_j.mkdir(exist_ok=True)
            verdicts = []
            for r in records:
                hit = rng.random() < p
                verdicts.append({"id": r["id"], "judge": judge, "status": "ok",
                                 "level": rng.choice(LEVELS[:2]) if hit else rng.choice(LEVELS[2:]),
                                 "explanation": f"named in {int(hit) * rng.randint(1, 5)}/5 answers"})
            if j == 0:
                metrics = compute_metrics(verdicts)
            (folder_j / "judgments.jsonl").write_text("".join(json.dumps(v) + "\n" for v in verdicts))
            (folder_j / "judge_summary.json").write_text(json.dumps({"judge": judge, "shuffle_truth": False}))
        for r in records:
            answers = [f"This is {r['landmark_name'] if rng.random() < p else rng.choice(WORDS).title() + ' Hall'}, "
                       f"a {rng.choice(WORDS)} with {' and '.join(rng.sample(WORDS, 2))}." for _ in range(5)]
            gens.append(json.dumps({"id": r["id"], "question": "What is this place?", "responses": answers}))
        (folder / "generate" / "generations.jsonl").write_text("\n".join(gens) + "\n")
        (folder / "metrics.json").write_text(json.dumps(metrics))
        rows.append({"cell_id": cid, "table": "bench", "selection": sel, "size": size, "ablation": abl,
                     "judge": judges[0], **{k: metrics[k] for k in ("n", "n_failed", *LEVELS, "accuracy", "acc_ci_low",
                                                                    "acc_ci_high", *(f"count_{lv}" for lv in LEVELS))},
                     "cell_dir": f"cells/{cid}"})
    pq.write_table(pa.Table.from_pylist(rows), out / "results.parquet")
    return out


OPEN_PROBE = ("<script>window.addEventListener('load', () => { const d = document.createElement('div');"
              " d.id = 'eeca-open-ms'; d.textContent = performance.now().toFixed(0) + ' '"
              " + document.querySelectorAll('#list .q').length; document.body.appendChild(d); });</script>")


def measure(html: Path, binary: str) -> dict:
    """Size, in-page time to the first page drawn, and Chromium wall time beside an empty page's."""
    empty = html.with_name("empty.html")
    empty.write_text("<!DOCTYPE html><html><body>empty</body></html>")
    t0 = time.perf_counter()
    open_page(binary, empty, "", virtual_time=False)
    base = time.perf_counter() - t0
    t0 = time.perf_counter()
    dom = open_page(binary, html, OPEN_PROBE, virtual_time=False)
    wall = time.perf_counter() - t0
    ms, rows = dom.split('id="eeca-open-ms">', 1)[1].split("<", 1)[0].split()
    return {"bytes": html.stat().st_size, "open_ms": int(ms), "rows_drawn": int(rows),
            "chromium_wall_s": round(wall, 2), "empty_page_wall_s": round(base, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=2500)
    ap.add_argument("--cells", type=int, default=10)
    ap.add_argument("--out", default="/tmp/eeca-browser")
    ap.add_argument("--run", help="an existing run directory instead of a generated one")
    args = ap.parse_args(argv)
    binary = find_chromium()
    if binary is None:
        print("report_browser: no chromium on PATH (apt-get install -y chromium)", file=sys.stderr)
        return 1
    run = Path(args.run) if args.run else make_run(Path(args.out) / "run", args.questions, args.cells)
    report = Path(args.out) / "report"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "eeca", "report", str(run), "--out", str(report)], check=True)
    built = time.perf_counter() - t0
    result = {"run": str(run), "report_s": round(built, 1), **measure(report / "browser.html", binary)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
