"""Quiet, useful logs: the library warnings a run is known to raise are dropped, and said so once.

Expected on every CPU run or every LLaVA -> EECA load, and so dropped:

* DeepSpeed's "Setting accelerator to CPU ... unable to detect it" when no CUDA device exists;
* transformers' "You are using a model of type `llava` to instantiate a model of type `eeca`": stage 3
  starts EECA (paper section 4.2) from a stage-2 LLaVA checkpoint on purpose;
* transformers' per-tensor load report, but only through :func:`from_pretrained`, which checks the
  report itself: tensors of the modules EECA adds to LLaVA being new is one line, anything else
  (other missing tensors, unexpected or mismatched ones) is still a warning naming every tensor.

Anything else a library logs still shows. ``EECA_VERBOSE=1`` keeps every warning.

Progress bars (tqdm, ours and the libraries') redraw ten times a second, which on a terminal is a
moving line and in a log file is thousands of carriage-return frames; when stderr is not a terminal
they redraw every :data:`LOG_BAR_INTERVAL_S` seconds instead, and always show their final state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

# (logger, text the dropped message contains)
EXPECTED: tuple[tuple[str, str], ...] = (
    ("DeepSpeed", "Setting accelerator to CPU"),
    ("transformers.configuration_utils", "model of type `llava` to instantiate a model of type `eeca`"),
)
LOAD_REPORT = ("transformers.modeling_utils", "LOAD REPORT")

LOG_BAR_INTERVAL_S = 30

_said: set[str] = set()


class _Drop(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.text not in record.getMessage():
            return True
        _say_once("eeca: library warnings expected on this run are not shown (eeca.logs lists them); "
                  "EECA_VERBOSE=1 shows them")
        return False


def quiet_expected_warnings() -> None:
    """Drop the :data:`EXPECTED` warnings from here on (idempotent; none with EECA_VERBOSE=1)."""
    if os.environ.get("EECA_VERBOSE") == "1":
        return
    for name, text in EXPECTED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) and f.text == text for f in logger.filters):
            logger.addFilter(_Drop(text))


def progress_for_logs(stream=None) -> None:
    """Slow every progress bar to one redraw per :data:`LOG_BAR_INTERVAL_S` when ``stream`` (stderr)
    is not a terminal. Call before tqdm is imported (it reads ``TQDM_*`` at import); a
    ``TQDM_MININTERVAL`` the user set wins."""
    stream = sys.stderr if stream is None else stream
    if not (hasattr(stream, "isatty") and stream.isatty()):
        os.environ.setdefault("TQDM_MININTERVAL", str(LOG_BAR_INTERVAL_S))


@contextlib.contextmanager
def _without(name: str, text: str):
    drop = logging.Filter()
    drop.filter = lambda record: text not in record.getMessage()  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def from_pretrained(cls, path, expected_new: tuple[str, ...] = (), **kwargs):
    """``cls.from_pretrained(path, **kwargs)`` with its load report checked here.

    Tensors whose names start with one of ``expected_new`` may be missing from the checkpoint (they
    are initialised, as when a LLaVA checkpoint becomes EECA): that is one line. Any other missing,
    unexpected or mismatched tensor is a warning that names them all.
    """
    quiet_expected_warnings()
    if os.environ.get("EECA_VERBOSE") == "1":
        return cls.from_pretrained(path, **kwargs)
    with _without(*LOAD_REPORT):
        model, info = cls.from_pretrained(path, output_loading_info=True, **kwargs)
    missing = sorted(info.get("missing_keys", ()))
    new = [k for k in missing if k.startswith(expected_new)]
    other = {"missing": [k for k in missing if k not in new], "unexpected": sorted(info.get("unexpected_keys", ())),
             "mismatched": sorted(str(m) for m in info.get("mismatched_keys", ()))}
    if new:
        modules = sorted({p for p in expected_new if any(k.startswith(p) for k in new)})
        print(f"{type(model).__name__}: {len(new)} tensors of {', '.join(p.rstrip('.') for p in modules)} are new "
              f"(initialised; {path} does not have them yet, as expected)", file=sys.stderr)
    if any(other.values()):
        logging.getLogger("eeca").warning(
            "%s from %s: %s", type(model).__name__, path,
            "; ".join(f"{kind} tensors: {', '.join(keys)}" for kind, keys in other.items() if keys))
    return model


def _say_once(line: str) -> None:
    if line not in _said:
        _said.add(line)
        print(line, file=sys.stderr)
