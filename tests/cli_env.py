"""The environment a test gives ``python -m eeca`` so that it runs this checkout's code offline."""

import os
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def eeca_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(extra)
    return env
