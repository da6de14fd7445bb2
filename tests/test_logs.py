"""eeca.logs: expected library warnings are dropped and said so once; a load report is checked, not hidden."""

import logging

import pytest

import eeca.logs as logs
from train_helpers import save_tiny_llava


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.delenv("EECA_VERBOSE", raising=False)
    monkeypatch.setattr(logs, "_said", set())
    for name, _ in logs.EXPECTED:
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "filters", [])


def test_expected_warnings_are_dropped_and_said_once(fresh, caplog, capsys, monkeypatch):
    logs.quiet_expected_warnings()
    logs.quiet_expected_warnings()  # idempotent: one filter per message
    ds = logging.getLogger("DeepSpeed")
    assert len(ds.filters) == 1
    # caplog listens on DeepSpeed's logger itself: once deepspeed is imported that logger stops propagating
    monkeypatch.setattr(ds, "propagate", False)
    monkeypatch.setattr(ds, "handlers", [caplog.handler])
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            ds.warning("Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.")
        ds.warning("a DeepSpeed warning nobody expects")
    assert [r.getMessage() for r in caplog.records] == ["a DeepSpeed warning nobody expects"]
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "EECA_VERBOSE=1" in said[0]


def test_verbose_keeps_everything(fresh, monkeypatch):
    monkeypatch.setenv("EECA_VERBOSE", "1")
    logs.quiet_expected_warnings()
    assert logging.getLogger("DeepSpeed").filters == []


def test_llava_into_eeca_is_one_line_and_other_gaps_still_warn(fresh, tmp_path, caplog, capsys):
    from eeca.model import EecaForConditionalGeneration
    from eeca.train.recipes import EECA_NEW_MODULES

    ckpt = save_tiny_llava(tmp_path / "llava")
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        logs.from_pretrained(EecaForConditionalGeneration, ckpt, EECA_NEW_MODULES)
    err = capsys.readouterr().err
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage() or r.name == "eeca"]
    lines = [ln for ln in err.splitlines() if "are new" in ln]
    assert len(lines) == 1 and "model.hr_resampler" in lines[0] and "MISSING" not in err
    # the same load with nothing declared new: every missing tensor is named in one warning
    with caplog.at_level(logging.WARNING):
        logs.from_pretrained(EecaForConditionalGeneration, ckpt, ())
    warned = [r.getMessage() for r in caplog.records if r.name == "eeca"]
    assert len(warned) == 1 and "missing tensors: " in warned[0] and "model.hr_resampler.latents" in warned[0]


BAR = ("import time, sys\n{setup}\nfrom tqdm import tqdm\n"
       "for _ in tqdm(range(100), desc='work'):\n    time.sleep(0.01)\n")


def _frames(setup: str, env: dict) -> list[str]:
    import os
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", BAR.format(setup=setup)], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if not k.startswith("TQDM_")} | env, check=True)
    return [f for f in out.stderr.replace("\r", "\n").splitlines() if f.startswith("work")]


def test_progress_bars_in_a_log_file_redraw_rarely_and_end_complete():
    quiet = "from eeca.logs import progress_for_logs\nprogress_for_logs()"
    plain = _frames("", {})
    logged = _frames(quiet, {})
    assert len(plain) > 5  # tqdm's default: ten redraws a second, each a frame in the log
    assert len(logged) <= 2 and "100/100" in logged[-1]
    assert len(_frames(quiet, {"TQDM_MININTERVAL": "0"})) > 5  # the user's setting wins


def test_progress_bars_on_a_terminal_are_left_alone(monkeypatch):
    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    logs.progress_for_logs(Tty())
    import os
    assert "TQDM_MININTERVAL" not in os.environ
