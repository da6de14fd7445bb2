"""EECA's auxiliary losses as plain functions (paper section 4.2; equations as DESIGN section 6).

- `entity_aware_contrastive_loss`: L_EAC. Eq. 3 builds, for entity j of image i, an entity-grouped
  vision embedding c_ij = sum_p W_ijp v_ip from the P HR tokens, with W from the raw dot products
  s_ijp = e_ij . v_ip, min-max normalised over p, zeroed below sigma and renormalised (SPARC [4]).
  Eq. 4 is a symmetric InfoNCE between c_ij and e_ij with cosine similarity and temperature tau
  (SEA [43]); negatives are the other entities of the same image ("image") or of the whole batch
  ("batch").
- `hierarchical_classification_loss`: L_HC, cross-entropy of a linear head on the mean-pooled
  visual tokens [V_HR; V_LR].

Both are means over images, independent of how many text tokens the batch holds; the model adds
them to the LM loss with their weights (see `modeling_eeca` for the Trainer's `num_items_in_batch`).
"""

import warnings

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6


def entity_grouped_embeddings(
    hr_tokens: torch.Tensor, entity_embeds: torch.Tensor, sigma: float | None = None
) -> torch.Tensor:
    """Eq. 3: c_ij = sum_p W_ijp v_ip, W from sparsified, min-max normalised dot products.

    Args:
        hr_tokens: V, [B, P, d].
        entity_embeds: e, [B, M, d].
        sigma: sparsification threshold on the normalised scores; None = 1 / P.
    Returns:
        c, [B, M, d]. W is not detached: gradients reach V through the weights and the sum.
    """
    num_tokens = hr_tokens.shape[1]
    sigma = 1.0 / num_tokens if sigma is None else sigma
    scores = torch.einsum("bmd,bpd->bmp", entity_embeds, hr_tokens)  # s_ijp, [B, M, P]
    low = scores.amin(dim=-1, keepdim=True)
    high = scores.amax(dim=-1, keepdim=True)
    normalised = (scores - low) / (high - low + EPS)  # in [0, 1] over p
    sparse = torch.where(normalised >= sigma, normalised, torch.zeros_like(normalised))
    weights = sparse / (sparse.sum(dim=-1, keepdim=True) + EPS)  # W_ijp, rows sum to 1
    return torch.einsum("bmp,bpd->bmd", weights, hr_tokens)


