"""Fuzz of GLDv2's csv reader and name parser: clear error or counted skip, never a traceback, never a wrong row.

A seeded generator writes well-formed train.csv-like files (LF or CRLF, optional BOM, quoted fields,
non-Latin text) and breaks them: cut at a random byte, re-encoded in another encoding, random bytes
flipped or inserted, or replaced by random bytes. Over every input :func:`read_rows` either raises
:class:`CsvFormatError` naming the file, or yields rows; a row read from a cut or re-encoded file is
always the row written at that line, and every row is accounted for (yielded, skipped, or after the
error).
"""

import io
import random
import unicodedata

from eeca.gldv2.csvfiles import CsvFormatError, SkipLog, parse_landmark_id, read_rows
from eeca.gldv2.names import landmark_name

COLUMNS = ("id", "url", "landmark_id")
TEXTS = ["a", "Tour_Eiffel", "Sagrada_Família", "清水寺", "Храм", "a,b", 'say "hi"', "x y", "%C4%81"]
N_INPUTS = 3000


def _valid(rng: random.Random) -> tuple[bytes, dict[int, list[str]]]:
    """A well-formed file and the rows it holds, by the line each row ends on."""
    eol = rng.choice(["\n", "\r\n"])
    rows, lines, line = {}, [], 1
    header = list(COLUMNS) + (["extra"] if rng.random() < 0.3 else [])
    lines.append(",".join(header))
    for _ in range(rng.randint(0, 8)):
        row = [f"{rng.getrandbits(64):016x}", f"https://x/{rng.choice(TEXTS)}.jpg", str(rng.randint(0, 10**6))]
        row += ["e"] * (len(header) - 3)
        cells = [f'"{c.replace(chr(34), 2 * chr(34))}"' if ("," in c or '"' in c or rng.random() < 0.2) else c
                 for c in row]
        line += 1
        lines.append(",".join(cells))
        rows[line] = row[:3]
    text = eol.join(lines) + eol
    return (("\ufeff" if rng.random() < 0.2 else "") + text).encode(), rows


def _broken(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    kind = rng.choice(["cut", "cut", "encoding", "flip", "insert", "random"])
    if kind == "cut":
        return kind, data[:rng.randint(0, len(data))]
    if kind == "encoding":
        text = data.decode("utf-8")
        try:
            return kind, text.encode(rng.choice(["utf-16", "utf-32", "latin-1", "cp1252"]))
        except UnicodeEncodeError:  # a latin-1 or cp1252 file cannot hold the non-Latin names
            return kind, text.encode("utf-16")
    if kind == "random":
        return kind, rng.randbytes(rng.randint(0, 200))
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randint(0, len(buf))
        byte = rng.choice([0, 10, 13, 34, 44, 0xFF, 0xC3, rng.randrange(256)])
        if kind == "flip" and pos < len(buf):
            buf[pos] = byte
        else:
            buf.insert(pos, byte)
    return kind, bytes(buf)


def test_csv_reader_over_thousands_of_broken_files(tmp_path):
    rng = random.Random(17)
    path = tmp_path / "train.csv"
    outcomes = {"error": 0, "skip": 0, "rows": 0}
    for _ in range(N_INPUTS):
        data, written = _valid(rng)
        kind, data = _broken(rng, data)
        path.write_bytes(data)
        skips = SkipLog(io.StringIO())
        got = []
        try:
            for line, row in read_rows(path, COLUMNS, skips):
                got.append((line, row))
                parse_landmark_id(row[2]) if row[2].isdigit() else None
        except CsvFormatError as e:
            assert str(e).startswith(str(path)), e
            outcomes["error"] += 1
        outcomes["skip"] += skips.total
        outcomes["rows"] += len(got)
        if kind in ("cut", "encoding"):  # no byte inside a row changed: every row read is the row written
            for line, row in got:
                assert written.get(line) == row, (kind, data, line, row)
        assert len(got) + skips.total <= max(len(written), data.count(b"\n") + 1)
    assert min(outcomes.values()) > 0, outcomes  # every outcome was exercised


def test_cut_inside_the_landmark_id_never_relabels(tmp_path):
    path = tmp_path / "train.csv"
    full = b"id,url,landmark_id\n0123456789abcdef,https://x/a.jpg,7\n1123456789abcdef,https://x/b.jpg,127\n"
    for end in range(len(full) - 4, len(full)):  # "127" cut to "1", "12", "127" without its newline
        path.write_bytes(full[:end])
        skips = SkipLog(io.StringIO())
        rows = list(read_rows(path, COLUMNS, skips))
        assert rows == [(2, ["0123456789abcdef", "https://x/a.jpg", "7"])]
        assert skips.total == 1


def test_name_parser_over_random_titles():
    rng = random.Random(18)
    alphabet = "aZ_%0C4819FDzé清\u200b\x00 ()#?"
    for _ in range(N_INPUTS):
        title = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        try:
            name = landmark_name("https://commons.wikimedia.org/wiki/Category:" + title)
        except ValueError:
            continue
        assert name == name.strip() and "\x00" not in name and ("%" not in name or "%25" in title)
        assert any(not (c.isspace() or unicodedata.category(c) == "Cf") for c in name)
