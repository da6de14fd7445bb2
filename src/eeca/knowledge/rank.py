"""Exact, streaming S / rank / RSR of every image against every landmark name (paper section 3.1).

For image i with ground-truth name g_i and cosine similarities sim(x_i, n) to all M names:

* ``s_gt_i = sim(x_i, n_{g_i})`` (the paper's S),
* ``rank_i = 1 + #{n : sim(x_i, n) > s_gt_i}`` (1 = ground truth first; ties do not count, so a
  duplicate name, whose text embedding is identical, never pushes the ground truth down),
* ``RSR_i = 1 - (rank_i - 1) / (M - 1)`` (1.0 = ground truth first),
* ``top1`` = the first name with the highest similarity.

The N x M similarity matrix is never materialised (4.1M x 203k is 1.7 TB even in fp16): images go
through in blocks, names in blocks when M is large. ``s_gt`` is read out of the same matmul result
its row is compared against; a separate dot product can round differently and let the ground truth
count itself. To keep that true when names are blocked, images are visited sorted by their
ground-truth index; the result blocks of the name blocks holding an image block's ground truths are
kept until ``s_gt`` is known for every row, then every name block is counted once, so each
(image, name) product is computed exactly once. An image block is cut short when those kept blocks
would pass 512 MiB: with many images per name (GLDv2: ~20) it spans one or two name blocks; with
ground truths scattered over all names it shrinks towards ``512 MiB / (4 M)`` rows of full width. The last name block is
zero-padded to the full block width so every matmul has the same shape (identical vectors then give
identical results wherever they sit); padded columns are never counted.

Precision: products are computed in float32 (float64 inputs stay float64), TF32 disabled, on the
device of ``device`` (default: the input tensor's device, CPU for numpy). Half-precision inputs
(the float16 embedding shards, bf16 model outputs on GPU) are upcast per block, so the ranks are
exact for the stored embeddings. A half-precision matmul would round its *outputs* to 8-11 mantissa
bits and turn near-ties into false ties, so it is deliberately not offered.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

# float32 elements of one similarity block: a GPU wants large matmuls (256 MiB); on a CPU a block
# the size of the last-level cache (32 MiB) lets the count and top-1 passes read it from there
# instead of from DRAM, which is what kept them from the matmul rate at large N
_BLOCK_ELEMENTS = {"cuda": 1 << 26, "cpu": 1 << 23}
_HELD_ELEMENTS = 1 << 27  # 512 MiB of float32 kept while the s_gt of an image block are read
_CONVERTED_NAMES_ELEMENTS = 1 << 28  # names converted once, not per image block, up to 1 GiB of float32


@dataclass
class RankResult:
    """Per-image results, in input order (numpy arrays, or CPU tensors when the input was a tensor)."""

    s_gt: np.ndarray | torch.Tensor  # [N] similarity to the ground-truth name
    rank: np.ndarray | torch.Tensor  # [N] int64, 1 = ground truth first
    top1_index: np.ndarray | torch.Tensor | None  # [N] int64, row of the most similar name (None: not asked)
    top1_sim: np.ndarray | torch.Tensor | None  # [N] its similarity
    num_names: int  # M

    @property
    def rsr(self) -> np.ndarray | torch.Tensor:
        """RSR = 1 - (rank - 1) / (M - 1); defined as 1.0 when there is a single name."""
        return rsr_from_rank(self.rank, self.num_names)


def rsr_from_rank(rank, num_names: int):
    """Relative Similarity Rank (float64) from rank (1 = first) among ``num_names`` candidates."""
    rank = rank.double() if isinstance(rank, torch.Tensor) else np.asarray(rank, np.float64)
    if num_names <= 1:
        return rank * 0 + 1.0
    return 1.0 - (rank - 1) / (num_names - 1)


def streaming_ranks(image_emb, name_emb, gt_index, block_size: int = 4096, name_block_size: int | None = None,
                    device: str | torch.device | None = None):
    """(s_gt, rank) of each image's ground-truth name among all names, without an N x M matrix.

    ``image_emb`` [N, d], ``name_emb`` [M, d] (L2-normalised for cosine similarity), ``gt_index`` [N]
    (row of each image's name in ``name_emb``); numpy arrays or torch tensors. See
    :func:`streaming_scores` for the block sizes and the full result (top-1, RSR).
    """
    r = streaming_scores(image_emb, name_emb, gt_index, block_size=block_size,
                         name_block_size=name_block_size, device=device, top1=False)
    return r.s_gt, r.rank


def streaming_scores(image_emb, name_emb, gt_index, block_size: int = 4096, name_block_size: int | None = None,
                     device: str | torch.device | None = None, top1: bool = True) -> RankResult:
    """S, rank, RSR and top-1 of every image in one streaming pass over the names.

    Args:
        image_emb: [N, d] image embeddings.
        name_emb: [M, d] name embeddings.
        gt_index: [N] ground-truth row in ``name_emb`` of each image.
        block_size: images per block.
        name_block_size: names per block; ``None`` picks all names when a ``block_size x M`` float32
            result fits the block budget (256 MiB on a GPU, 32 MiB on a CPU), else the largest block
            that does; with N < ``block_size`` images, as many names as fill half the budget at N
            rows when that is more (fewer, wider blocks for a small N).
        device: where to compute; default the device of ``image_emb`` (CPU for numpy).
        top1: also find each image's most similar name (one more pass over each result block).
    """
    as_numpy = not isinstance(image_emb, torch.Tensor)
    x_all = _as_tensor(image_emb)
    n_all = _as_tensor(name_emb)
    gt = _as_tensor(gt_index).long().cpu()
    if x_all.ndim != 2 or n_all.ndim != 2 or x_all.shape[1] != n_all.shape[1]:
        raise ValueError(f"expected image_emb [N, d] and name_emb [M, d], got {tuple(x_all.shape)} and "
                         f"{tuple(n_all.shape)}")
    n_img, m = x_all.shape[0], n_all.shape[0]
    if gt.shape != (n_img,):
        raise ValueError(f"gt_index must have shape [{n_img}], got {tuple(gt.shape)}")
    if m == 0:
        raise ValueError("name_emb is empty: there is nothing to rank against")
    if n_img and (int(gt.min()) < 0 or int(gt.max()) >= m):
        raise ValueError(f"gt_index out of range [0, {m}): min {int(gt.min())}, max {int(gt.max())}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    dev = torch.device(device) if device is not None else x_all.device
    dtype = torch.float64 if x_all.dtype == torch.float64 else torch.float32
    block_elements = _BLOCK_ELEMENTS["cpu" if dev.type == "cpu" else "cuda"]
    # names per block: the budget over block_size rows; with fewer images (N < block_size) wider, at
    # half the budget, since on 2 loaded cores every block's passes cost a wait (N=500: 2,048 -> 8,192
    # names was 20% faster) while a block filling the whole cache was slower (16,384 names: +15% CPU)
    widest = max(1, min(block_size, n_img))  # rows of the largest image block
    nb = min(name_block_size or max(1, min(m, max(block_elements // block_size, block_elements // (2 * widest)))),
             1 << 24)
    n_blocks = -(-m // nb)

    s_gt = torch.empty(n_img, dtype=dtype)
    rank = torch.empty(n_img, dtype=torch.int64)
    top1_index = torch.empty(n_img, dtype=torch.int64)
    top1_sim = torch.empty(n_img, dtype=dtype)
    order = torch.argsort(gt, stable=True)  # visit images by ground truth: few name blocks per image block
    gt_block = gt // nb
    sorted_block = gt_block[order]
    # distinct[k] = how many different name blocks hold the ground truths of sorted rows 0..k
    distinct = torch.cumsum(torch.cat([torch.ones(min(n_img, 1), dtype=torch.int64),
                                       (sorted_block.diff() != 0).long()]), 0)

    bounds = [0]  # image blocks: the longest run of rows whose kept result blocks fit the budget
    while bounds[-1] < n_img:
        start = bounds[-1]
        k = torch.arange(1, min(block_size, n_img - start) + 1)
        kept = k * nb * (distinct[start:start + len(k)] - distinct[start] + 1)  # monotone in length
        bounds.append(start + max(1, int((kept <= _HELD_ELEMENTS).sum())))

    # names in the compute dtype: converted once for all image blocks when there are several (up to
    # 1 GiB), else block by block into one reused buffer (a fresh all-names copy costs its page faults:
    # 13% of the CPU time of a 500-image call)
    converted = buffer = None
    if len(bounds) > 2 and n_blocks * nb * n_all.shape[1] <= _CONVERTED_NAMES_ELEMENTS:
        converted = n_all.new_zeros(n_blocks * nb, n_all.shape[1], dtype=dtype, device=dev)
        converted[:m] = n_all

    def name_block(j: int) -> torch.Tensor:  # [nb, d], the last block zero-padded; used at once
        nonlocal buffer
        if converted is not None:
            return converted[j * nb:(j + 1) * nb]
        blk = n_all[j * nb:(j + 1) * nb]
        if buffer is None:
            buffer = torch.empty(nb, n_all.shape[1], dtype=dtype, device=dev)
        buffer[:len(blk)] = blk
        buffer[len(blk):] = 0
        return buffer

    with _no_tf32(), torch.inference_mode():
        for start, end in zip(bounds[:-1], bounds[1:]):
            rows = order[start:end]
            x = x_all[rows.to(x_all.device)].to(dev, dtype)  # [b, d]
            g = gt[rows].to(dev)  # [b]
            gb = gt_block[rows].to(dev)
            held: dict[int, torch.Tensor] = {}
            s = torch.empty(len(rows), dtype=dtype, device=dev)
            best = torch.empty(len(rows), dtype=dtype, device=dev)
            best_i = torch.empty(len(rows), dtype=torch.int64, device=dev)
            for j in sorted(set(gt_block[rows].tolist())):
                sims = x @ name_block(j).T  # [b, nb]
                here = torch.nonzero(gb == j).squeeze(1)
                s[here] = sims[here, g[here] - j * nb]
                if top1:  # while the block is still in the cache, not when it is counted from memory
                    _fold_top1(sims[:, :min(nb, m - j * nb)], j * nb, best, best_i, first=not held)
                held[j] = sims
            count = torch.zeros(len(rows), dtype=torch.int64, device=dev)
            for j in range(n_blocks):
                valid = min(nb, m - j * nb)
                if j in held:
                    sims = held.pop(j)[:, :valid]
                else:
                    sims = (x @ name_block(j).T)[:, :valid]  # [b, valid]
                    if top1:
                        _fold_top1(sims, j * nb, best, best_i, first=False)
                # in place to 0/1 and a float sum: several times faster on CPU than summing a bool
                # mask; exact, as every partial sum is an integer below 2**24
                count += sims.gt_(s[:, None]).sum(1).long()
            s_gt[rows] = s.cpu()
            rank[rows] = count.cpu() + 1
            top1_index[rows] = best_i.cpu()
            top1_sim[rows] = best.cpu()

    if not top1:
        top1_index = top1_sim = None
    if as_numpy:
        return RankResult(*(t if t is None else t.numpy() for t in (s_gt, rank, top1_index, top1_sim)), m)
    return RankResult(s_gt, rank, top1_index, top1_sim, m)


def _fold_top1(sims: torch.Tensor, offset: int, best: torch.Tensor, best_i: torch.Tensor, first: bool) -> None:
    """Fold the result block of names ``offset ...`` into the running top-1 (``best``, ``best_i``, in place).

    The first maximum wins (index order), whatever order the blocks come in: a block that ties the
    best so far takes over only when it lies before it. The maximum alone is a cheaper pass than
    max-with-index, so the index is looked up only for the rows a block improves (ever fewer as the
    blocks go by); the first block of an image block sets every row.
    """
    if first:
        torch.max(sims, 1, out=(best, best_i))
        best_i += offset
        return
    peak = sims.amax(1)
    better = torch.nonzero((peak > best) | ((peak == best) & (best_i > offset))).squeeze(1)
    if len(better):
        v, i = sims[better].max(1)
        best[better] = v
        best_i[better] = i + offset


def _as_tensor(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    return torch.from_numpy(np.ascontiguousarray(a))


@contextlib.contextmanager
def _no_tf32():
    """TF32 would round the float32 products on Ampere+ GPUs; exact ranks need full float32."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