def entity_aware_contrastive_loss(
    hr_tokens: torch.Tensor,
    entity_embeds: torch.Tensor,
    entity_mask: torch.Tensor,
    *,
    sigma: float | None = None,
    logit_scale: torch.Tensor,
    negatives: str = "image",
    max_logit_scale: float = 100.0,
) -> torch.Tensor:
    """L_EAC (Eq. 4): symmetric InfoNCE between entity-grouped vision embeddings and entity embeddings.

    L = -1/(2B) sum_i 1/M_i sum_j [log softmax_k(phi(c_ij, e_ik)/tau)_j + log softmax_k(phi(e_ij, c_ik)/tau)_j]

    Args:
        hr_tokens: V_HR, [B, P, d] (the HR tokens in the LLM width).
        entity_embeds: e, [B, M, d]; rows where `entity_mask` is False are padding and never used.
        entity_mask: [B, M] bool, True for real entities.
        sigma: Eq. 3 sparsification threshold; None = 1 / P.
        logit_scale: 1 / tau, a scalar tensor (learnable upstream); clamped to `max_logit_scale`.
        negatives: "image" = k runs over the entities of image i (an image with one entity then
            contributes 0); "batch" = k runs over every real entity in the batch.
        max_logit_scale: upper clamp of 1 / tau.
    Returns:
        A scalar tensor. B counts the images with at least one entity; 0 (still attached to the
        graph) when no image has one. Computed in float32.
    """
    if negatives not in ("image", "batch"):
        raise ValueError(f"negatives must be 'image' or 'batch', got {negatives!r}")
    if entity_embeds.shape[:2] != entity_mask.shape:
        raise ValueError(f"entity_mask {tuple(entity_mask.shape)} does not match entity_embeds {tuple(entity_embeds.shape)}")
    # in float32 whatever autocast is active: under bf16 autocast the einsums would return bf16, and the
    # float32 fill value of the masked logits does not fit in bf16
    with torch.autocast(device_type=hr_tokens.device.type, enabled=False):
        hr_tokens = hr_tokens.float()
        entity_embeds = entity_embeds.float()
        mask = entity_mask.bool()
        counts = mask.sum(dim=1)  # M_i, [B]
        has_entities = counts > 0
        num_images = int(has_entities.sum())
        if num_images == 0:
            return hr_tokens.sum() * 0.0
        if negatives == "image" and int((counts == 1).sum()) * 2 > num_images:
            warnings.warn(
                "L_EAC with negatives='image': most images have a single entity and contribute 0; "
                "consider negatives='batch'",
                stacklevel=2,
            )

        grouped = F.normalize(entity_grouped_embeddings(hr_tokens, entity_embeds, sigma), dim=-1)  # c, [B, M, d]
        text = F.normalize(entity_embeds, dim=-1)  # e, [B, M, d]
        scale = logit_scale.float().clamp(max=max_logit_scale)
        # each real entity weighs 1 / M_i within its image
        row_weight = mask.float() / counts.clamp(min=1).unsqueeze(1).float()  # [B, M]
        neg_inf = torch.finfo(torch.float32).min

        if negatives == "image":
            logits_ce = scale * torch.einsum("bjd,bkd->bjk", grouped, text)  # phi(c_ij, e_ik)/tau, [B, M, M]
            logits_ec = scale * torch.einsum("bjd,bkd->bjk", text, grouped)  # phi(e_ij, c_ik)/tau
            column_ok = mask.unsqueeze(1)  # [B, 1, M]
            logits_ce = logits_ce.masked_fill(~column_ok, neg_inf)
            logits_ec = logits_ec.masked_fill(~column_ok, neg_inf)
            log_p_ce = logits_ce.log_softmax(dim=-1).diagonal(dim1=1, dim2=2)  # [B, M]
            log_p_ec = logits_ec.log_softmax(dim=-1).diagonal(dim1=1, dim2=2)
            # padded rows hold -inf-like values on their masked diagonal: select, never multiply by 0
            per_entity = torch.where(mask, log_p_ce + log_p_ec, torch.zeros_like(log_p_ce))  # [B, M]
            total = (per_entity * row_weight).sum()
        else:
            flat_c = grouped[mask]  # [N, d], the real entities of the batch in (i, j) order
            flat_e = text[mask]
            logits = scale * flat_c @ flat_e.T  # [N, N]; row n is phi(c_n, e_k)/tau
            log_p_ce = logits.log_softmax(dim=-1).diagonal()
            log_p_ec = logits.T.log_softmax(dim=-1).diagonal()  # phi(e_n, c_k)/tau
            total = ((log_p_ce + log_p_ec) * row_weight[mask]).sum()
        return -total / (2 * num_images)


def hierarchical_classification_loss(
    visual_tokens: torch.Tensor, labels: torch.Tensor, head: nn.Module
) -> torch.Tensor:
    """L_HC: cross-entropy of `head` on z_i = mean over T of the visual tokens [V_HR; V_LR].

    Args:
        visual_tokens: [B, T, d].
        labels: [B] long, class index into the hierarchical label vocabulary; -100 = no label.
        head: maps [B, d] -> [B, num_labels] logits (a linear layer in the model).
    Returns:
        The mean cross-entropy over labelled images; 0 (attached to the graph) when none is labelled.
    """
    pooled = visual_tokens.float().mean(dim=1)  # z, [B, d]
    logits = head(pooled.to(visual_tokens.dtype)).float()  # [B, num_labels]
    labelled = labels != -100
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled], labels[labelled])
