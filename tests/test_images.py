"""The one image loader (eeca.images): limits, every PIL mode to RGB, paths confined to the root."""

import os

import numpy as np
import pytest
from PIL import Image

from eeca.images import DEFAULT_LIMITS, ImageError, ImageLimits, image_file, load_image, resize_crop, to_rgb
from image_cases import (
    write_16bit_png,
    write_cmyk_jpeg,
    write_la,
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
