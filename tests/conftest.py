"""Shared test helpers: run the CLI as a subprocess of this checkout, and the slow marker."""

import os
import subprocess
import sys

import pytest

from cli_env import eeca_env

# One intra-op thread for torch here and in every `python -m eeca` a test starts (they inherit it):
# the tests run tiny tensors, and on a shared 2-core machine a second OpenMP thread spins against
# other jobs and makes them 10-40x slower (a 1 s tiny-LLM training test took 70 s). Set
# OMP_NUM_THREADS to choose otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("EECA_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with `make test-slow` (EECA_SLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def run_eeca():
    """Run ``python -m eeca ARGS`` from this checkout; returns the CompletedProcess."""

    def run(*args, check=True, env=None, timeout=600, **kw):
        proc = subprocess.run([sys.executable, "-m", "eeca", *map(str, args)], capture_output=True,
                              text=True, env=eeca_env(**(env or {})), timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"eeca {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    return run
