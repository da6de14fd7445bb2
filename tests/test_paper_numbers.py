"""The paper's numbers the report prints beside ours (``paper_numbers.json``) against a copy typed
independently from the paper's text (Tables 1-4, 6, 7), and the paper's own arithmetic between them."""

from eeca.report.data import paper_numbers

# Typed from the paper's text, row by row, in its printed order.
TABLE1 = {  # gain over the baseline, % of the baseline
    "BRS": (40.1, 56.2), "LCS": (23.0, 28.1), "HSS": (40.1, 60.4), "HDS": (49.3, 64.1)}
TABLE2 = {  # Strongly Known, Known
    "baseline": (4.12, 4.56), "entity_prompt_infer": (4.56, 3.24),
    "entity_prompt_train": (19.52, 9.32), "eac": (8.52, 7.00)}
TABLE3 = {  # HSS-50k: Strongly Known, Known, Accuracy
    "baseline": (4.12, 4.56, 8.68), "data": (7.48, 6.44, 13.92), "hr": (7.92, 5.96, 13.88),
    "hc": (8.48, 5.92, 14.40), "eac": (8.52, 7.00, 15.52)}
TABLE4 = {  # 25k: accuracy per step, columns HDS, HSS, LCS
    "baseline": (8.68, 8.68, 8.68), "data": (13.00, 13.00, 10.68), "hr": (13.60, 13.84, 12.08),
    "hc": (14.00, 14.40, 12.32), "eac": (14.40, 13.84, 12.32)}
TABLE6 = {  # Strongly Known, Known, Weakly Unknown, Unknown
    "baseline": (103, 114, 145, 2138), "data": (187, 161, 145, 2007), "hr": (198, 149, 152, 2001),
    "hc": (212, 148, 163, 1977), "eac": (213, 175, 159, 1953)}
TABLE7_BASELINE = (103, 114, 145, 2138)
TABLE7 = {
    "HDS": {"data": (182, 142, 151, 2025), "hr": (218, 122, 185, 1975), "hc": (233, 127, 175, 1965),
            "eac": (229, 121, 199, 1951)},
    "HSS": {"data": (169, 135, 201, 1995), "hr": (202, 144, 177, 1977), "hc": (205, 141, 193, 1961),
            "eac": (226, 134, 153, 1987)},
    "LCS": {"data": (179, 88, 253, 1980), "hr": (203, 99, 243, 1955), "hc": (192, 116, 254, 1938),
            "eac": (198, 110, 266, 1926)},
}


def test_file_matches_the_typed_copy():
    p = paper_numbers()
    assert p["count_order"] == ["strongly_known", "known", "weakly_unknown", "unknown"]
    assert {s: (v["25000"], v["50000"]) for s, v in p["table1"]["values"].items()} == TABLE1
    assert {k: (v["strongly_known"], v["known"]) for k, v in p["table2"].items()} == TABLE2
    assert (p["table3"]["selection"], p["table3"]["size"]) == ("HSS", 50000)
    assert {k: (v["strongly_known"], v["known"], v["accuracy"]) for k, v in p["table3"]["rows"].items()} == TABLE3
    assert p["table4"]["size"] == 25000
    acc = p["table4"]["accuracy"]
    assert {k: tuple(acc[s][k] for s in ("HDS", "HSS", "LCS")) for k in TABLE4} == TABLE4
    assert set(acc["HDS"]) == set(TABLE4)
    assert {k: tuple(v) for k, v in p["table6"].items()} == TABLE6
    assert tuple(p["table7"]["baseline"]) == TABLE7_BASELINE
    assert {s: {k: tuple(v) for k, v in p["table7"][s].items()} for s in TABLE7} == TABLE7
    assert set(p["table7"]) == {"baseline", *TABLE7}


def test_every_count_row_sums_to_the_test_set():
    rows = [*TABLE6.values(), TABLE7_BASELINE, *(r for s in TABLE7.values() for r in s.values())]
    assert all(sum(r) == 2500 for r in rows)


def test_table3_is_table6_in_percent():
    for step, (sk, k, acc) in TABLE3.items():
        counts = TABLE6[step]
        assert (round(100 * counts[0] / 2500, 2), round(100 * counts[1] / 2500, 2)) == (sk, k)
        assert abs(acc - (sk + k)) < 1e-9


def test_table4_and_table7_agree_except_where_the_notes_say():
    agree, differ = [], []
    for col, sel in enumerate(("HDS", "HSS", "LCS")):
        for step, counts in TABLE7[sel].items():
            (agree if round(100 * (counts[0] + counts[1]) / 2500, 2) == TABLE4[step][col] else differ).append(
                (sel, step))
    # the notes of paper_numbers.json: the third and fourth rows swapped, and +data, for HDS and HSS
    assert sorted(differ) == sorted((s, k) for s in ("HDS", "HSS") for k in ("data", "hc", "eac"))
    notes = " ".join(paper_numbers()["notes"])
    assert "12.16" in notes and "12.96" in notes and "swapped" in notes


def test_table1_is_the_gain_over_the_baseline():
    base = 100 * (103 + 114) / 2500
    for sel, counts in (("HDS", TABLE7["HDS"]["data"]), ("HSS", TABLE7["HSS"]["data"]), ("LCS", TABLE7["LCS"]["data"])):
        acc = 100 * (counts[0] + counts[1]) / 2500
        assert round(100 * (acc - base) / base, 1) == TABLE1[sel][0]
    assert round(100 * (TABLE3["data"][2] - base) / base, 1) == TABLE1["HSS"][1]
