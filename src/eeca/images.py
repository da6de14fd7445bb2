"""The one image loader of the toolkit: every stage that opens an image file goes through here.

Scoring (paper section 3.1), the MGLD annotators (section 4), training (section 5.1) and
generation read photos that come from the web; any of them can be hostile or odd. This module
turns every such file into either an RGB image or an :class:`ImageError` whose ``reason`` the caller
counts as a skip (or, in training, reports naming the record):

* **Paths stay under the image root.** :func:`image_file` refuses absolute paths and ``..``, and
  compares the path *after* resolving symlinks, so a link pointing out of the root is refused too.
* **Limits before decoding.** A file larger than ``max_bytes`` or an image with more than
  ``max_pixels`` pixels (read from the header, before any pixel is decoded) is refused: a
  decompression bomb such as a 30000 x 30000 PNG of a few hundred kB is a skip, not an out-of-memory
  kill. PIL's own ``DecompressionBombError`` / ``DecompressionBombWarning`` are caught as the same
  reason.
* **Every mode to RGB correctly** (:func:`to_rgb`): 16-bit and 32-bit integer images (``I;16``,
  ``I``) are scaled from the 16-bit range instead of being clipped at 255 (which makes a 16-bit PNG
  all white); float images (``F``) from [0, 1] when they lie there, otherwise from their own range;
  images with transparency (``LA``, ``RGBA``, ``PA``, palette with a transparent index) are
  composited on white; ``CMYK``, ``YCbCr``, ``L``, ``1`` and palettes go through PIL's conversion.
* **Reduced-scale JPEG decoding** (``min_side``): a JPEG is decoded with DCT scaling (PIL
  ``draft``) at the smallest scale whose both sides are still at least ``min_side`` pixels, which
  is what an encoder that resizes the shorter side to ``min_side`` needs; with the optional
  ``simplejpeg`` package installed (extra ``fast``) it does the decoding, which is faster per core
  (benchmarks/image_path.py), and PIL does whatever simplejpeg declines. :func:`resize_crop` then
  resizes and centre-crops in uint8. This is the fast path of ``eeca score``
  (docs/knowledge.md gives what it changes in S).
* **Upright, as a viewer shows it.** Phone photos (many of GLDv2's) store the sensor's pixels and an
  EXIF ``Orientation`` tag saying how to turn them; every path applies it (PIL's ``getexif``, else an
  XMP ``tiff:Orientation``, on the PIL path; the same read from the JPEG's header bytes on the simplejpeg path), after decoding, so
  a reduced-scale decode is turned too. The DCT scale does not depend on it: both sides must reach
  ``min_side``, a condition a 90-degree turn leaves unchanged. An unreadable EXIF block counts as
  no tag (the pixels are still good).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

try:
    import simplejpeg
except ImportError:  # optional (extra "fast"): PIL's own reduced-scale decoding is used instead
    simplejpeg = None

# PIL refuses images above twice its MAX_IMAGE_PIXELS whatever we allow; our limit must stay below.
PIL_PIXEL_CEILING = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 = upright, 2..8 = the flip/turn that makes it upright
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
MISSING_FILE = "missing file"  # the one reason a rerun retries: the file may be there by then
_WHITE = (255, 255, 255)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


@dataclass(frozen=True)
class ImageLimits:
    """What an image file may cost before it is decoded; larger ones are refused with a reason."""

    max_pixels: int = 100_000_000  # width x height (GLDv2 photos are at most a few tens of megapixels)
    max_bytes: int = 100 * 2**20  # size of the file

    def __post_init__(self):
        if not 1 <= self.max_pixels <= PIL_PIXEL_CEILING:
            raise ValueError(f"max_pixels must be in 1..{PIL_PIXEL_CEILING} (PIL's own ceiling), got {self.max_pixels}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")


DEFAULT_LIMITS = ImageLimits()


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is a short text (counted by its part before " (")."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def image_file(root: Path, rel: str | os.PathLike | None) -> Path:
    """``root / rel`` with symlinks resolved; :class:`ImageError` when it is not inside ``root``."""
    if not rel or not isinstance(rel, str | os.PathLike):
        raise ImageError(f"no image path ({rel!r})")
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise ImageError(f"path escapes the image root ({rel})")
    resolved = (root / p).resolve()
    if not resolved.is_relative_to(Path(root).resolve()):
        raise ImageError(f"path escapes the image root ({rel} is a link to {resolved})")
    return resolved


def load_image(source: Path | bytes, limits: ImageLimits = DEFAULT_LIMITS, min_side: int | None = None) -> Image.Image:
    """The RGB image in a file (or its bytes), within ``limits``; :class:`ImageError` with the reason otherwise.

    ``min_side``: decode a JPEG at the smallest DCT scale (1/2, 1/4, 1/8) whose sides stay >= it.
    """
    if isinstance(source, bytes | bytearray):
        size, fp = len(source), io.BytesIO(source)
    else:
        try:
            size = Path(source).stat().st_size
        except FileNotFoundError:
            raise ImageError(MISSING_FILE) from None
        except OSError as e:
            raise ImageError(f"unreadable file ({e.strerror})") from None
        if not Path(source).is_file():
            raise ImageError("not a file")
        fp = source
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    if size > limits.max_bytes:
        raise ImageError(f"file too large ({size} bytes > max_bytes {limits.max_bytes})")
    if min_side and simplejpeg is not None:
        data = source if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
        if (rgb := _scaled_jpeg(data, limits, min_side)) is not None:
            return upright(rgb, _jpeg_orientation(data))
        fp = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                w, h = im.size
                if w * h > limits.max_pixels:
                    raise ImageError(f"too many pixels ({w}x{h} > max_pixels {limits.max_pixels})")
                if min_side and im.format == "JPEG":
                    im.draft("RGB", (min_side, min_side))
                im.load()  # decode now: a truncated file fails here
                return upright(to_rgb(im), _orientation(im))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"too many pixels (decompression bomb: {e})") from None
    except UnidentifiedImageError:
        raise ImageError("not an image (unidentified format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as e:
        raise ImageError(f"corrupt or truncated image ({type(e).__name__}: {e})") from None


def _scaled_jpeg(data: bytes, limits: ImageLimits, min_side: int) -> Image.Image | None:
    """A colour or grey JPEG decoded by simplejpeg at reduced scale; None for PIL to handle (or refuse)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray", "RGB") or w * h > limits.max_pixels:
            return None
        fits = min(w // min_side, h // min_side)
        scale = next(s for s in (8, 4, 2, 1) if fits >= s or s == 1)  # PIL draft's choice: 1/1 .. 1/8 only
        return Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=-(-w // scale),
                                                      min_height=-(-h // scale)))
    except ValueError:  # not decodable by simplejpeg: PIL gives the reason
        return None


def upright(im: Image.Image, orientation: int) -> Image.Image:
    """``im`` flipped or turned as its EXIF ``orientation`` (1..8) says; itself when 1 or not a valid value."""
    method = _UPRIGHT.get(orientation)
    return im if method is None else im.transpose(method)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation of an opened image (JPEG, PNG, WebP, TIFF ...); 1 without a readable tag."""
    try:
        tags = im.getexif()
    except Exception:  # a broken EXIF block: the pixels are still good, read as upright
        return 1
    if ORIENTATION_TAG in tags:
        return int(tags[ORIENTATION_TAG])
    return _xmp_orientation(im.info.get("xmp"))  # read here: Pillow 11.0 (the floor) does not fall back to XMP


def _jpeg_orientation(data: bytes) -> int:
    """The orientation PIL's ``getexif`` reads from a JPEG (the EXIF tag, else an XMP ``tiff:Orientation``),
    found by walking the header segments in its bytes: tens of microseconds, where opening the bytes
    with PIL again costs about a third of a millisecond; 1 without a readable tag."""
    exif, xmp, pos = None, None, 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no header segments follow
            break
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xE1:  # APP1: EXIF or XMP
            segment = data[pos + 4:end]
            if exif is None and segment.startswith(b"Exif\0\0"):
                exif = segment
            elif xmp is None and segment.startswith(b"http://ns.adobe.com/xap/1.0/\0"):
                xmp = segment
        pos = end
    try:
        tags = Image.Exif()
        if exif is not None:
            tags.load(exif)
        if ORIENTATION_TAG in tags:
            return int(tags[ORIENTATION_TAG])
    except Exception:  # a broken EXIF block, as in _orientation
        return 1
    return _xmp_orientation(xmp)


def _xmp_orientation(xmp: bytes | str | None) -> int:
    """The ``tiff:Orientation`` of an XMP packet (attribute or element form); 1 without one."""
    if isinstance(xmp, str):
        xmp = xmp.encode()
    match = re.search(rb'tiff:Orientation(="|>)([0-9])', xmp or b"")
    return int(match[2]) if match else 1


def to_rgb(im: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of any PIL image (see the module docstring for each mode)."""
    if im.mode == "RGB":
        return im.copy()
    if im.mode in _SIXTEEN_BIT or im.mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(im))).convert("RGB")
    if im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", im.size, _WHITE)
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    try:
        return im.convert("RGB")
    except ValueError:
        raise ImageError(f"unsupported image mode ({im.mode})") from None


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Integers from the 16-bit range; floats from [0, 1] when they lie there, else their own range; to 0..255."""
    if a.dtype.kind == "f":
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if lo < 0 or hi > 1:
            a = (a - lo) / max(hi - lo, 1e-12)
        scaled = np.nan_to_num(a.astype(np.float64), nan=0.0) * 255
    else:
        scaled = a.astype(np.float64) / 257
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def resize_crop(im: Image.Image, shortest_edge: int, crop: tuple[int, int],
                resample: int = Image.Resampling.BICUBIC) -> np.ndarray:
    """Shorter side resized to ``shortest_edge`` (the longer one truncated to int, as Hugging Face image
    processors do), centre crop of ``crop`` = (h, w): uint8 [h, w, 3].

    Only the cropped columns are resampled (PIL's ``box``, the same source grid and filter as resizing
    the whole width: about 30% less work on a landscape photo); rows are cropped after resizing, since
    a vertical ``box`` does not reproduce the full resize exactly.
    """
    w, h = im.size
    size = (shortest_edge, int(shortest_edge * h / w)) if w <= h else (int(shortest_edge * w / h), shortest_edge)
    ch, cw = crop
    left, top = (size[0] - cw) // 2, (size[1] - ch) // 2
    sx = w / size[0]  # source columns per resized column
    out = im.resize((cw, size[1]), resample, box=(left * sx, 0, (left + cw) * sx, h))
    return np.array(out)[top:top + ch]
