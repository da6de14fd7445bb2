"""A small JSON-Schema subset validator and the schemas of MGLD's JSON (DESIGN section 3).

Annotator replies (stage 2 and stage 3 of paper App. B.3) and MGLD / LLaVA records are checked
against schemas written in a subset of JSON Schema, so the same dicts can be sent to servers that
enforce structured output (``response_format`` of type ``json_schema``). The subset: ``type``
(one name or a list), ``properties``, ``required``, ``additionalProperties`` (bool), ``items``,
``minItems``, ``maxItems``, ``minLength``, ``maxLength``, ``minimum``, ``maximum``, ``enum``.
Numbers must be finite (Python's json module accepts NaN and Infinity; JSON does not).

:func:`check` returns every problem as ``(path, message)`` with paths like
``conversations[1].value``, so a caller can name the record and the field.
"""

from __future__ import annotations

import math
from typing import Any

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def check(value: Any, schema: dict, path: str = "") -> list[tuple[str, str]]:
    """Every way ``value`` breaks ``schema``, as ``(path, message)`` pairs (empty when valid)."""
    where = path or "<root>"
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](value) for t in names):
            return [(where, f"expected {' or '.join(names)}, got {_describe(value)}")]
    errors: list[tuple[str, str]] = []
    if isinstance(value, float) and not math.isfinite(value):
        errors.append((where, f"must be a finite number, got {value!r}"))
    if "enum" in schema and value not in schema["enum"]:
        errors.append((where, f"must be one of {schema['enum']}, got {value!r}"))
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append((where, "must not be empty" if schema["minLength"] == 1
                           else f"shorter than {schema['minLength']} characters"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append((where, f"longer than {schema['maxLength']} characters ({len(value)})"))
    if _TYPES["number"](value) and math.isfinite(value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append((where, f"must be >= {schema['minimum']}, got {value!r}"))
        if "maximum" in schema and value > schema["maximum"]:
            errors.append((where, f"must be <= {schema['maximum']}, got {value!r}"))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append((where, f"needs at least {schema['minItems']} items, has {len(value)}"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append((where, f"allows at most {schema['maxItems']} items, has {len(value)}"))
        if "items" in schema:
            for i, item in enumerate(value):
                errors.extend(check(item, schema["items"], f"{path}[{i}]"))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append((_join(path, name), "required field is missing"))
        if schema.get("additionalProperties", True) is False:
            for name in value:
                if name not in props:
                    errors.append((_join(path, name), f"unexpected field (allowed: {', '.join(props)})"))
        for name, sub in props.items():
            if name in value:
                errors.extend(check(value[name], sub, _join(path, name)))
    return errors


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


_TEXT = {"type": "string", "minLength": 1}

# Stage 2 reply: the answer to the sampled question (paper 3.1: description + location).
STAGE2_REPLY = {
    "type": "object",
    "properties": {"answer": {"type": "string", "minLength": 1, "maxLength": 4000}},
    "required": ["answer"],
    "additionalProperties": False,
}

# Stage 3 reply: distinctive entities and a refined hierarchical label (paper 4.1, App. B.3).
STAGE3_REPLY = {
    "type": "object",
    "properties": {
        "entities": {"type": "array", "minItems": 1, "maxItems": 12,
                     "items": {"type": "string", "minLength": 1, "maxLength": 100}},
        "hierarchical_label": {"type": "string", "minLength": 1, "maxLength": 60},
    },
    "required": ["entities", "hierarchical_label"],
    "additionalProperties": False,
}

def _conversations(roles: list[str]) -> dict:
    return {
        "type": "array",
        "minItems": 2,
        "items": {
            "type": "object",
            "properties": {"from": {"type": "string", "enum": roles}, "value": {"type": "string"}},
            "required": ["from", "value"],
        },
    }


# A LLaVA instruction record (the format LLaVA's training scripts read); "image" is optional there
# because LLaVA-665k mixes in text-only samples, and a system turn may open the conversation. The
# MGLD fields training reads (entities, hierarchical_label) are typed where present.
LLAVA_RECORD = {
    "type": "object",
    "properties": {"id": {"type": ["string", "integer"]}, "image": _TEXT,
                   "conversations": _conversations(["system", "human", "gpt"]),
                   "entities": {"type": "array", "items": {"type": "string"}},
                   "hierarchical_label": {"type": "string"}},
    "required": ["id", "conversations"],
}

# An MGLD record, DESIGN section 3: a LLaVA record plus the multi-granularity fields (App. B.4).
MGLD_RECORD = {
    "type": "object",
    "properties": {
        **LLAVA_RECORD["properties"],
        "conversations": _conversations(["human", "gpt"]),
        "id": _TEXT,
        "landmark_id": {"type": "integer", "minimum": 0},
        "landmark_name": _TEXT,
        "entities": {"type": "array", "minItems": 1, "items": _TEXT},
        "hierarchical_label": _TEXT,
        # a cosine similarity; float32 rounding can put it a hair outside [-1, 1]
        "s_gt": {"type": "number", "minimum": -1.001, "maximum": 1.001},
        "rsr": {"type": "number", "minimum": 0.0, "maximum": 1.0},
    },
    "required": ["id", "image", "conversations", "landmark_id", "landmark_name", "entities",
                 "hierarchical_label", "s_gt", "rsr"],
    "additionalProperties": False,
}
