"""Writers of small GLDv2-format folders for the gldv2 tests (same csv layouts as the real files)."""

from __future__ import annotations

import csv
from pathlib import Path

CATEGORY_HEADER = ("landmark_id", "category")
HIERARCHICAL_HEADER = ("landmark_id", "category", "supercategory", "hierarchical_label", "natural_or_human_made")


def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return path


def category_url(title: str) -> str:
    return f"https://commons.wikimedia.org/wiki/Category:{title}"


def make_root(root: Path, images: list[tuple[str, int]], titles: dict[int, str],
              hierarchy: dict[int, tuple[str, str, str]] | None = None, present: set[str] | None = None,
              clean: dict[int, list[str]] | None = None) -> Path:
    """A GLDv2 root: ``images`` = [(id, landmark_id)], ``titles`` = landmark_id -> url-encoded title,
    ``present`` = ids whose image file exists (all when None)."""
    root.mkdir(parents=True, exist_ok=True)
    write_csv(root / "train.csv", ("id", "url", "landmark_id"),
              [(i, f"https://upload.wikimedia.org/x/{i}.jpg", lm) for i, lm in images])
    write_csv(root / "train_label_to_category.csv", CATEGORY_HEADER,
              [(lm, category_url(t)) for lm, t in titles.items()])
    write_csv(root / "train_label_to_hierarchical.csv", HIERARCHICAL_HEADER,
              [(lm, category_url(titles[lm]), *h) for lm, h in (hierarchy or {}).items()])
    if clean is not None:
        write_csv(root / "train_clean.csv", ("landmark_id", "images"), [(lm, " ".join(ids)) for lm, ids in clean.items()])
    for i, _ in images:
        if present is None or i in present:
            p = root / "train" / i[0] / i[1] / i[2] / f"{i}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"\xff\xd8\xff\xd9")
    return root
