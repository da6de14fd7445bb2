"""eeca mgld stage1: top-3 by S per landmark and the softmax(S / T) draw (paper 3.1, App. B.2)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eeca.knowledge.stage1 import DEFAULT_TEMPERATURE, probabilities, stage1_choice


def frequencies(ids, s, draws=3000, **kw):
    ids, s = np.array(ids), np.array(s)
    counts = {}
    for seed in range(draws):
        (_, row, _), = stage1_choice(ids, np.zeros(len(ids), np.int64), s, seed=seed, **kw)
        counts[ids[row]] = counts.get(ids[row], 0) + 1
    return {k: v / draws for k, v in counts.items()}


def test_softmax_probabilities_by_hand():
    s = np.array([0.31, 0.30, 0.29])
    # T = 0.01 (the default): e^31, e^30, e^29 -> e^1, 1, e^-1 over e + 1 + 1/e = 4.08616
    assert np.allclose(probabilities(s, DEFAULT_TEMPERATURE), [0.66524, 0.24473, 0.09003], atol=1e-5)
    # T = 0.005: e^2, 1, e^-2 over 8.52439
    assert np.allclose(probabilities(s, 0.005), [0.86681, 0.11731, 0.01588], atol=1e-5)
    # T = 0 is the paper's 3.1 reading, the most similar image
    assert probabilities(s, 0).tolist() == [1.0, 0.0, 0.0]
    # a large T is uniform: what weights proportional to the raw cosines amounted to (34/33/32%)
    assert np.allclose(probabilities(s, 100.0), 1 / 3, atol=1e-4)
    # negative cosines need no special case
    assert np.allclose(probabilities(np.array([0.0, -0.01]), 0.01), [0.73106, 0.26894], atol=1e-5)


def test_draw_follows_softmax_over_the_top_three():
    # the 4th image (S 0.1) is never a candidate; at T = 0.1: e^5, e^3, e^2 over 175.89
    f = frequencies(["w", "x", "y", "z"], [0.3, 0.5, 0.1, 0.2], temperature=0.1)
    assert set(f) == {"x", "w", "z"}
    for k, p in {"x": 0.84379, "w": 0.11420, "z": 0.04201}.items():
        assert abs(f[k] - p) < 3 * np.sqrt(p * (1 - p) / 3000), (k, f[k], p)  # 3 standard errors


def test_default_makes_the_top_image_the_usual_choice():
    f = frequencies(["a", "b", "c"], [0.31, 0.30, 0.29])
    assert f["a"] > 0.6 and f["a"] > 2 * f["b"]
    assert frequencies(["a", "b", "c"], [0.31, 0.30, 0.29], draws=200, temperature=0) == {"a": 1.0}


def test_ties_by_id_and_per_landmark_order():
    ids = np.array(["d", "c", "b", "a", "e"])
    lids = np.array([7, 7, 7, 7, 3])
    picks = stage1_choice(ids, lids, np.array([0.2, 0.2, 0.2, 0.2, 0.9]), seed=1)
    assert [p[0] for p in picks] == [3, 7]
    assert list(ids[picks[1][2]]) == ["a", "b", "c"]  # equal S: the smallest ids are the top three
    assert list(ids[picks[0][2]]) == ["e"]  # a landmark with one image keeps it


def test_command_is_seeded_and_independent_of_row_order(tmp_path, run_eeca):
    rng = np.random.default_rng(0)
    n = 60
    table = pa.table({"id": [f"{i:016x}" for i in range(n)], "landmark_id": rng.integers(0, 12, n),
                      "s_gt": pa.array(rng.uniform(-0.1, 0.5, n), pa.float32()), "rsr": rng.uniform(0, 1, n)})
    pq.write_table(table, tmp_path / "a.parquet")
    pq.write_table(table.take(rng.permutation(n)), tmp_path / "b.parquet")
    res = run_eeca("mgld", "stage1", tmp_path / "a.parquet", tmp_path / "out_a.parquet", "--seed", 4)
    assert "landmarks" in res.stdout
    run_eeca("mgld", "stage1", tmp_path / "b.parquet", tmp_path / "out_b.parquet", "--seed", 4)
    a, b = pq.read_table(tmp_path / "out_a.parquet"), pq.read_table(tmp_path / "out_b.parquet")
    assert a.equals(b)
    assert a.column_names == ["landmark_id", "id", "s_gt", "rsr", "candidates", "candidate_s"]
    assert a.column("landmark_id").to_pylist() == sorted(set(table.column("landmark_id").to_pylist()))
    rows = {r["id"]: r for r in table.to_pylist()}
    for r in a.to_pylist():
        mine = sorted((x for x in rows.values() if x["landmark_id"] == r["landmark_id"]),
                      key=lambda x: (-x["s_gt"], x["id"]))
        assert r["candidates"] == [x["id"] for x in mine[:3]] and r["id"] in r["candidates"]
