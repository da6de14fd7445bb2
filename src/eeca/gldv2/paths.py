"""GLDv2 image ids and where their files live: ``train/a/b/c/<id>.jpg`` (paper App. B.1).

An image id is 16 lowercase hexadecimal characters; its file sits three directory levels down,
one level per leading character. Ids are validated before they become paths, so a csv row cannot
point outside the image root (no ``..``, no separators, no absolute paths).
"""

from __future__ import annotations

import re
from pathlib import Path

_ID = re.compile(r"[0-9a-f]{16}")


def check_id(image_id: str) -> str:
    """Return ``image_id`` if it is 16 lowercase hex characters, else raise ``ValueError``."""
    if not isinstance(image_id, str) or _ID.fullmatch(image_id) is None:
        raise ValueError(f"image id must be 16 lowercase hex characters, got {image_id!r}")
    return image_id


def image_relpath(image_id: str) -> str:
    """``train/a/b/c/<id>.jpg`` for id ``abc...``, relative to the dataset root (POSIX separators)."""
    check_id(image_id)
    return f"train/{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"


def image_path(root: Path, image_id: str) -> Path:
    """The image file of ``image_id`` under ``root``."""
    return Path(root) / image_relpath(image_id)
