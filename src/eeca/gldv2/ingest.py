"""``eeca gldv2 ingest``: GLDv2's csv files and image folder -> ``landmarks.parquet`` and ``images.parquet``.

Paper App. B.1: the whole GLDv2 train set (``train.csv``, ``train_label_to_category.csv``,
``train_label_to_hierarchical.csv``; 4.1M images of 203k landmarks) is the pool everything else
draws from. This stage reads it once, validates it, derives each landmark's name from its
Wikimedia category url (:mod:`eeca.gldv2.names`), resolves every image file, and writes the two
tables of DESIGN section 3.

``train.csv`` is streamed: rows are validated one at a time and written in batches through a
parquet writer, so memory does not grow with the file except for the duplicate-id check, which
keeps every id seen so far as a sorted ``uint64`` (8 bytes per row, 33 MB at 4.1M rows).

Bad input (see :mod:`eeca.gldv2.csvfiles` for whole-file errors). Counted skips, each a row of
``<out>/skipped.csv`` (in every file, a final line without its newline is one: "truncated final line"):

* ``train.csv``: wrong number of fields; an id that is not 16 lowercase hex characters; a
  landmark_id that is not a non-negative integer; a landmark_id with no row in
  ``train_label_to_category.csv``; a repeated id (the first row with it is kept).
* ``train_label_to_category.csv``: a bad landmark_id; a repeated landmark_id (the first is kept);
  a url from which no name can be derived (:mod:`eeca.gldv2.names`: strict decoding). Images of such a landmark are then skipped too.
* ``train_label_to_hierarchical.csv``: a bad or unknown landmark_id; a repeated landmark_id. A
  landmark without a hierarchical row keeps null ``supercategory``, ``hierarchical_label`` and
  ``natural_or_human_made``. The hierarchical file's own ``category`` column is not used.
* ``train_clean.csv`` (optional; GLDv2's cleaned subset): a bad or unknown landmark_id; an image
  id that is malformed or not in ``train.csv``. Its membership is written to ``clean.parquet``
  (id, landmark_id) rather than added to the two contract tables.

A landmark with a category row but no images is kept with ``n_images`` 0 (its name still
competes when images are scored against all names). ``status`` is ``ok`` when the image file
exists and ``missing`` otherwise; decoding images is left to the stages that read them. A url is
kept as written, even empty: ingest needs the file, not the url (``gldv2 download`` reports a row
without a usable url as failed).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from eeca.gldv2.csvfiles import SkipLog, parse_landmark_id, read_rows
from eeca.gldv2.names import landmark_name
from eeca.gldv2.paths import check_id, image_relpath
from eeca.io import atomic_path, run_lock

TRAIN = "train.csv"
CATEGORY = "train_label_to_category.csv"
HIERARCHICAL = "train_label_to_hierarchical.csv"
CLEAN = "train_clean.csv"

IMAGES_SCHEMA = pa.schema([("id", pa.string()), ("landmark_id", pa.int64()), ("url", pa.string()),
                           ("path", pa.string()), ("status", pa.string())])
LANDMARKS_SCHEMA = pa.schema([("landmark_id", pa.int64()), ("name", pa.string()), ("category_url", pa.string()),
                              ("supercategory", pa.string()), ("hierarchical_label", pa.string()),
                              ("natural_or_human_made", pa.string()), ("n_images", pa.int64())])
CLEAN_SCHEMA = pa.schema([("id", pa.string()), ("landmark_id", pa.int64())])

BATCH_ROWS = 16384


def ingest_command(root: Path, out: Path) -> int:
    """Read GLDv2's csv files under ROOT, check them and their images, write landmarks.parquet and images.parquet.

    Args:
        root: folder with train.csv, train_label_to_category.csv, train_label_to_hierarchical.csv,
            optionally train_clean.csv, and the images at train/a/b/c/<id>.jpg
        out: output folder for landmarks.parquet, images.parquet, skipped.csv (and clean.parquet)
    """
    with run_lock(out, "gldv2 ingest"):
        summary = ingest(root, out)
    print(summary.line(out))
    return 0


@dataclass(frozen=True)
class IngestSummary:
    """What an ingest wrote and skipped; ``line`` is the verb's summary line."""

    n_images: Counter[int]  # landmark_id -> images kept, for every landmark (0 included)
    missing: int  # images whose file is not there
    skipped: Counter[str]  # csv file name -> rows skipped
    clean: int | None  # rows of clean.parquet; None without train_clean.csv

    def share_at_most(self, k: int) -> float:
        counts = self.n_images.values()
        return sum(c <= k for c in counts) / max(len(counts), 1)

    def line(self, out: Path) -> str:
        images = sum(self.n_images.values())
        skipped = ", ".join(f"{n} in {name}" for name, n in sorted(self.skipped.items())) or "none"
        clean = "" if self.clean is None else f"; {self.clean} clean images"
        return (f"gldv2 ingest: {len(self.n_images)} landmarks, {images} images ({self.missing} missing); "
                f"landmarks with <= 5 images: {self.share_at_most(5):.1%}, <= 10: {self.share_at_most(10):.1%}"
                f"{clean}; skipped rows: {skipped} (see {out / 'skipped.csv'})")


