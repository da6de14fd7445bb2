"""The one image loader (eeca.images): limits, every PIL mode to RGB, paths confined to the root."""

import os

import numpy as np
import pytest
from PIL import Image

from eeca.images import DEFAULT_LIMITS, ImageError, ImageLimits, image_file, load_image, resize_crop, to_rgb
from image_cases import (
    QUADRANTS,
    write_16bit_png,
    write_cmyk_jpeg,
    write_la,
    write_oriented,
    write_palette_with_transparency,
    write_png_bomb,
)


def _reason(source, limits=DEFAULT_LIMITS) -> str:
    with pytest.raises(ImageError) as info:
        load_image(source, limits)
    return info.value.reason


def test_decompression_bomb_is_a_reason_not_a_crash(tmp_path):
    bomb = write_png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 1000
    assert _reason(bomb).startswith("too many pixels")  # PIL's own bomb error, caught
    assert _reason(write_png_bomb(tmp_path / "b2.png", side=200), ImageLimits(max_pixels=10_000)) == \
        "too many pixels (200x200 > max_pixels 10000)"  # our limit, from the header, before decoding
    assert _reason(bomb.read_bytes()).startswith("too many pixels")  # bytes go the same way


def test_file_size_limit_and_broken_files(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 48), (10, 20, 30)).save(good)
    assert load_image(good).size == (64, 48)
    assert _reason(good, ImageLimits(max_bytes=100)).startswith("file too large (")
    assert _reason(tmp_path / "nope.jpg") == "missing file"
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _reason(tmp_path / "empty.jpg") == "empty file (0 bytes)"
    (tmp_path / "text.jpg").write_text("hello")
    assert _reason(tmp_path / "text.jpg") == "not an image (unidentified format)"
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:200])
    assert _reason(tmp_path / "cut.jpg").startswith("corrupt or truncated image")
    assert _reason(tmp_path) == "not a file"
    with pytest.raises(ValueError):
        ImageLimits(max_pixels=10**12)  # above PIL's own ceiling: refused, not silently lower


@pytest.mark.parametrize("writer, left, right", [
    (write_16bit_png, (128, 128, 128), (128, 128, 128)),  # 32768 of 65535 is mid-grey (old: clipped to white)
    (write_palette_with_transparency, (255, 255, 255), (255, 0, 0)),  # transparent index on white (old: black)
    (write_la, (255, 255, 255), (255, 255, 255)),  # fully transparent grey on white (old: black)
    (write_cmyk_jpeg, (0, 255, 255), (0, 255, 255)),  # cyan
])
def test_every_mode_becomes_the_rgb_a_viewer_shows(writer, left, right, tmp_path):
    path = writer(tmp_path / ("x.jpg" if writer is write_cmyk_jpeg else "x.png"))
    rgb = np.asarray(load_image(path))
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
    assert tuple(rgb[0, 0]) == left and tuple(rgb[0, -1]) == right


def test_integer_and_float_modes_are_scaled_not_clipped():
    ramp16 = np.array([[0, 257 * 100, 65535]], np.int32)
    assert np.asarray(to_rgb(Image.fromarray(ramp16, mode="I")))[0, :, 0].tolist() == [0, 100, 255]
    unit = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert np.asarray(to_rgb(Image.fromarray(unit, mode="F")))[0, :, 0].tolist() == [0, 128, 255]
    wide = np.array([[-10.0, 0.0, 10.0]], np.float32)  # outside [0, 1]: its own range
    assert np.asarray(to_rgb(Image.fromarray(wide, mode="F")))[0, :, 0].tolist() == [0, 128, 255]
    rgba = Image.new("RGBA", (2, 1), (0, 0, 255, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    assert np.asarray(to_rgb(rgba))[0].tolist() == [[255, 255, 255], [0, 0, 255]]


def test_paths_are_confined_to_the_root_after_resolving_links(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "train").mkdir(parents=True)
    outside.mkdir()
    Image.new("RGB", (4, 4)).save(outside / "secret.jpg")
    Image.new("RGB", (4, 4)).save(root / "train" / "ok.jpg")
    os.symlink(outside / "secret.jpg", root / "train" / "link.jpg")
    os.symlink(outside, root / "train" / "dir")
    os.symlink(root / "train" / "ok.jpg", root / "train" / "inner.jpg")  # a link that stays inside is fine
    assert image_file(root, "train/ok.jpg") == (root / "train" / "ok.jpg").resolve()
    assert image_file(root, "train/inner.jpg") == (root / "train" / "ok.jpg").resolve()
    for rel in ["train/link.jpg", "train/dir/secret.jpg", "../outside/secret.jpg", str(outside / "secret.jpg"),
                "train/../../outside/secret.jpg"]:
        with pytest.raises(ImageError) as info:
            image_file(root, rel)
        assert info.value.reason.startswith("path escapes the image root"), rel
    for rel in ["", None, 7]:
        with pytest.raises(ImageError):
            image_file(root, rel)


def test_reduced_scale_decoding_covers_the_model_input(tmp_path):
    path = tmp_path / "big.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (768, 1024, 3), np.uint8)).save(path, quality=90)
    assert load_image(path, min_side=224).size == (512, 384)  # 1/4 would give 192 < 224 rows
    assert load_image(path, min_side=96).size == (128, 96)  # 1/8
    assert load_image(path).size == (1024, 768)
    png = tmp_path / "big.png"
    Image.open(path).save(png)
    assert load_image(png, min_side=96).size == (1024, 768)  # only JPEGs have DCT scaling


def test_resize_crop_matches_the_hugging_face_processor():
    from knowledge_helpers import ImageProcessor

    rng = np.random.default_rng(1)
    proc = ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_normalize=False,
                          do_rescale=False)
    for w, h in [(100, 75), (75, 100), (33, 40), (32, 32), (301, 47), (47, 301), (1024, 768)]:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))
        ref = proc(images=im, return_tensors="np")["pixel_values"][0]  # [3, 32, 32]
        ours = resize_crop(im, 32, (32, 32))  # [32, 32, 3]
        assert np.array_equal(ours.transpose(2, 0, 1), ref.round().astype(np.uint8)), (w, h)


