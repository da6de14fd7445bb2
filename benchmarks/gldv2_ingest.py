"""Memory and speed of ``eeca gldv2 ingest`` on a generated GLDv2-sized ``train.csv``.

Generates ``--rows`` images (default 4.1M, GLDv2's train set) of ``rows / 20`` landmarks (205k at
full size) with a long tail, the category and hierarchical csvs, and no image files (every image is
``missing``: the stat of each path is still made). Then, each in its own process so peak RSS is its
own:

* ingest at the full size and at a tenth of the rows over the same landmarks: rows/s and peak RSS.
  The landmark table is held in memory (it is an output), so a flat RSS across the two sizes is
  what shows that the images are streamed;
* baseline 1: ``pyarrow.csv.read_csv`` of the whole train.csv (what a load-everything ingest costs);
* baseline 2: a bare ``csv.reader`` pass over train.csv (the floor of a row-by-row Python reader).

Run: ``python benchmarks/gldv2_ingest.py [--rows N] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"

MEASURE = textwrap.dedent("""
    import resource, sys, time
    t = time.perf_counter()
    {body}
    print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
""")
BODIES = {
    "ingest": "from eeca.gldv2.ingest import ingest; ingest(sys.argv[1], sys.argv[2])",
    "pyarrow read_csv (all in memory)": "import pyarrow.csv as c; t2 = c.read_csv(sys.argv[1] + '/train.csv')",
    "csv.reader pass (no checks)": ("import csv\nwith open(sys.argv[1] + '/train.csv', newline='') as f:\n"
                                    "    n = sum(1 for _ in csv.reader(f))"),
}


def generate(root: Path, rows: int, n_landmarks: int, seed: int = 0) -> None:
    """train.csv with ``rows`` images over ``n_landmarks`` landmarks (Zipf-like tail), and the two category csvs."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    weights = 1.0 / np.arange(1, n_landmarks + 1) ** 0.9
    landmarks = rng.choice(n_landmarks, size=rows, p=weights / weights.sum())
    ids = rng.integers(0, 2**63, size=rows, dtype=np.int64)
    with open(root / "train.csv", "w", encoding="utf-8") as f:
        f.write("id,url,landmark_id\n")
        for start in range(0, rows, 100_000):
            f.writelines(f"{i:016x},https://upload.wikimedia.org/wikipedia/commons/{i % 16:x}/{i:016x}.jpg,{lm}\n"
                         for i, lm in zip(ids[start:start + 100_000].tolist(), landmarks[start:start + 100_000].tolist(),
                                          strict=True))
    with open(root / "train_label_to_category.csv", "w", encoding="utf-8") as f:
        f.write("landmark_id,category\n")
        f.writelines(f"{lm},https://commons.wikimedia.org/wiki/Category:Landmark_{lm}_(Town_{lm % 97})\n"
                     for lm in range(n_landmarks))
    with open(root / "train_label_to_hierarchical.csv", "w", encoding="utf-8") as f:
        f.write("landmark_id,category,supercategory,hierarchical_label,natural_or_human_made\n")
        f.writelines(f"{lm},https://commons.wikimedia.org/wiki/Category:Landmark_{lm},building,tower,human-made\n"
                     for lm in range(0, n_landmarks, 2))  # half of the landmarks lack a hierarchical row


def measure(name: str, root: Path, out: Path) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-c", MEASURE.format(body=BODIES[name]), str(root), str(out)],
                          capture_output=True, text=True, env=env, check=True)
    seconds, rss_mb = map(float, proc.stdout.split()[-2:])
    return seconds, rss_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4_100_000)
    ap.add_argument("--keep", type=Path, help="generate into this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        results = {}
        for rows in (args.rows, args.rows // 10):
            t = time.perf_counter()
            generate(base / f"gldv2-{rows}", rows, n_landmarks=max(args.rows // 20, 1))
            print(f"generated {rows:,} rows in {time.perf_counter() - t:.0f} s", flush=True)
            names = list(BODIES) if rows == args.rows else ["ingest"]
            for name in names:
                seconds, rss = measure(name, base / f"gldv2-{rows}", base / f"out-{rows}")
                results[name, rows] = (seconds, rss)
                print(f"{name:34s} {rows:>10,} rows  {rows / seconds:>10,.0f} rows/s  {seconds:7.1f} s  "
                      f"peak RSS {rss:7.0f} MB", flush=True)
        full, tenth = results["ingest", args.rows], results["ingest", args.rows // 10]
        everything = results["pyarrow read_csv (all in memory)", args.rows]
        floor = results["csv.reader pass (no checks)", args.rows]
        print(f"ingest peak RSS at {args.rows:,} / at {args.rows // 10:,} rows (same landmarks): "
              f"{full[1] / tenth[1]:.2f}x")
        print(f"ingest peak RSS / read_csv of the whole file: {full[1] / everything[1]:.2f}x")
        print(f"ingest time / bare csv.reader pass: {full[0] / floor[0]:.1f}x")


if __name__ == "__main__":
    main()
