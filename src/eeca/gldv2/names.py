"""Landmark names from GLDv2's Wikimedia category urls (paper App. B.1, B.2).

GLDv2's ``train_label_to_category.csv`` names every landmark by a Wikimedia Commons category url,
e.g. ``https://commons.wikimedia.org/wiki/Category:Haleakal%C4%81_National_Park``. The paper uses
the landmark's simple name ("Eiffel Tower") as the text CLIP scores an image against, so the name
is the page title after ``Category:``, percent-decoded as UTF-8, with underscores turned into
spaces. Everything else is kept as Wikimedia wrote it: disambiguation parentheses
("Saint Mary's Church (Dublin)"), commas ("Church of St. Nicholas, Kyiv") and any script.

Decoding is strict, since a wrong name is scored as if it were right: a ``%`` not followed by two
hex digits (``%ZZ``), bytes that are not UTF-8, a control character (``%00`` would put a NUL into
the name) and a name with no visible character (only spaces or zero-width characters such as
U+200B) are errors, which ingest counts as skips with the reason.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote_to_bytes

_MARKER = "Category:"
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def landmark_name(category_url: str) -> str:
    """The landmark name in a Wikimedia category url; ``ValueError`` when there is none.

    A query string or fragment after the title is not part of the name. Invalid percent-encoding
    (``%ZZ``, bytes that are not UTF-8), control characters and names without a visible character
    are errors rather than names with stray text in them.
    """
    head, marker, title = category_url.partition(_MARKER)
    if not marker:
        raise ValueError(f"no '{_MARKER}' in category url {category_url!r}")
    title = title.split("#", 1)[0].split("?", 1)[0]
    if bad := _BAD_PERCENT.search(title):
        raise ValueError(f"invalid percent-encoding {title[bad.start():bad.start() + 3]!r} in category url "
                         f"{category_url!r}")
    try:
        title = unquote_to_bytes(title).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"percent-encoding in {category_url!r} is not UTF-8") from None
    name = " ".join(title.replace("_", " ").split())
    if control := next((c for c in name if unicodedata.category(c) == "Cc"), None):
        raise ValueError(f"control character {control!r} in the landmark name of category url {category_url!r}")
    if all(unicodedata.category(c) in ("Cf", "Zs") for c in name):
        raise ValueError(f"empty landmark name (no visible character) in category url {category_url!r}")
    return name
