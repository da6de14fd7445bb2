"""The MGLD question set and the seeded choice of one question per sample (paper 3.1, App. B.3).

The paper draws one question at random from a predefined set ("What is the location shown in
the image?" and its paraphrases) for every selected image. The set lives in a versioned data file
(``data/questions_v1.txt``, one question per line, ``#`` comments); the choice for a sample is a
function of ``(seed, sample id)`` only, so it does not depend on the order in which samples are
processed, on how many there are, or on a resumed run.

The "Entity Prompt" baseline of paper Table 2 appends the image's entities to the question; its
wording lives here too (:func:`entity_prompt`), so that the prompt at inference
(``eeca.evaluate``) and at training (``eeca.train``) is the same string.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

DEFAULT_QUESTIONS = "questions_v1"
# Changing this wording changes every entity-prompt generation: it is part of their config hash.
ENTITY_PROMPT = "{question}\nEntities in the image: {entities}."


def load_questions(path: str | Path | None = None) -> list[str]:
    """The questions of ``path`` (or of the packaged set), in file order.

    Blank lines and ``#`` comment lines are skipped; a duplicate question or an empty set is an
    error naming the file and line.
    """
    if path is None:
        source = f"eeca/mgld/data/{DEFAULT_QUESTIONS}.txt"
        text = resources.files("eeca.mgld").joinpath("data", f"{DEFAULT_QUESTIONS}.txt").read_text("utf-8")
    else:
        source = str(path)
        text = Path(path).read_text(encoding="utf-8")
    questions: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        q = line.strip()
        if not q or q.startswith("#"):
            continue
        if q in seen:
            raise ValueError(f"{source}: line {lineno}: duplicate question (first on line {seen[q]}): {q!r}")
        seen[q] = lineno
        questions.append(q)
    if not questions:
        raise ValueError(f"{source}: no questions (every line is blank or a comment)")
    return questions


def pick_question(questions: list[str], seed: int, sample_id: str) -> str:
    """The question for ``sample_id``: uniform over ``questions``, fixed by ``(seed, sample_id)``."""
    digest = hashlib.sha256(f"mgld-question:{seed}:{sample_id}".encode()).digest()
    return questions[int.from_bytes(digest[:8], "big") % len(questions)]


def entity_prompt(question: str, entities: list[str]) -> str:
    """``question`` followed by the image's entities (the Entity Prompt baseline of paper Table 2).

    Training (``entity_prompt: train_and_infer``) and generation both call this, so the model is asked
    at inference exactly as it was taught; without entities the question is unchanged.
    """
    if not entities:
        return question
    return ENTITY_PROMPT.format(question=question, entities=", ".join(entities))
