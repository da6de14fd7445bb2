"""The two annotation tasks of MGLD: their versioned prompts, reply schemas and reply parsing.

Paper App. B.3: stage 2 asks the annotator to answer the sampled question about the image with
the landmark name given as a reference (the answer describes the landmark and where it is);
stage 3 asks for the landmark's distinctive entities (visual and conceptual features) and a
refined hierarchical label, with the original GLDv2 label as a reference. The prompts are ours,
kept as package data (``prompts/stage{2,3}_v1.txt``, ``string.Template`` placeholders); the version
is the file's stem and goes into every cache key together with the prompt text, so editing a
prompt never reuses answers given to the old one.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from eeca.mgld.schema import STAGE2_REPLY, STAGE3_REPLY, check

TaskName = Literal["stage2", "stage3"]
_SCHEMAS = {"stage2": STAGE2_REPLY, "stage3": STAGE3_REPLY}
_FIELDS = {"stage2": {"landmark_name", "question"},
           "stage3": {"landmark_name", "original_label", "question", "answer"}}
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


@dataclass(frozen=True)
class Task:
    """One annotation task: ``name`` (stage2 | stage3), prompt ``version`` and text, reply schema."""

    name: TaskName
    version: str
    template: str

    @property
    def schema(self) -> dict:
        return _SCHEMAS[self.name]

    @property
    def template_sha(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()

    def prompt(self, **fields: str) -> str:
        """The prompt filled with this sample's fields (exactly the task's placeholders)."""
        if set(fields) != _FIELDS[self.name]:
            raise ValueError(f"{self.version}: needs fields {sorted(_FIELDS[self.name])}, got {sorted(fields)}")
        return string.Template(self.template).substitute(fields)

    def parse(self, text: str) -> tuple[dict | None, str | None]:
        """``(reply, None)`` for a valid reply, else ``(None, reason)``.

        Accepts the JSON object alone, inside a Markdown code fence, or as the outermost ``{...}``
        of a longer text (chat models add both). The reply is cleaned after validation: strings
        stripped, the hierarchical label lowercased, entities repeated up to case dropped.
        """
        body = text.strip()
        fenced = _FENCE.match(body)
        if fenced:
            body = fenced.group(1)
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as e:
            start, end = body.find("{"), body.rfind("}")
            try:
                obj = json.loads(body[start:end + 1]) if 0 <= start < end else None
            except json.JSONDecodeError:
                obj = None
            if obj is None:
                return None, f"invalid JSON: {e.msg} at char {e.pos}"
        errors = check(obj, self.schema)
        if not errors:
            obj = _clean(self.name, obj)
            errors = check(obj, self.schema)  # cleaning can empty a field that held only spaces
        if errors:
            return None, "schema: " + "; ".join(f"{p}: {m}" for p, m in errors[:5])
        return obj, None


def _clean(name: str, obj: dict) -> dict:
    if name == "stage2":
        return {"answer": obj["answer"].strip()}
    entities: list[str] = []
    seen: set[str] = set()
    for e in (x.strip() for x in obj["entities"]):
        if e.casefold() not in seen:
            seen.add(e.casefold())
            entities.append(e)
    return {"entities": entities, "hierarchical_label": " ".join(obj["hierarchical_label"].split()).lower()}


def load_task(name: TaskName, prompt: str | Path | None = None) -> Task:
    """The task ``name`` with the packaged v1 prompt, or with the prompt file ``prompt``.

    A prompt file must use exactly the task's placeholders (``$landmark_name``, ``$question`` for
    stage 2; also ``$original_label`` and ``$answer`` for stage 3); the version is its stem.
    """
    if name not in _SCHEMAS:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(_SCHEMAS)})")
    if prompt is None:
        version = f"{name}_v1"
        text = resources.files("eeca.mgld").joinpath("prompts", f"{version}.txt").read_text("utf-8")
        source = f"eeca/mgld/prompts/{version}.txt"
    else:
        version, text, source = Path(prompt).stem, Path(prompt).read_text(encoding="utf-8"), str(prompt)
    found = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(text)
             if m.group("named") or m.group("braced")}
    if found != _FIELDS[name]:
        raise ValueError(f"{source}: a {name} prompt must use the placeholders "
                         f"{sorted('$' + f for f in _FIELDS[name])}, found {sorted('$' + f for f in found)}")
    return Task(name=name, version=version, template=text)
