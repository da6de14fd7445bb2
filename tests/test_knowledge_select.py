"""eeca select: HDS / HSS / LCS / BRS on hand-computed pools (paper section 3.1, DESIGN section 4)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eeca.knowledge.select import SelectionError, select_indices

#            id    S     RSR
POOL = [("a", 0.30, 1.0), ("b", 0.35, 1.0), ("c", 0.40, 0.5), ("d", 0.10, 0.2),
        ("e", 0.05, 0.1), ("f", 0.20, 0.0), ("g", 0.12, 0.2), ("h", 0.40, 0.9)]


def pick(method, size, pool=POOL, **kw):
    ids = np.array([p[0] for p in pool])
    idx = select_indices(ids, np.array([p[1] for p in pool]), np.array([p[2] for p in pool]), method, size, **kw)
    return list(ids[idx])


def test_hds_highest_rsr_ties_by_higher_s():
    assert pick("hds", 3) == ["b", "a", "h"]


def test_hss_highest_s_ties_by_id():
    assert pick("hss", 3) == ["c", "h", "b"]
    assert pick("hss", 3, pool=POOL[::-1]) == ["c", "h", "b"]  # row order does not matter


def test_lcs_both_below_median_lowest_rank_sum():
    # medians: S 0.25, RSR 0.35 -> candidates d, e, f, g; min-ranks S e1 d2 g3 f4, RSR f1 e2 d3 g3;
    # sums e3 d5 f5 g6 -> e, then d and f tied (by id)
    assert pick("lcs", 3) == ["e", "d", "f"]
    assert pick("lcs", 4) == ["e", "d", "f", "g"]
    with pytest.raises(SelectionError, match="only 4 images"):
        pick("lcs", 5)
    # q = 0.75: S < 0.3625 and RSR < 0.925; a, b pass S but not RSR (1.0), c, h pass RSR but not S (0.40)
    assert set(pick("lcs", 4, quantile=0.75)) == {"d", "e", "f", "g"}


def test_brs_seeded_uniform_and_independent_of_row_order():
    assert pick("brs", 4, seed=3) == pick("brs", 4, pool=POOL[::-1], seed=3)
    assert len(set(pick("brs", 8, seed=1))) == 8
    counts = {p[0]: 0 for p in POOL}
    for seed in range(2000):
        for i in pick("brs", 2, seed=seed):
            counts[i] += 1
    assert all(abs(c / 2000 - 2 / 8) < 0.04 for c in counts.values()), counts  # each 1/4 in expectation


def test_too_large_and_unknown():
    with pytest.raises(SelectionError, match="only 8"):
        pick("hss", 9)
    with pytest.raises(SelectionError, match="unknown method"):
        pick("top", 1)


def test_command_excludes_test_split_and_writes_manifest(tmp_path, run_eeca):
    scores = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"id": [p[0] for p in POOL], "landmark_id": list(range(8)),
                             "s_gt": pa.array([p[1] for p in POOL], pa.float32()),
                             "rsr": [p[2] for p in POOL]}), scores)
    (tmp_path / "test_ids.txt").write_text("b\n")
    out = tmp_path / "hds.parquet"
    res = run_eeca("select", scores, "hds", 3, out, "--exclude", tmp_path / "test_ids.txt", "--seed", 5)
    assert "HDS 3 of 7" in res.stdout
    m = pq.read_table(out)
    assert m.column_names == ["id", "landmark_id", "s_gt", "rsr", "method", "size", "seed"]
    assert m.column("id").to_pylist() == ["a", "h", "c"]
    assert set(m.column("method").to_pylist()) == {"HDS"} and m.column("seed").to_pylist() == [5] * 3
    res = run_eeca("select", scores, "lcs", 6, out, check=False)
    assert res.returncode != 0 and "only 4 images" in res.stderr
