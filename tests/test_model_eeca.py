"""EecaForConditionalGeneration against HF Llava, checkpoint round trips, the HR branch, losses and generation."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText, LlavaConfig, LlavaForConditionalGeneration

from eeca.model import EecaConfig, EecaForConditionalGeneration
from eeca.model.tiny import tiny_eeca

TINY_HR = {"resampler_heads": 2, "resampler_head_dim": 16, "num_hr_latents": 8}


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((40 + 3 * i, 52, 3)) * 255).astype("uint8")) for i in range(n)]


def batch_for(processor, n=2, **kwargs):
    texts = ["user : <image> what is this landmark ?", "user : <image> describe the image ."][:n]
    return processor(images=images(n), text=texts, return_tensors="pt", padding=True, **kwargs)


def llava_twin(model):
    """HF's own Llava with the same sub-configs and weights."""
    cfg = model.config
    llava_cfg = LlavaConfig(
        vision_config=cfg.vision_config.to_dict(), text_config=cfg.text_config.to_dict(),
        image_token_index=cfg.image_token_id, image_seq_length=cfg.image_seq_length,
    )
    llava = LlavaForConditionalGeneration(llava_cfg).eval()
    llava.load_state_dict(model.state_dict(), strict=True)
    return llava


@pytest.fixture(scope="module")
def hr_off():
    return tiny_eeca(use_hr_branch=False, hc_loss_weight=0.0, eac_loss_weight=0.0)


@pytest.fixture(scope="module")
def hr_on():
    return tiny_eeca(hierarchical_labels=["tower", "lake", "bridge"])


def test_hr_off_equals_hf_llava(hr_off):
    model, processor = hr_off
    inputs = batch_for(processor)
    assert "pixel_values_hr" not in inputs
    llava = llava_twin(model)
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_id, -100)
    with torch.no_grad():
        ours = model(**inputs, labels=labels)
        theirs = llava(**inputs, labels=labels)
    assert (ours.logits - theirs.logits).abs().max().item() <= 1e-5
    assert abs(ours.loss.item() - theirs.loss.item()) <= 1e-6
    assert ours.loss_lm.item() == ours.loss.item() and ours.loss_hc is None and ours.loss_eac is None


def test_hr_on_lr_tokens_are_llavas(hr_on):
    model, processor = hr_on
    inputs = batch_for(processor)
    llava = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=model.config.vision_config.to_dict(), text_config=model.config.text_config.to_dict(),
        image_token_index=model.config.image_token_id)).eval()
    shared = {k: v for k, v in model.state_dict().items() if k in llava.state_dict()}
    llava.load_state_dict(shared, strict=True)
    with torch.no_grad():
        ours = model.get_image_features(inputs["pixel_values"], inputs["pixel_values_hr"])
        theirs = llava.get_image_features(inputs["pixel_values"])
    visual = torch.stack(ours.pooler_output)  # [B, P + N, d]
    assert visual.shape == (2, 8 + 16, 64)
    torch.testing.assert_close(visual[:, 8:], torch.stack(theirs.pooler_output), atol=1e-6, rtol=0)
    torch.testing.assert_close(visual[:, :8], ours.hr_tokens)


def test_sub_image_embeddings_tell_crops_apart():
    model, processor = tiny_eeca()
    inputs = batch_for(processor)
    resampler = model.model.hr_resampler

    def hr_tokens(crops):
        with torch.no_grad():
            return model.get_image_features(inputs["pixel_values"], crops).hr_tokens

    crops = inputs["pixel_values_hr"]
    with torch.no_grad():
        resampler.sub_image_embeddings.zero_()
    # without them, attention over the concatenated features cannot see which crop a feature came from
    blind = (hr_tokens(crops) - hr_tokens(crops.flip(1))).abs().max()
    torch.manual_seed(0)
    with torch.no_grad():
        resampler.sub_image_embeddings.normal_(std=1.0)
    seeing = (hr_tokens(crops) - hr_tokens(crops.flip(1))).abs().max()
    assert blind < 1e-6 and seeing > 100 * max(blind, 1e-7)


@pytest.mark.parametrize("switch", [{"hr_projector": "linear"}, {"sub_image_embeddings": False},
                                    {"hr_projector": "linear", "sub_image_embeddings": False}])