def ingest(root: Path, out: Path) -> IngestSummary:
    """Run the ingest (see the module docstring); returns its summary."""
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the outputs are renamed into place one after the other only once all of them are complete, so
    # an error or a kill during the run leaves the previous run's files
    has_clean = (root / CLEAN).exists()
    with contextlib.ExitStack() as outputs:
        names = ["skipped.csv", "images.parquet", "landmarks.parquet"] + ["clean.parquet"] * has_clean
        tmp = {name: outputs.enter_context(atomic_path(out / name)) for name in names}
        f = outputs.enter_context(open(tmp["skipped.csv"], "w", encoding="utf-8", newline=""))
        skips = SkipLog(f)
        categories = _read_categories(root / CATEGORY, skips)
        hierarchy = _read_hierarchy(root / HIERARCHICAL, categories, skips)
        seen = SeenIds()
        n_images, missing = _write_images(root, tmp["images.parquet"], categories, seen, skips)
        clean = _write_clean(root / CLEAN, tmp["clean.parquet"], categories, seen, skips) if has_clean else None
        ids = sorted(categories)
        empty = (None, None, None)
        pq.write_table(pa.table({
            "landmark_id": ids,
            "name": [categories[i][1] for i in ids],
            "category_url": [categories[i][0] for i in ids],
            "supercategory": [hierarchy.get(i, empty)[0] for i in ids],
            "hierarchical_label": [hierarchy.get(i, empty)[1] for i in ids],
            "natural_or_human_made": [hierarchy.get(i, empty)[2] for i in ids],
            "n_images": [n_images.get(i, 0) for i in ids],
        }, schema=LANDMARKS_SCHEMA), tmp["landmarks.parquet"], compression="zstd")
        f.close()
    if not has_clean:
        (out / "clean.parquet").unlink(missing_ok=True)  # from an earlier run over other csvs: stale
    counts = Counter({i: n_images.get(i, 0) for i in ids})
    return IngestSummary(counts, missing, skips.counts, clean)


def _read_categories(path: Path, skips: SkipLog) -> dict[int, tuple[str, str]]:
    """landmark_id -> (category url, name)."""
    categories: dict[int, tuple[str, str]] = {}
    for line, (lm_text, url) in read_rows(path, ("landmark_id", "category"), skips):
        try:
            lm = parse_landmark_id(lm_text)
        except ValueError as e:
            skips.add(path, line, "landmark_id", str(e))
            continue
        if lm in categories:
            skips.add(path, line, "landmark_id", f"landmark_id {lm} repeats an earlier row")
            continue
        try:
            categories[lm] = (url, landmark_name(url))
        except ValueError as e:
            skips.add(path, line, "category", str(e))
    return categories


def _read_hierarchy(path: Path, categories: dict, skips: SkipLog) -> dict[int, tuple[str, str, str]]:
    """landmark_id -> (supercategory, hierarchical_label, natural_or_human_made)."""
    hierarchy: dict[int, tuple[str, str, str]] = {}
    columns = ("landmark_id", "supercategory", "hierarchical_label", "natural_or_human_made")
    resolve = landmark_resolver(categories)
    for line, (lm_text, *values) in read_rows(path, columns, skips):
        try:
            lm = resolve(lm_text)
        except ValueError as e:
            skips.add(path, line, "landmark_id", str(e))
            continue
        if lm in hierarchy:
            skips.add(path, line, "landmark_id", f"landmark_id {lm} repeats an earlier row")
        else:
            hierarchy[lm] = tuple(v or None for v in values)
    return hierarchy


