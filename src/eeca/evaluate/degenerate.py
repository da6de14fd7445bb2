"""Degenerate answers: a tested definition of an answer that is not well-formed text.

The paper rates five sampled answers per test question on four recognition levels (section 3.1,
"Evaluation metric"; App. C). That rating presumes the answers are language. A model that babbles
("ThihisshisThihissshissssssshihishiThihiss is known for its black marble facade", "Thisss is a
dome") makes every table after it meaningless: its Known and Unknown rates then measure the
decoder's failure, not what the vision encoder conveys to the LLM, and a lenient judge may still
find a stray place or attribute word in the garble. So every grid carries this check as a control
(DESIGN section 8): the share of degenerate answers per cell, with a goal of at most 2%.

An answer is degenerate when

* ``empty``: it is empty or whitespace only;
* ``repetition``: inside a run of letters, a fragment of 1 to 3 letters is repeated at least 3
  times in a row ("sss", "hihihi", "abcabcabc"; compared case-insensitively). Only letters count:
  digits ("100000"), punctuation ("...", "!!!") and spaces never make a repetition, and a whole
  word that is an upper-case Roman numeral ("III", "XXIII", as in "Pont Alexandre III") or "www"
  is allowed. English and place names pass: "Mississippi" repeats "ss" twice, never three times.
  (Known false positives: German compounds with a tripled letter, "Schifffahrt"; rare enough in
  answers about landmarks to be read in the examples, not special-cased);
* ``unknown_word``: a vocabulary is given and the answer holds a word outside it. Words are
  normalised as the rule judge does (:func:`eeca.evaluate.judge.normalise`: NFKD, accents dropped,
  lower case, split on anything but a-z and 0-9); words made only of digits are not checked. Use a
  vocabulary only for a closed world, such as the synthetic world, where every text the models ever
  saw is known (:func:`word_vocabulary` over the world's texts): there a word nobody wrote is a
  made-up word. On open-world data (GLDv2 with GPT-4o answers) leave it out.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from eeca.evaluate.judge import normalise

REASON_KINDS = ("empty", "repetition", "unknown_word")

_LETTER_RUN = re.compile(r"[^\W\d_]+")  # a maximal run of letters (any script)
_REPEAT = re.compile(r"(.{1,3}?)\1{2,}", re.S)  # the shortest fragment of 1-3 characters, 3 or more times in a row
_ROMAN = re.compile(r"m{0,4}(cm|cd|d?c{0,3})(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})")
_ALLOWED_WORDS = frozenset({"www"})


def _words(text: str) -> list[str]:
    return normalise(text).split()


def word_vocabulary(texts: Iterable[str]) -> frozenset[str]:
    """The set of words (normalised as :func:`eeca.evaluate.judge.normalise`) occurring in ``texts``."""
    vocab: set[str] = set()
    for t in texts:
        vocab.update(_words(t))
    return frozenset(vocab)


def _allowed_run(original: str, whole_word: bool) -> bool:
    if not whole_word:
        return False
    if original.isupper() and _ROMAN.fullmatch(original.lower()) is not None:  # "Louis XIII", not "mmmm"
        return True
    return original.casefold() in _ALLOWED_WORDS


def degenerate_reason(answer: str, vocabulary: frozenset[str] | None = None) -> str | None:
    """None when ``answer`` is well formed, else a short reason that starts with its kind and a colon.

    The kinds are ``empty``, ``repetition`` and ``unknown_word`` (see the module docstring), tried in
    that order; e.g. ``"repetition: 's' x3 in 'thisss'"``, ``"unknown_word: 'thihis'"``.
    """
    if not isinstance(answer, str):
        raise TypeError(f"an answer must be a string, got {type(answer).__name__}")
    if not answer.strip():
        return "empty: no text"
    for m in _LETTER_RUN.finditer(answer):
        run = m.group().casefold()
        # a whole word: the run is bounded by neither a letter nor a digit on either side
        start, end = m.span()
        whole_word = (start == 0 or not answer[start - 1].isalnum()) and (end == len(answer) or not answer[end].isalnum())
        if _allowed_run(m.group(), whole_word):
            continue
        rep = _REPEAT.search(run)
        if rep is not None:
            unit = rep.group(1)
            shown = run if len(run) <= 40 else run[:37] + "..."
            return f"repetition: {unit!r} x{len(rep.group()) // len(unit)} in {shown!r}"
    if vocabulary is not None:
        for w in _words(answer):
            if w not in vocabulary and not w.isdigit():
                return f"unknown_word: {w!r}"
    return None


def degenerate_summary(rows: Iterable[dict], vocabulary: frozenset[str] | None = None, examples: int = 5) -> dict:
    """Count the degenerate answers over generations (rows with ``id`` and ``responses``: list[str]).

    Returns ``{"answers": N, "degenerate": D, "percent": 100 * D / N (0.0 when N = 0),
    "by_reason": {kind: count}, "examples": [{"id", "answer", "reason"}, ...]}``; ``by_reason`` holds
    every kind (zero counts included), ``examples`` the first ``examples`` degenerate answers in row
    order. A row without a list of string responses is a ValueError naming the row.
    """
    n = d = 0
    by_reason: Counter[str] = Counter({k: 0 for k in REASON_KINDS})
    shown: list[dict] = []
    for i, row in enumerate(rows, 1):
        responses = row.get("responses") if isinstance(row, dict) else None
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise ValueError(f"generation {i} (id {row.get('id') if isinstance(row, dict) else None!r}): "
                             "field 'responses': expected a list of strings")
        for answer in responses:
            n += 1
            reason = degenerate_reason(answer, vocabulary)
            if reason is None:
                continue
            d += 1
            by_reason[reason.split(":", 1)[0]] += 1
            if len(shown) < examples:
                shown.append({"id": row.get("id"), "answer": answer, "reason": reason})
    return {"answers": n, "degenerate": d, "percent": 100.0 * d / n if n else 0.0,
            "by_reason": dict(by_reason), "examples": shown}