def test_simplejpeg_decodes_the_same_pixels_as_pil(tmp_path, monkeypatch):
    import eeca.images as images

    if images.simplejpeg is None:
        pytest.skip("simplejpeg not installed (extra 'fast')")
    rng = np.random.default_rng(2)
    for w, h in [(1024, 768), (640, 480), (333, 250), (100, 80)]:
        path = tmp_path / f"{w}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(path, quality=85)
        with_sj = np.asarray(load_image(path, min_side=48))
        with monkeypatch.context() as m:
            m.setattr(images, "simplejpeg", None)
            with_pil = np.asarray(load_image(path, min_side=48))
        assert np.array_equal(with_sj, with_pil), (w, h)  # same DCT scale (PIL's 1/1..1/8), same decoder
    write_png_bomb(tmp_path / "bomb.jpg")  # a PNG under a JPEG name goes to PIL, and is refused there
    assert _reason(tmp_path / "bomb.jpg").startswith("too many pixels")
    cmyk = np.asarray(load_image(write_cmyk_jpeg(tmp_path / "c.jpg"), min_side=4))  # simplejpeg declines CMYK
    assert tuple(cmyk[0, 0]) == (0, 255, 255)


# the stored quadrants (0 red, 1 green / 2 blue, 3 yellow) as a viewer shows them, per EXIF orientation
# (TIFF 6.0 / EXIF 2.3: 2 mirrored, 3 turned 180, 4 flipped, 5 transposed, 6 turned 90 clockwise, 7
# transverse, 8 turned 90 counter-clockwise to display)
SHOWN = {1: (0, 1, 2, 3), 2: (1, 0, 3, 2), 3: (3, 2, 1, 0), 4: (2, 3, 0, 1),
         5: (0, 2, 1, 3), 6: (2, 0, 3, 1), 7: (3, 1, 2, 0), 8: (1, 3, 0, 2)}


def _quadrants(im: Image.Image) -> tuple[int, ...]:
    a = np.asarray(im).astype(int)
    h, w = a.shape[:2]
    centres = [a[y, x] for y in (h // 4, 3 * h // 4) for x in (w // 4, 3 * w // 4)]
    return tuple(int(np.argmin([np.abs(c - q).sum() for q in QUADRANTS])) for c in centres)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_on_every_path(orientation, tmp_path, monkeypatch):
    import eeca.images as images

    jpg = write_oriented(tmp_path / "phone.jpg", orientation)
    png = write_oriented(tmp_path / "phone.png", orientation)
    turned = orientation >= 5  # a quarter turn swaps the sides
    full, scaled = ((128, 256), (32, 64)) if turned else ((256, 128), (64, 32))
    cases = {"full decode": (jpg, None, full), "bytes": (jpg.read_bytes(), None, full), "png": (png, None, full),
             "reduced scale": (jpg, 32, scaled)}  # min_side 32: 1/4 scale, both sides still >= 32
    for name, (source, min_side, size) in cases.items():
        for decoder in ("simplejpeg", "PIL"):
            with monkeypatch.context() as m:
                if decoder == "PIL":
                    m.setattr(images, "simplejpeg", None)
                elif images.simplejpeg is None:
                    continue
                im = load_image(source, min_side=min_side)
            assert (im.size, _quadrants(im)) == (size, SHOWN[orientation]), (name, decoder)


def test_xmp_orientation_and_broken_exif(tmp_path, monkeypatch):
    import eeca.images as images

    xmp = write_oriented(tmp_path / "xmp.jpg", 1, xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>'
                         b'<rdf:Description tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    broken = write_oriented(tmp_path / "broken.jpg", 1, exif=b"Exif\0\0MM\0*\xff\xff\xff\xff")
    for decoder in ("simplejpeg", "PIL"):
        with monkeypatch.context() as m:
            if decoder == "PIL":
                m.setattr(images, "simplejpeg", None)
            assert _quadrants(load_image(xmp, min_side=32)) == SHOWN[6], decoder  # as PIL's getexif reads it
            assert _quadrants(load_image(broken, min_side=32)) == SHOWN[1], decoder  # the pixels still count
