"""Streaming readers for GLDv2's csv files, with the bad-row policy shared by ingest and download.

A problem that makes the whole file unusable (missing file, empty file, a header without a
required column or with a repeated one, broken quoting, bytes that are not UTF-8) is a
:class:`CsvFormatError` naming file, line and field. A single bad row (wrong number of fields, a
bad value found by the caller) is a counted skip recorded by :class:`SkipLog` as
``file,line,field,reason``. Blank lines carry nothing and are passed over. A final line without its
newline is a file cut in the middle of a write or a download: the row it ends may be cut inside a
field (``landmark_id`` 12345 cut to 1234 is another valid landmark), so it is a counted skip with the
reason "truncated final line", never data.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from eeca.io import InputError


class CsvFormatError(InputError):
    """A csv file cannot be read as GLDv2; names the file, the line and the field."""

    def __init__(self, path: Path, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = path, line, field
        where = str(path) + (f": line {line}" if line else "") + (f": field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


class SkipLog:
    """Rows that were skipped, written as they come to a csv (file, line, field, reason) and counted."""

    HEADER = ("file", "line", "field", "reason")

    def __init__(self, stream: TextIO):
        self._writer = csv.writer(stream, lineterminator="\n")
        self._writer.writerow(self.HEADER)
        self.counts: Counter[str] = Counter()  # file name -> skipped rows

    def add(self, path: Path, line: int, field: str, reason: str) -> None:
        self._writer.writerow((path.name, line, field, reason))
        self.counts[path.name] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def read_rows(path: Path, columns: tuple[str, ...], skips: SkipLog) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line, [value of each of columns])`` for every well-formed row of ``path``.

    ``line`` is the 1-based line number where the row ends (the header is line 1). Columns are
    found by header name, so their order in the file does not matter; extra columns are ignored.
    """
    if not path.is_file():
        raise CsvFormatError(path, None, None, "file not found")
    with open(path, "rb") as f:
        lines = _DecodedLines(f, path)
        reader = csv.reader(lines, strict=True)
        header = _next(reader, path)
        if header is None:
            raise CsvFormatError(path, 1, None, f"empty file; expected a header with {', '.join(columns)}")
        header = [h.strip() for h in header]
        repeated = sorted({h for h in header if header.count(h) > 1})
        if repeated:
            raise CsvFormatError(path, 1, repeated[0], "column appears more than once in the header")
        for c in columns:
            if c not in header:
                raise CsvFormatError(path, 1, c, f"required column missing; header is {','.join(header)!r}")
        index = [header.index(c) for c in columns]
        width = len(header)
        while (row := _next(reader, path)) is not None:
            if not row:
                continue
            if lines.cut:  # the row ends on the final line, which has no newline
                skips.add(path, reader.line_num, "<row>", "truncated final line")
                continue
            if len(row) != width:
                skips.add(path, reader.line_num, "<row>", f"expected {width} fields, got {len(row)}")
                continue
            yield reader.line_num, [row[i] for i in index]


class _DecodedLines:
    """UTF-8 lines of a binary file, decoded one at a time so a bad byte is reported on its own line.

    ``cut`` turns true once the csv reader has taken a final line that does not end in a newline.
    """

    def __init__(self, f, path: Path):
        self._lines = enumerate(f, 1)
        self._path = path
        self.cut = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        lineno, raw = next(self._lines)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CsvFormatError(self._path, lineno, None,
                                 f"not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
        self.cut = not raw.endswith(b"\n")
        return text.removeprefix("\ufeff") if lineno == 1 else text


def _next(reader, path: Path) -> list[str] | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as e:
        raise CsvFormatError(path, reader.line_num, None, f"malformed csv ({e})") from None


def parse_landmark_id(text: str) -> int:
    """A GLDv2 landmark id: a non-negative decimal integer that fits int64."""
    if not (text.isascii() and text.isdigit()) or int(text) >= 2**63:
        raise ValueError(f"landmark_id must be a non-negative integer, got {text!r}")
    return int(text)
