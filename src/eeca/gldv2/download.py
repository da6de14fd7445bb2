"""``eeca gldv2 download``: fetch GLDv2 images from the csv urls into ``train/a/b/c/<id>.jpg`` (App. B.1).

GLDv2 ships urls, not images. This verb hands the urls of the images that are not on disk yet to
img2dataset (the optional ``download`` extra: ``pip install 'eeca[download]'``), which fetches
them with many threads, a User-Agent that carries ``--user_agent_token``, ``--retries`` extra
attempts per url, and the ``X-Robots-Tag`` opt-outs respected. img2dataset writes numbered shards
(``<shard>/<key>.jpg`` plus a ``<shard>.parquet`` listing every url with its status); each finished
shard is then moved into the GLDv2 layout under the id it came from. Images are kept as served:
no resizing, and JPEG bytes are not re-encoded (other formats are converted to JPEG).

Resuming: an image whose file exists is never fetched again, so a rerun after ``kill -9`` or a
failure fetches only what is missing. Shards that a killed run had finished are moved into place
first; a half-written shard is discarded and its urls fetched again. Failed urls are not fatal:
they are written to ``ROOT/download/failed.csv`` (id, url, error) and retried by the next run.
Rows of the csv that are malformed go to ``ROOT/download/skipped.csv`` like in ``gldv2 ingest``.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from eeca.gldv2.csvfiles import SkipLog, read_rows
from eeca.gldv2.ingest import BATCH_ROWS, TRAIN, SeenIds
from eeca.gldv2.paths import check_id, image_path, image_relpath
from eeca.io import atomic_path

PENDING_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string())])


def download_command(root: Path, csv_path: Path | None = None, processes: int = 1, threads: int = 32,
                     retries: int = 2, timeout: int = 10, user_agent_token: str = "eeca", shard_size: int = 10000,
                     limit: int | None = None) -> int:
    """Fetch the images of a GLDv2 csv into ROOT/train/a/b/c/<id>.jpg with img2dataset; reruns fetch only what is missing.

    Args:
        root: dataset folder: images land in ROOT/train/a/b/c/<id>.jpg, logs in ROOT/download/
        csv_path: csv with id and url columns (default: ROOT/train.csv)
        processes: download processes
        threads: download threads per process
        retries: extra attempts for a url that failed
        timeout: seconds to wait for one url
        user_agent_token: added to the User-Agent as "compatible; TOKEN"; Wikimedia asks for a way to
            reach you, e.g. "eeca-you@example.org"
        shard_size: urls per img2dataset shard (a killed run loses at most its unfinished shards)
        limit: fetch at most this many missing images (a trial run)
    """
    try:
        summary = download(root, csv_path, processes=processes, threads=threads, retries=retries, timeout=timeout,
                           user_agent_token=user_agent_token, shard_size=shard_size, limit=limit)
    except ImportError as e:
        print(f"eeca gldv2 download: needs img2dataset ({e}); install it with: pip install 'eeca[download]'",
              file=sys.stderr)
        return 1
    print(summary)
    return 0


def download(root: Path, csv_path: Path | None = None, *, processes: int = 1, threads: int = 32, retries: int = 2,
             timeout: int = 10, user_agent_token: str = "eeca", shard_size: int = 10000,
             limit: int | None = None) -> str:
    """Run the download (see the module docstring); returns the summary line."""
    root = Path(root)
    csv_path = Path(csv_path) if csv_path else root / TRAIN
    state = root / "download"
    staging = state / "staging"
    state.mkdir(parents=True, exist_ok=True)
    resumed, _ = harvest(staging, root)  # shards a killed run finished; its failures are retried below
    shutil.rmtree(staging, ignore_errors=True)
    pending = state / "pending.parquet"
    with atomic_path(state / "skipped.csv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        skips = SkipLog(f)
        listed, present, n_pending = write_pending(csv_path, root, pending, skips, limit)
    fetched = failed = 0
    with atomic_path(state / "failed.csv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        failures = csv.writer(f, lineterminator="\n")
        failures.writerow(("id", "url", "error"))
        if n_pending:
            run_img2dataset(pending, staging, processes=processes, threads=threads, retries=retries,
                            timeout=timeout, user_agent_token=user_agent_token, shard_size=shard_size)
            fetched, failed = harvest(staging, root, failures)
            shutil.rmtree(staging)
    pending.unlink()
    return (f"gldv2 download: {listed} images listed, {present} already on disk ({resumed} from an interrupted run), "
            f"{fetched} fetched, {failed} failed (see {state / 'failed.csv'}), "
            f"{skips.total} csv rows skipped (see {state / 'skipped.csv'})")


def write_pending(csv_path: Path, root: Path, dest: Path, skips: SkipLog,
                  limit: int | None = None) -> tuple[int, int, int]:
    """Write the (id, url) rows of ``csv_path`` whose image is not under ``root`` to ``dest``.

    Returns (valid rows listed, images already present, rows written). Streams the csv.
    """
    root_text = str(root) + os.sep
    seen = SeenIds()
    listed = present = written = 0
    ids: list[str] = []
    urls: list[str] = []
    lines: list[int] = []

    def flush(writer: pq.ParquetWriter) -> None:
        nonlocal written
        keep = seen.add_new(np.array([int(i, 16) for i in ids], dtype=np.uint64))
        for line, image_id, k in zip(lines, ids, keep, strict=True):
            if not k:
                skips.add(csv_path, line, "id", f"id {image_id} repeats an earlier row")
        table = pa.table({"id": ids, "url": urls}, schema=PENDING_SCHEMA).filter(pa.array(keep))
        if limit is not None:
            table = table.slice(0, max(limit - written, 0))
        writer.write_table(table)
        written += table.num_rows
        ids.clear(), urls.clear(), lines.clear()

    with atomic_path(dest) as tmp, pq.ParquetWriter(tmp, PENDING_SCHEMA) as writer, \
            tqdm(desc=f"{csv_path.name}: images on disk", unit=" rows", mininterval=1.0) as bar:
        for line, (image_id, url) in read_rows(csv_path, ("id", "url"), skips):
            bar.update()
            try:
                rel = image_relpath(image_id)
            except ValueError as e:
                skips.add(csv_path, line, "id", str(e))
                continue
            listed += 1
            if os.path.isfile(root_text + rel):
                present += 1
                continue
            ids.append(image_id)
            urls.append(url)
            lines.append(line)
            if len(ids) >= BATCH_ROWS:
                flush(writer)
        flush(writer)
    return listed, present, written


def run_img2dataset(pending: Path, staging: Path, *, processes: int, threads: int, retries: int, timeout: int,
                    user_agent_token: str, shard_size: int) -> None:
    """Fetch every url of ``pending`` (id, url parquet) into img2dataset "files" shards under ``staging``."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import
    from img2dataset import download as img2dataset_download

    img2dataset_download(
        url_list=str(pending), input_format="parquet", url_col="url", save_additional_columns=["id"],
        output_folder=str(staging), output_format="files", encode_format="jpg",
        resize_mode="no", skip_reencode=True,  # originals: decoded once to reject non-images, JPEG kept as is
        processes_count=processes, thread_count=threads, number_sample_per_shard=shard_size,
        retries=retries, timeout=timeout, user_agent_token=user_agent_token,
        extract_exif=False, compute_hash=None, enable_wandb=False, distributor="multiprocessing",
    )


def harvest(staging: Path, root: Path, failures=None) -> tuple[int, int]:
    """Move the images of every finished img2dataset shard in ``staging`` to ``root``'s GLDv2 layout.

    A shard is finished once img2dataset wrote its ``<shard>_stats.json`` (after its parquet).
    Failed urls are written to the csv writer ``failures`` (id, url, error) when given. Safe to
    repeat after a kill: an image already moved is not looked for again. Returns (moved, failed).
    """
    moved = failed = 0
    for stats in tqdm(sorted(staging.glob("*_stats.json")), desc="moving shards", unit=" shard", disable=None):
        shard = stats.name.removesuffix("_stats.json")
        rows = pq.read_table(staging / f"{shard}.parquet", columns=["id", "url", "key", "status", "error_message"])
        for row in rows.to_pylist():
            dest = image_path(root, check_id(row["id"]))
            if row["status"] == "success":
                src = staging / shard / f"{row['key']}.jpg"
                dest.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):  # moved before a kill
                    os.replace(src, dest)
                moved += 1
            else:
                failed += 1
                if failures is not None:
                    failures.writerow((row["id"], row["url"], f"{row['status']}: {row['error_message']}"))
    return moved, failed
