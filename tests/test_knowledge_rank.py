"""streaming S / rank / RSR against a naive full-matrix reference (paper section 3.1)."""

import numpy as np
import pytest
import torch

from eeca.knowledge.rank import rsr_from_rank, streaming_ranks, streaming_scores


def naive(x, n, gt):
    """The definition, on the full N x M matrix: rank = 1 + #{sim > s_gt}, top1 = first argmax."""
    sims = x @ n.T
    s_gt = sims[np.arange(len(gt)), gt]
    rank = 1 + (sims > s_gt[:, None]).sum(1)
    return s_gt, rank, sims.argmax(1), sims.max(1)


def integer_world(n_img, m, d, n_dup, seed):
    """Small-integer embeddings: every dot product is exact in float32 whatever the summation
    order, so ranks must match the naive matrix bit for bit, and ties are plentiful. ``n_dup``
    names are copies of others (a duplicate landmark name), some of them ground truths."""
    rng = np.random.default_rng(seed)
    names = rng.integers(-3, 4, size=(m, d)).astype(np.float32)
    src = rng.choice(m, n_dup, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(m), src), n_dup, replace=False)
    names[dst] = names[src]
    gt = rng.integers(0, m, size=n_img)
    gt[: n_dup] = dst[: min(n_dup, n_img)]  # images whose ground truth has a duplicate
    x = names[gt] + rng.integers(-2, 3, size=(n_img, d)).astype(np.float32)
    return x, names, gt


@pytest.mark.parametrize("block_size,name_block,n_img,m", [(64, None, 600, 1500), (37, 101, 600, 1500),
                                                            (1000, 256, 600, 1500), (7, 3, 40, 60)])
def test_integer_embeddings_match_naive_exactly(block_size, name_block, n_img, m):
    x, names, gt = integer_world(n_img, m, 16, m // 15, seed=block_size)
    s_ref, r_ref, t_ref, ts_ref = naive(x, names, gt)
    r = streaming_scores(x, names, gt, block_size=block_size, name_block_size=name_block)
    np.testing.assert_array_equal(r.s_gt, s_ref)
    np.testing.assert_array_equal(r.rank, r_ref)
    np.testing.assert_array_equal(r.top1_index, t_ref)
    np.testing.assert_array_equal(r.top1_sim, ts_ref)
    assert ((x @ names.T == s_ref[:, None]).sum(1) > 1).any(), "the case must contain ties"


def test_duplicate_ground_truth_is_not_counted():
    names = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]], dtype=np.float32)
    s_gt, rank = streaming_ranks(x, names, np.array([1, 3, 2]), block_size=2, name_block_size=3)
    # image 0: names 0 and 1 tie with the ground truth -> rank 1; image 1: name 2 (1.0) beats 0.8;
    # image 2: 0.6 for its gt, beaten by names 0, 1 (0.8) and 3 (0.96)
    np.testing.assert_array_equal(rank, [1, 2, 4])
    np.testing.assert_allclose(s_gt, [1.0, 0.8, 0.6], rtol=1e-6)
    np.testing.assert_allclose(rsr_from_rank(rank, 4), [1.0, 2 / 3, 0.0])


def test_float64_random_unit_vectors_and_torch_input():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 24))
    n = rng.normal(size=(900, 24))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    n[5] = n[7]
    gt = rng.integers(0, 900, 300)
    gt[:3] = 7
    s_ref, r_ref, t_ref, _ = naive(x, n, gt)
    s, r = streaming_ranks(torch.from_numpy(x), torch.from_numpy(n), torch.from_numpy(gt), block_size=50,
                           name_block_size=128)
    assert isinstance(r, torch.Tensor) and r.dtype == torch.int64
    np.testing.assert_array_equal(r.numpy(), r_ref)
    np.testing.assert_allclose(s.numpy(), s_ref, rtol=0, atol=1e-12)  # another summation order
    res = streaming_scores(x, n, gt, block_size=50)
    np.testing.assert_array_equal(res.top1_index, t_ref)
    np.testing.assert_allclose(res.rsr, 1 - (r_ref - 1) / 899)


def test_float16_input_is_upcast_not_rounded():
    x, names, gt = integer_world(200, 400, 8, 20, seed=3)
    _, r_ref, _, _ = naive(x, names, gt)
    _, r = streaming_ranks(x.astype(np.float16), names.astype(np.float16), gt, block_size=30)
    np.testing.assert_array_equal(r, r_ref)


def test_bad_inputs_are_clear_errors():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="out of range"):
        streaming_ranks(x, np.zeros((2, 4), np.float32), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[N, d\]"):
        streaming_ranks(x, np.zeros((2, 5), np.float32), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="shape"):
        streaming_ranks(x, np.zeros((2, 4), np.float32), np.array([0, 1]))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_exact_on_5000_by_20000_with_duplicate_names(device):
    x, names, gt = integer_world(5000, 20000, 32, 2000, seed=11)
    _, r_ref, t_ref, _ = naive(x, names, gt)
    r = streaming_scores(torch.from_numpy(x).to(device), torch.from_numpy(names).to(device), gt, block_size=1024,
                         name_block_size=4096)
    np.testing.assert_array_equal(r.rank, r_ref)
    np.testing.assert_array_equal(r.top1_index, t_ref)