def test_toolkit_additions_switch_off(switch, tmp_path):
    """The MLP after the resampler and the sub-image embeddings are the toolkit's, not the paper's: off,
    the module is absent, training's forward with both losses still works, and the model round-trips."""
    model, processor = tiny_eeca(hierarchical_labels=["tower", "lake", "bridge"], **switch)
    names = {n for n, _ in model.named_parameters()}
    if switch.get("hr_projector") == "linear":
        assert isinstance(model.model.hr_projector, torch.nn.Linear)
        assert {n for n in names if n.startswith("model.hr_projector.")} == {
            "model.hr_projector.weight", "model.hr_projector.bias"}
    if switch.get("sub_image_embeddings") is False:
        assert model.model.hr_resampler.sub_image_embeddings is None
        assert not any("sub_image_embeddings" in n for n in names)
    inputs = batch_for(processor)
    entity_ids = torch.tensor([[[10, 11], [12, 0]], [[16, 17], [18, 0]]])
    out = model(**inputs, labels=inputs["input_ids"], entity_ids=entity_ids, entity_mask=entity_ids != 0,
                hc_labels=torch.tensor([2, 0]))
    assert all(torch.isfinite(getattr(out, k)) for k in ("loss_lm", "loss_hc", "loss_eac"))
    assert out.image_outputs.hr_tokens.shape == (2, 8, model.config.text_config.hidden_size)
    out.loss.backward()
    assert model.model.hr_resampler.latents.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    _, info = EecaForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info


def test_losses_by_name_and_gradients_reach_hr_modules(hr_on):
    model, processor = hr_on
    inputs = batch_for(processor)
    entity_ids = torch.tensor([[[10, 11, 0], [12, 0, 0], [13, 14, 15]], [[16, 17, 0], [18, 0, 0], [0, 0, 0]]])
    entity_mask = entity_ids != 0
    model.zero_grad()
    out = model(**inputs, labels=inputs["input_ids"], entity_ids=entity_ids, entity_mask=entity_mask,
                hc_labels=torch.tensor([2, -100]))
    for name in ("loss_lm", "loss_hc", "loss_eac"):
        assert getattr(out, name).ndim == 0 and torch.isfinite(getattr(out, name))
    assert out.loss.item() == pytest.approx((out.loss_lm + out.loss_hc + out.loss_eac).item(), rel=1e-6)
    (out.loss_hc + out.loss_eac).backward()
    grads = {
        "resampler": model.model.hr_resampler.latents.grad,
        "sub_image_embeddings": model.model.hr_resampler.sub_image_embeddings.grad,
        "hr_projector": model.model.hr_projector.linear_2.weight.grad,
        "hc_head": model.hc_head.weight.grad,
        "temperature": model.eac_logit_scale.t.grad,
    }
    for name, grad in grads.items():
        assert grad is not None and grad.abs().sum() > 0, name
    # stop-gradient (default): the entity embeddings do not train the LLM's input embeddings via L_EAC
    emb_grad = model.get_input_embeddings().weight.grad
    assert emb_grad is None or emb_grad[[16, 17, 18]].abs().sum() == 0
    model.zero_grad()


def test_entity_embeddings_are_masked_means_and_stop_gradient_switch():
    model, _ = tiny_eeca(entity_stop_gradient=False)
    ids = torch.tensor([[[5, 6, 0]]])
    mask = torch.tensor([[[True, True, False]]])
    rows = model.get_input_embeddings().weight
    e = model.entity_embeddings(ids, mask)
    torch.testing.assert_close(e[0, 0], (rows[5] + rows[6]) / 2)
    assert e.requires_grad


def test_num_items_in_batch_scales_lm_only(hr_on):
    model, processor = hr_on
    inputs = batch_for(processor)
    labels = inputs["input_ids"].clone()
    with torch.no_grad():
        plain = model(**inputs, labels=labels, hc_labels=torch.tensor([0, 1]))
        tokens = int((labels[:, 1:] != -100).sum())
        scaled = model(**inputs, labels=labels, hc_labels=torch.tensor([0, 1]), num_items_in_batch=4 * tokens)
    # the LM term is a token sum over the accumulated batch; the aux terms stay per-image means (the
    # Trainer scales them over accumulation steps)
    assert scaled.loss_lm.item() == pytest.approx(plain.loss_lm.item() / 4, rel=1e-5)
    assert scaled.loss_hc.item() == pytest.approx(plain.loss_hc.item(), rel=1e-6)
    assert scaled.loss.item() == pytest.approx(plain.loss_lm.item() / 4 + plain.loss_hc.item(), rel=1e-5)


def test_save_load_round_trip_reports_nothing_unexpected(hr_on, tmp_path):
    model, processor = hr_on
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, info = EecaForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert loaded.config.hierarchical_labels == ["tower", "lake", "bridge"]
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    auto = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(auto) is EecaForConditionalGeneration


def _assert_llava_weights_loaded(eeca_model, llava):
    eeca_state = eeca_model.state_dict()
    for name, tensor in llava.state_dict().items():
        assert torch.equal(eeca_state[name], tensor), name


