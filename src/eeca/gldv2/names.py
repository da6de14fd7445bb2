"""Landmark names from GLDv2's Wikimedia category urls (paper App. B.1, B.2).

GLDv2's ``train_label_to_category.csv`` names every landmark by a Wikimedia Commons category url,
e.g. ``https://commons.wikimedia.org/wiki/Category:Haleakal%C4%81_National_Park``. The paper uses
the landmark's simple name ("Eiffel Tower") as the text CLIP scores an image against, so the name
is the page title after ``Category:``, percent-decoded as UTF-8, with underscores turned into
spaces. Everything else is kept as Wikimedia wrote it: disambiguation parentheses
("Saint Mary's Church (Dublin)"), commas ("Church of St. Nicholas, Kyiv") and any script.
"""

from __future__ import annotations

from urllib.parse import unquote

_MARKER = "Category:"


def landmark_name(category_url: str) -> str:
    """The landmark name in a Wikimedia category url; ``ValueError`` when there is none.

    A query string or fragment after the title is not part of the name. Invalid percent-encoding
    (bytes that are not UTF-8) is an error rather than a name with replacement characters.
    """
    head, marker, title = category_url.partition(_MARKER)
    if not marker:
        raise ValueError(f"no '{_MARKER}' in category url {category_url!r}")
    title = title.split("#", 1)[0].split("?", 1)[0]
    try:
        title = unquote(title, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"percent-encoding in {category_url!r} is not UTF-8") from None
    name = " ".join(title.replace("_", " ").split())
    if not name:
        raise ValueError(f"empty landmark name in category url {category_url!r}")
    return name
