"""The LLM judge with 16 concurrent requests vs one at a time, against a local server with 50 ms latency.

The server is the fake OpenAI-compatible one of the tests (tests/fake_openai.py); both runs judge
the same 64 questions with an empty verdict cache. Prints seconds of each and the ratio.

    PYTHONPATH=src python benchmarks/judge_concurrency.py
"""

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from eeca.config import from_dict  # noqa: E402
from eeca.evaluate.judge import JudgeConfig, run_judge  # noqa: E402
from fake_openai import JudgeServer  # noqa: E402

N, LATENCY, CONCURRENCY = 64, 0.05, 16


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, JudgeServer(latency=LATENCY) as server:
        tmp = Path(tmp)
        test = [{"id": f"q{n}", "landmark_name": f"Landmark {n} lvl=known", "image": "x.jpg",
                 "conversations": [{"from": "human", "value": "<image>\nWhich landmark?"}]} for n in range(N)]
        (tmp / "test.json").write_text(json.dumps(test))
        (tmp / "gens.jsonl").write_text("".join(json.dumps({"id": f"q{n}", "responses": ["a"] * 5}) + "\n"
                                                for n in range(N)))
        seconds = {}
        for workers in (1, CONCURRENCY):
            cfg = from_dict(JudgeConfig, {"generations": str(tmp / "gens.jsonl"), "test_json": str(tmp / "test.json"),
                                          "model": server.model, "base_url": server.url, "max_concurrency": workers})
            t0 = time.perf_counter()
            result = run_judge(cfg, tmp / f"out{workers}")
            seconds[workers] = time.perf_counter() - t0
            assert result["summary"]["requests"] == N + 1 and result["metrics"]["n"] == N  # + the health check
    print(f"{N} questions, server latency {LATENCY * 1000:.0f} ms")
    print(f"sequential (1 worker):  {seconds[1]:.2f} s")
    print(f"concurrent ({CONCURRENCY} workers): {seconds[CONCURRENCY]:.2f} s")
    print(f"speedup: {seconds[1] / seconds[CONCURRENCY]:.1f}x")


if __name__ == "__main__":
    main()
