"""EecaProcessor: LR view and HR crops from one image, placeholder expansion, truncation, round trip."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoProcessor

from eeca.model import EecaProcessor
from eeca.model.tiny import tiny_eeca


@pytest.fixture(scope="module")
def processor():
    return tiny_eeca()[1]


def picture(seed=0, size=(45, 60)):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((*size, 3)) * 255).astype("uint8"))


def test_crops_tile_the_hr_view_and_lr_is_its_bilinear_downsample(processor):
    image = picture()
    out = processor(images=[image], text=["user : <image> what is this ?"], return_tensors="pt")
    assert out["pixel_values"].shape == (1, 3, 32, 32)
    assert out["pixel_values_hr"].shape == (1, 4, 3, 32, 32)
    # the HR view, made independently by the image processor at twice the size
    high = processor.image_processor(
        [image], size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}, return_tensors="pt"
    )["pixel_values"][0]
    crops = out["pixel_values_hr"][0]
    torch.testing.assert_close(crops[0], high[:, :32, :32])
    torch.testing.assert_close(crops[1], high[:, :32, 32:])  # row-major: top-right second
    torch.testing.assert_close(crops[2], high[:, 32:, :32])
    torch.testing.assert_close(crops[3], high[:, 32:, 32:])
    want_low = F.interpolate(high[None], size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(out["pixel_values"], want_low)


def test_each_image_token_becomes_every_visual_token(processor):
    out = processor(images=[picture(0), picture(1)],
                    text=["user : <image> what is this ?", "<image> name ."], return_tensors="pt", padding=True)
    image_id = processor.image_token_id
    assert (out["input_ids"] == image_id).sum(dim=1).tolist() == [24, 24]  # P = 8 + 16 LR tokens
    hr_off = tiny_eeca(use_hr_branch=False, eac_loss_weight=0.0)[1]
    off = hr_off(images=[picture(0)], text=["<image> hi"], return_tensors="pt")
    assert (off["input_ids"] == image_id).sum().item() == 16 and "pixel_values_hr" not in off
    torch.testing.assert_close(off["pixel_values"], processor(images=[picture(0)], text=["<image>"],
                                                              return_tensors="pt")["pixel_values"])


def test_truncation_through_placeholders_names_the_sample(processor):
    texts = ["<image> a", "user : what is this landmark ? <image> it is"]
    with pytest.raises(ValueError, match="sample 1: 19 of its 24 image placeholder"):
        processor(images=[picture(0), picture(1)], text=texts, truncation=True, max_length=26,
                  padding="max_length", return_tensors="pt")
    fits = processor(images=[picture(0), picture(1)], text=texts, truncation=True, max_length=40,
                     padding="max_length", return_tensors="pt")
    assert fits["input_ids"].shape == (2, 40)


def test_save_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is EecaProcessor
    assert (loaded.use_hr_branch, loaded.hr_grid, loaded.num_hr_latents, loaded.num_image_tokens) == (True, 2, 8, 24)
    a = processor(images=[picture(3)], text=["<image> what is this ?"], return_tensors="pt")
    b = loaded(images=[picture(3)], text=["<image> what is this ?"], return_tensors="pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_processor_follows_a_config_loaded_with_the_hr_branch_turned_off():
    from eeca.model.processing_eeca import processor_for

    model, proc = tiny_eeca()
    config = copy.deepcopy(model.config)
    config.eac_loss_weight = 0.0  # L_EAC needs the HR branch
    config.use_hr_branch = False
    off = processor_for(config, proc)
    image = Image.new("RGB", (40, 40), (200, 10, 10))
    out_on = proc(images=[image], text=["<image>\nwhere?"], return_tensors="pt")
    out_off = off(images=[image], text=["<image>\nwhere?"], return_tensors="pt")
    assert "pixel_values_hr" in out_on and "pixel_values_hr" not in out_off
    image_id = proc.image_token_id
    assert (out_on["input_ids"] == image_id).sum() - (out_off["input_ids"] == image_id).sum() == proc.num_hr_latents
    torch.testing.assert_close(out_on["pixel_values"], out_off["pixel_values"])
