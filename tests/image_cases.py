"""Hostile and odd image files for the loader tests, each a few hundred bytes, built on the spot."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_bomb(path: Path, side: int = 30000) -> Path:
    """A grayscale PNG whose header says side x side pixels (900 M at 30000): PIL's bomb check fires on
    open; decoding it would need ``side**2`` bytes. Only a few rows of data follow, so the file is tiny."""
    rows = zlib.compress(b"\x00" * (side + 1) * 4, 9)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))
    return path


def write_16bit_png(path: Path, value: int = 32768, size: int = 8) -> Path:
    """A 16-bit grayscale PNG (PIL mode I;16) of one value: mid-grey at 32768, not white."""
    Image.fromarray(np.full((size, size), value, np.uint16)).save(path, format="PNG")
    return path


def write_palette_with_transparency(path: Path, size: int = 8) -> Path:
    """A palette PNG whose index 0 (black) is transparent and covers the left half; the right half is red."""
    im = Image.new("P", (size, size), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (size // 2, 0, size, size))
    im.save(path, transparency=0)
    return path


def write_la(path: Path, size: int = 8) -> Path:
    """A grey + alpha PNG: black and fully transparent everywhere (on white it is white)."""
    Image.fromarray(np.zeros((size, size, 2), np.uint8), mode="LA").save(path)
    return path


def write_cmyk_jpeg(path: Path, size: int = 16) -> Path:
    """A CMYK JPEG of pure cyan (C=255): RGB (0, 255, 255)."""
    Image.new("CMYK", (size, size), (255, 0, 0, 0)).save(path, quality=100)
    return path


QUADRANTS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))  # red, green / blue, yellow as stored


def write_oriented(path: Path, orientation: int, size: tuple[int, int] = (256, 128), exif: bytes | None = None,
                   xmp: bytes | None = None) -> Path:
    """A ``size`` (w, h) photo stored as four flat quadrants (top: red, green; bottom: blue, yellow) whose
    EXIF Orientation tag is ``orientation`` (JPEG or PNG by the suffix); ``exif`` / ``xmp`` replace the
    metadata block with raw bytes instead."""
    w, h = size
    a = np.empty((h, w, 3), np.uint8)
    for k, colour in enumerate(QUADRANTS):
        a[(k // 2) * h // 2:(k // 2 + 1) * h // 2, (k % 2) * w // 2:(k % 2 + 1) * w // 2] = colour
    tags = Image.Exif()
    tags[0x0112] = orientation
    tags[0x010F] = "Phone"  # Make: a phone's EXIF carries more than the one tag
    extra = {"xmp": xmp} if xmp is not None else {"exif": tags.tobytes() if exif is None else exif}
    Image.fromarray(a).save(path, quality=95, **extra)
    return path