def _write_images(root: Path, dest: Path, categories: dict, seen: SeenIds,
                  skips: SkipLog) -> tuple[Counter[int], int]:
    """Stream train.csv into ``dest``; returns (images per landmark, missing files)."""
    path = root / TRAIN
    root_text = str(root) + os.sep
    n_images: Counter[int] = Counter()
    missing = 0
    batch: dict[str, list] = {k: [] for k in ("line", "id", "key", "landmark_id", "url", "path", "status")}
    resolve = landmark_resolver(categories)

    def flush(writer: pq.ParquetWriter) -> None:
        nonlocal missing
        keep = seen.add_new(np.array(batch["key"], dtype=np.uint64))
        for line, image_id in zip(np.array(batch["line"])[~keep], np.array(batch["id"], dtype=object)[~keep],
                                  strict=True):
            skips.add(path, int(line), "id", f"id {image_id} repeats an earlier row")
        table = pa.table({k: batch[k] for k in IMAGES_SCHEMA.names}, schema=IMAGES_SCHEMA).filter(pa.array(keep))
        writer.write_table(table)
        n_images.update(table.column("landmark_id").to_pylist())
        missing += table.num_rows - sum(s == "ok" for s in table.column("status").to_pylist())
        for v in batch.values():
            v.clear()

    with pq.ParquetWriter(dest, IMAGES_SCHEMA, compression="zstd") as writer, tqdm(desc=TRAIN, unit=" rows", mininterval=1.0) as bar:
        for line, (image_id, url, lm_text) in read_rows(path, ("id", "url", "landmark_id"), skips):
            try:
                rel = image_relpath(image_id)
            except ValueError as e:
                skips.add(path, line, "id", str(e))
                continue
            try:
                lm = resolve(lm_text)
            except ValueError as e:
                skips.add(path, line, "landmark_id", str(e))
                continue
            batch["line"].append(line)
            batch["id"].append(image_id)
            batch["key"].append(int(image_id, 16))
            batch["landmark_id"].append(lm)
            batch["url"].append(url)
            batch["path"].append(rel)
            batch["status"].append("ok" if os.path.isfile(root_text + rel) else "missing")
            if len(batch["id"]) >= BATCH_ROWS:
                bar.update(len(batch["id"]))
                flush(writer)
        bar.update(len(batch["id"]))
        flush(writer)
    return n_images, missing


def _write_clean(path: Path, dest: Path, categories: dict, seen: SeenIds, skips: SkipLog) -> int:
    """``train_clean.csv`` (landmark_id, space-separated image ids) -> ``dest``; returns its rows."""
    ids: list[str] = []
    landmarks: list[int] = []
    with pq.ParquetWriter(dest, CLEAN_SCHEMA, compression="zstd") as writer:
        resolve = landmark_resolver(categories)
        for line, (lm_text, images) in read_rows(path, ("landmark_id", "images"), skips):
            try:
                lm = resolve(lm_text)
            except ValueError as e:
                skips.add(path, line, "landmark_id", str(e))
                continue
            for image_id in images.split():
                try:
                    check_id(image_id)
                except ValueError as e:
                    skips.add(path, line, "images", str(e))
                    continue
                if not seen.contains(int(image_id, 16)):
                    skips.add(path, line, "images", f"id {image_id} is not an image of {TRAIN}")
                    continue
                ids.append(image_id)
                landmarks.append(lm)
            if len(ids) >= BATCH_ROWS:
                writer.write_table(pa.table({"id": ids, "landmark_id": landmarks}, schema=CLEAN_SCHEMA))
                ids, landmarks = [], []
        writer.write_table(pa.table({"id": ids, "landmark_id": landmarks}, schema=CLEAN_SCHEMA))
    return pq.ParquetFile(dest).metadata.num_rows


def landmark_resolver(categories: dict[int, tuple[str, str]]):
    """A function from landmark_id text to a landmark of ``categories``; ``ValueError`` says why not.

    The ids as written are looked up first (train.csv repeats each landmark's id many times).
    """
    by_text = {str(lm): lm for lm in categories}

    def resolve(text: str) -> int:
        lm = by_text.get(text)
        if lm is not None:
            return lm
        lm = parse_landmark_id(text)
        if lm not in categories:
            raise ValueError(f"landmark_id {lm} has no usable row in {CATEGORY}")
        return lm

    return resolve


class SeenIds:
    """Exact set of 64-bit image ids at 8 bytes each: one sorted ``uint64`` array, merged per batch."""

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)

    def contains(self, key: int) -> bool:
        i = int(np.searchsorted(self._sorted, np.uint64(key)))
        return i < len(self._sorted) and int(self._sorted[i]) == key

    def add_new(self, keys: np.ndarray) -> np.ndarray:
        """Add ``keys`` [n] uint64; returns a bool mask [n], False for a key seen before (in an
        earlier batch or earlier in this one)."""
        keep = np.zeros(len(keys), dtype=bool)
        keep[np.unique(keys, return_index=True)[1]] = True
        if len(self._sorted):
            pos = np.minimum(np.searchsorted(self._sorted, keys), len(self._sorted) - 1)
            keep &= self._sorted[pos] != keys
        merged = np.concatenate([self._sorted, keys[keep]])
        merged.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
        self._sorted = merged
        return keep
