"""Throughput and peak memory of exact streaming S / rank / RSR (eeca.knowledge.rank).

Random L2-normalised float16 embeddings (as ``eeca score`` stores them): M names held in memory,
N images fed shard by shard as ``eeca score`` feeds its embedding shards. For each N, in a fresh
process (so the peak RSS is that run's own):

* ``ranks``: ``streaming_ranks`` over every shard (S and rank; RSR is arithmetic on rank);
* ``scores``: ``streaming_scores``, what ``eeca score`` runs (S, rank and the top-1 name);
* ``matmul``: the same float32 products as plain block matmuls with no rank logic, names already
  converted to float32 on the device (the fastest the products can go);
* ratio = rate / matmul rate (goal >= 0.8); peak RSS of the process after ``ranks`` and ``scores``
  (goal <= 2 GiB and flat in N).

The three are timed in ``--repeats`` interleaved rounds and the best time of each counts, so a
load that changes during the run (a shared machine) hits all three alike; the load average is printed.

Full size (a GPU makes it seconds; about an hour on two CPU cores):
    python benchmarks/streaming_rank.py --n 100000 200000 --m 200000 --device cuda
CPU size that fits a few minutes:
    python benchmarks/streaming_rank.py --n 5000 10000 --m 200000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from eeca.knowledge.rank import streaming_ranks, streaming_scores


def unit_rows(rng: np.random.Generator, n: int, d: int, chunk: int = 8192) -> np.ndarray:
    out = np.empty((n, d), np.float16)
    for s in range(0, n, chunk):  # in chunks: a float32 copy of everything would set the peak RSS
        a = rng.standard_normal((min(chunk, n - s), d), dtype=np.float32)
        out[s:s + len(a)] = a / np.linalg.norm(a, axis=1, keepdims=True)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def child(n: int, m: int, d: int, shard: int, block: int, device: str, repeats: int) -> dict:
    dev = torch.device(device)
    rng = np.random.default_rng(0)
    names = torch.from_numpy(unit_rows(rng, m, d)).to(dev)  # [M, d] float16
    shards = [(unit_rows(np.random.default_rng(1 + k), min(shard, n - s), d), s)
              for k, s in enumerate(range(0, n, shard))]
    gts = np.random.default_rng(99).integers(0, m, size=n)

    def feed():
        for emb, s in shards:
            yield torch.from_numpy(emb).to(dev), torch.from_numpy(gts[s:s + len(emb)])

    checksum = None

    def timed(fn) -> tuple[float, int]:
        sync(dev)
        t0 = time.perf_counter()
        total = 0
        for x, gt in feed():
            total += int(fn(x, names, gt, block_size=block, device=dev)[1].sum())
        sync(dev)
        nonlocal checksum
        assert checksum in (None, total), "ranks differ between runs"
        checksum = total
        return time.perf_counter() - t0, total

    def ranks():
        return timed(streaming_ranks)

    def scores():
        return timed(lambda *a, **k: (None, streaming_scores(*a, **k).rank))

    times = {"ranks": [ranks()[0]], "scores": [scores()[0]]}
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the baseline's own copy
    peak_gpu = torch.cuda.max_memory_allocated() if dev.type == "cuda" else 0

    # the baseline: identical float32 products, no ranking, names pre-converted, TF32 off like stream
    torch.backends.cuda.matmul.allow_tf32 = False
    name_block = max(1, min(m, (1 << 26) // block))
    n32 = [names[j:j + name_block].float() for j in range(0, m, name_block)]

    def matmul():
        sync(dev)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for x, _ in feed():
                for i in range(0, len(x), block):
                    xb = x[i:i + block].float()
                    for nb in n32:
                        xb @ nb.T
        sync(dev)
        return time.perf_counter() - t0, checksum

    # interleaved rounds, best of each: on a shared machine the load changes during a run
    times["matmul"] = []
    for r in range(repeats):
        for name, fn in (("matmul", matmul), ("ranks", ranks), ("scores", scores)):
            if r or name == "matmul":
                t, c = fn()
                assert c == checksum
                times[name].append(t)
    t_matmul, t_ranks, t_scores = (min(times[k]) for k in ("matmul", "ranks", "scores"))
    return {"n": n, "m": m, "d": d, "device": str(dev), "t_ranks_s": t_ranks, "t_scores_s": t_scores,
            "t_matmul_s": t_matmul, "ratio_ranks": t_matmul / t_ranks, "ratio_scores": t_matmul / t_scores,
            "tflops_matmul": 2 * n * m * d / t_matmul / 1e12,
            "peak_rss_gib": peak_rss / 2**30, "peak_gpu_gib": peak_gpu / 2**30,
            "input_gib": (n + m) * d * 2 / 2**30, "rank_checksum": checksum, "repeats": repeats,
            "loadavg_1min": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[5000, 10000], help="image counts (one process each)")
    ap.add_argument("--m", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--shard", type=int, default=50_000, help="images per embedding shard")
    ap.add_argument("--block-size", type=int, default=4096)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best time of each counts")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.n[0], a.m, a.d, a.shard, a.block_size, a.device, a.repeats)))
        return
    rows = []
    for n in a.n:
        cmd = [sys.executable, __file__, "--child", "--n", str(n), "--m", str(a.m), "--d", str(a.d),
               "--shard", str(a.shard), "--block-size", str(a.block_size), "--device", a.device,
               "--repeats", str(a.repeats)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"N={r['n']:>7} M={r['m']} d={r['d']} {r['device']}: matmul {r['t_matmul_s']:.2f}s "
              f"({r['tflops_matmul']:.2f} TFLOP/s); streaming_ranks {r['t_ranks_s']:.2f}s ratio "
              f"{r['ratio_ranks']:.3f}; streaming_scores (+top-1) {r['t_scores_s']:.2f}s ratio "
              f"{r['ratio_scores']:.3f} (goal >= 0.8); peak RSS {r['peak_rss_gib']:.2f} GiB (inputs {r['input_gib']:.2f} GiB; "
              f"goal <= 2), peak GPU {r['peak_gpu_gib']:.2f} GiB; best of {r['repeats']} interleaved rounds, "
              f"load average {r['loadavg_1min']:.1f} on {os.cpu_count()} CPUs", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