def test_llava_checkpoint_loads_with_exactly_hr_modules_new(tmp_path):
    model, _ = tiny_eeca(use_hr_branch=False, eac_loss_weight=0.0)
    llava = llava_twin(model)
    llava.save_pretrained(tmp_path / "llava")
    loaded, info = EecaForConditionalGeneration.from_pretrained(
        tmp_path / "llava", output_loading_info=True, hierarchical_labels=["tower", "lake"], **TINY_HR
    )
    assert loaded.config.model_type == "eeca" and loaded.config.use_hr_branch
    new = set(info["missing_keys"])
    assert new and all(k.startswith(("model.hr_resampler.", "model.hr_projector.", "hc_head.", "eac_logit_scale"))
                       for k in new), new
    assert {k.split(".")[1] if k.startswith("model.") else k.split(".")[0] for k in new} == {
        "hr_resampler", "hr_projector", "hc_head", "eac_logit_scale"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    _assert_llava_weights_loaded(loaded, llava)
    assert loaded.eac_logit_scale.t.item() == 0.0 and loaded.eac_logit_scale().item() == 1.0  # t = 0: tau = 1


def test_legacy_llava_hf_key_layout_loads(tmp_path):
    """llava-hf hub checkpoints store `language_model.model.*`, `vision_tower.*`, `multi_modal_projector.*`."""
    model, _ = tiny_eeca(use_hr_branch=False, eac_loss_weight=0.0)
    llava = llava_twin(model)
    llava.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    legacy = {}
    for key, tensor in state.items():
        if key.startswith("model.language_model."):
            key = "language_model.model." + key.removeprefix("model.language_model.")
        elif key.startswith("lm_head."):
            key = "language_model." + key
        else:
            key = key.removeprefix("model.")
        legacy[key] = tensor.contiguous()
    assert any(k.startswith("language_model.model.") for k in legacy)
    save_file(legacy, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, info = EecaForConditionalGeneration.from_pretrained(
        tmp_path, output_loading_info=True, use_hr_branch=False, eac_loss_weight=0.0)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    _assert_llava_weights_loaded(loaded, llava)


def test_generate_with_hr_branch_uses_pixels_on_prefill_only(hr_on):
    model, processor = hr_on
    processor.tokenizer.padding_side = "left"
    inputs = batch_for(processor)
    calls = []
    hook = model.model.hr_resampler.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            cached = model.generate(**inputs, max_new_tokens=5, do_sample=False, use_cache=True)
            assert len(calls) == 1  # HR features computed once, before the prefill
            uncached = model.generate(**inputs, max_new_tokens=5, do_sample=False, use_cache=False)
            sampled = model.generate(**inputs, max_new_tokens=3, do_sample=True, num_return_sequences=3)
    finally:
        hook.remove()
        processor.tokenizer.padding_side = "right"
    assert cached.shape == (2, inputs["input_ids"].shape[1] + 5)
    assert torch.equal(cached, uncached)
    assert sampled.shape[0] == 6


def test_missing_hr_pixels_and_misuse_are_clear_errors(hr_on):
    model, processor = hr_on
    inputs = batch_for(processor)
    with pytest.raises(ValueError, match="pixel_values_hr"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
    bad = tiny_eeca(use_hr_branch=True)[0]  # no hierarchical labels -> no L_HC head
    with pytest.raises(ValueError, match="hierarchical labels"):
        bad(**inputs, hc_labels=torch.tensor([0, 1]))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("eac_negatives", "global", "eac_negatives"),
        ("eac_sigma", 1.5, "eac_sigma"),
        ("hr_grid", 0, "hr_grid"),
        ("hc_loss_weight", -1.0, "hc_loss_weight"),
        ("hierarchical_labels", ["a", "a"], "duplicates"),
        ("eac_max_logit_scale", 0.0, "eac_max_logit_scale"),
        ("hr_projector", "perceiver", "hr_projector"),
    ],
)
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        EecaConfig(**{field: value})


def test_config_rejects_eac_without_hr_branch_also_when_set_late():
    with pytest.raises(ValueError, match="use_hr_branch"):
        EecaConfig(use_hr_branch=False)  # L_EAC needs the HR tokens
    config = EecaConfig()
    config.eac_negatives = "global"  # as from_pretrained(**kwargs) does, after construction
    with pytest.raises(ValueError, match="eac_negatives"):
        EecaForConditionalGeneration(config)


def test_paper_geometry_token_counts_on_meta_device():
    config = EecaConfig(hierarchical_labels=["church", "lake"])  # CLIP ViT-L/14-336 defaults
    with torch.device("meta"):
        model = EecaForConditionalGeneration(config)
        pixels = torch.empty(1, 3, 336, 336)
        crops = torch.empty(1, 4, 3, 336, 336)
        out = model.get_image_features(pixels, crops)
        hidden = out.hidden_states[config.vision_feature_layer]
    assert hidden.shape[0] * (hidden.shape[1] - 1) == 5 * 576 == 2880  # HR features into the resampler
    assert out.hr_tokens.shape[1] == 128
    assert out.pooler_output[0].shape[0] == config.num_visual_tokens == 704


def test_return_dict_false_gives_llavas_tuple(hr_off):
    model, processor = hr_off
    inputs = batch_for(processor)
    with torch.no_grad():
        as_tuple = model(**inputs, labels=inputs["input_ids"], return_dict=False)
        as_output = model(**inputs, labels=inputs["input_ids"])
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], as_output.loss) and torch.equal(as_tuple[1], as_output.logits)
