"""L_EAC and L_HC against independent loop implementations, hand-computed cases, masking and gradients."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from eeca.model.losses import (
    entity_aware_contrastive_loss,
    entity_grouped_embeddings,
    hierarchical_classification_loss,
)


def naive_eac(hr, ent, mask, scale, negatives, sigma=None):
    """DESIGN section 6 written as plain Python loops over images and entities."""
    batch, num_tokens, _ = hr.shape
    sigma = 1.0 / num_tokens if sigma is None else sigma
    grouped, texts, owners = [], [], []
    for i in range(batch):
        for j in range(ent.shape[1]):
            if not mask[i, j]:
                continue
            s = [float(ent[i, j] @ hr[i, p]) for p in range(num_tokens)]
            lo, hi = min(s), max(s)
            norm = [(x - lo) / (hi - lo + 1e-6) for x in s]
            sparse = [x if x >= sigma else 0.0 for x in norm]
            total = sum(sparse)
            w = [x / (total + 1e-6) for x in sparse]
            c = sum(w[p] * hr[i, p].double() for p in range(num_tokens))
            grouped.append(c)
            texts.append(ent[i, j].double())
            owners.append(i)

    def cos(a, b):
        return float(a @ b) / max(float(a.norm()) * float(b.norm()), 1e-12)

    loss, images = 0.0, 0
    for i in range(batch):
        rows = [n for n, o in enumerate(owners) if o == i]
        if not rows:
            continue
        images += 1
        cols = rows if negatives == "image" else list(range(len(owners)))
        per_image = 0.0
        for n in rows:
            for a, b in ((grouped, texts), (texts, grouped)):
                logits = [scale * cos(a[n], b[k]) for k in cols]
                m = max(logits)
                lse = m + math.log(sum(math.exp(x - m) for x in logits))
                per_image += logits[cols.index(n)] - lse
        loss += per_image / len(rows)
    return -loss / (2 * images)


def random_case(seed, batch=3, tokens=6, entities=4, dim=8):
    g = torch.Generator().manual_seed(seed)
    hr = torch.randn(batch, tokens, dim, generator=g)
    ent = torch.randn(batch, entities, dim, generator=g)
    mask = torch.rand(batch, entities, generator=g) > 0.3
    mask[0, :] = True  # a full image
    mask[1, :] = False
    mask[1, 0] = True  # an image with exactly one entity
    return hr, ent, mask


@pytest.mark.parametrize("negatives", ["image", "batch"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eac_matches_loop_implementation(negatives, seed):
    hr, ent, mask = random_case(seed)
    scale = 2.5
    got = entity_aware_contrastive_loss(hr, ent, mask, logit_scale=torch.tensor(scale), negatives=negatives)
    want = naive_eac(hr, ent, mask, scale, negatives)
    assert got.item() == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_eac_sigma_and_images_without_entities_match_loop():
    hr, ent, mask = random_case(5, batch=4)
    mask[3] = False  # an image with no entity is left out of B
    got = entity_aware_contrastive_loss(hr, ent, mask, sigma=0.4, logit_scale=torch.tensor(1.7), negatives="batch")
    assert got.item() == pytest.approx(naive_eac(hr, ent, mask, 1.7, "batch", sigma=0.4), rel=1e-4)


def test_eac_hand_computed_two_entities():
    # P = 2 orthogonal HR tokens; each entity points at one token, so c_ij = that token exactly
    hr = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    ent = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])
    mask = torch.tensor([[True, True]])
    # cosines: matched 1, unmatched 0 -> each direction's log-prob = log(e^s / (e^s + 1)) with s = scale
    scale = 3.0
    want = -math.log(math.exp(scale) / (math.exp(scale) + 1.0))
    got = entity_aware_contrastive_loss(hr, ent, mask, logit_scale=torch.tensor(scale))
    assert got.item() == pytest.approx(want, rel=1e-5)
    grouped = entity_grouped_embeddings(hr, ent)
    torch.testing.assert_close(grouped, torch.eye(2).unsqueeze(0), atol=1e-5, rtol=0)


def test_eac_single_entity_images_contribute_zero_under_image_negatives_and_warn():
    hr = torch.randn(2, 4, 8)
    ent = torch.randn(2, 3, 8)
    mask = torch.tensor([[True, False, False], [True, False, False]])
    with pytest.warns(UserWarning, match="single entity"):
        loss = entity_aware_contrastive_loss(hr, ent, mask, logit_scale=torch.tensor(1.0))
    assert loss.item() == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch_loss = entity_aware_contrastive_loss(hr, ent, mask, logit_scale=torch.tensor(1.0), negatives="batch")
    assert batch_loss.item() > 0


def test_eac_padded_entities_do_not_change_the_loss():
    hr, ent, mask = random_case(3)
    scale = torch.tensor(4.0)
    base = entity_aware_contrastive_loss(hr, ent, mask, logit_scale=scale, negatives="batch")
    garbage = ent.clone()
    garbage[~mask] = torch.randn(int((~mask).sum()), ent.shape[-1]) * 100
    assert entity_aware_contrastive_loss(hr, garbage, mask, logit_scale=scale, negatives="batch").item() == pytest.approx(
        base.item(), rel=1e-6
    )
    wider = torch.cat([ent, torch.randn(3, 2, ent.shape[-1])], dim=1)
    wider_mask = torch.cat([mask, torch.zeros(3, 2, dtype=torch.bool)], dim=1)
    for negatives in ("image", "batch"):
        a = entity_aware_contrastive_loss(hr, ent, mask, logit_scale=scale, negatives=negatives)
        b = entity_aware_contrastive_loss(hr, wider, wider_mask, logit_scale=scale, negatives=negatives)
        assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_eac_gradients_reach_tokens_embeddings_and_temperature():
    hr, ent, mask = random_case(4)
    hr.requires_grad_(True)
    ent.requires_grad_(True)
    t = torch.zeros((), requires_grad=True)
    loss = entity_aware_contrastive_loss(hr, ent, mask, logit_scale=t.exp(), negatives="batch")
    loss.backward()
    assert torch.isfinite(hr.grad).all() and hr.grad.abs().sum() > 0
    assert ent.grad[mask].abs().sum() > 0 and ent.grad[~mask].abs().sum() == 0
    assert t.grad is not None and t.grad.abs() > 0


def test_eac_clamps_logit_scale():
    hr, ent, mask = random_case(6)
    at_cap = entity_aware_contrastive_loss(hr, ent, mask, logit_scale=torch.tensor(100.0), negatives="batch")
    above = entity_aware_contrastive_loss(hr, ent, mask, logit_scale=torch.tensor(1e4), negatives="batch")
    assert above.item() == pytest.approx(at_cap.item(), rel=1e-6)


def test_eac_without_entities_is_zero_and_rejects_bad_mode():
    hr = torch.randn(2, 4, 8, requires_grad=True)
    loss = entity_aware_contrastive_loss(hr, torch.randn(2, 1, 8), torch.zeros(2, 1, dtype=torch.bool),
                                         logit_scale=torch.tensor(1.0))
    assert loss.item() == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="negatives"):
        entity_aware_contrastive_loss(hr, torch.randn(2, 1, 8), torch.ones(2, 1, dtype=torch.bool),
                                      logit_scale=torch.tensor(1.0), negatives="global")


def test_hc_loss_matches_loop_and_ignores_unlabelled():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 3)
    tokens = torch.randn(4, 5, 8, requires_grad=True)
    labels = torch.tensor([2, -100, 0, 1])
    got = hierarchical_classification_loss(tokens, labels, head)
    want = 0.0
    for i in (0, 2, 3):
        z = sum(tokens[i, t] for t in range(5)) / 5
        want += -F.log_softmax(head(z), dim=-1)[labels[i]].item()
    assert got.item() == pytest.approx(want / 3, rel=1e-5)
    got.backward()
    assert tokens.grad[1].abs().sum() == 0 and tokens.grad[0].abs().sum() > 0
    none = hierarchical_classification_loss(tokens, torch.full((4,), -100), head)
    assert none.item() == 0.0


@pytest.mark.parametrize("negatives", ["image", "batch"])
def test_eac_under_bf16_autocast_is_computed_in_float32(negatives):
    # bf16 autocast (the paper's training precision) must neither overflow the masked logits nor round the loss
    g = torch.Generator().manual_seed(3)
    hr, ent = torch.randn(3, 8, 16, generator=g), torch.randn(3, 4, 16, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    scale = torch.tensor(10.0)
    ref = entity_aware_contrastive_loss(hr, ent, mask, logit_scale=scale, negatives=negatives)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = entity_aware_contrastive_loss(hr, ent, mask, logit_scale=scale, negatives=negatives)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got, ref)
