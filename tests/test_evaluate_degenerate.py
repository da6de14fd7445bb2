"""Degenerate answers: the garble the synthetic world's models produced is caught, ordinary text passes."""

import pytest

from eeca.evaluate.degenerate import degenerate_reason, degenerate_summary, word_vocabulary

GARBLED = [
    "ThihisshisThihissshissssssshihishiThihiss is known for its black marble facade",
    "ThihisshisThihisss",
    "Thisss is a dome",
    "hihihi",
    "It is the abcabcabc bridge.",
    "Mmmm, a tower.",
    "",
    "   \n\t",
]

WORLD = [
    "This is Karvel Tower, a tower in Brelun, Veldoria. It is recognisable by its red brick facade, twin spires "
    "and blue roof.",
    "The Holy Trinity Church (Ostrava) is a church in Ostrava, Marnesia, known for its black marble facade.",
]

WELL_FORMED = WORLD + [
    "Mississippi",
    "It costs 1000 euros... really!!! 100000 visitors a year, tel. 555-0000.",
    "The Pont Alexandre III crosses the Seine; see www.paris.fr.",
    "Louis XIV, Louis XVIII and Pope John XXIII.",
    "Bookkeeper, Honolulu, bananas, Akaka Falls, Hawaii: all fine.",
    "Café Müller, Zürich — São Paulo's Catedral da Sé.",
    "A tower.",
]


@pytest.mark.parametrize("answer", GARBLED)
def test_garbled_answers_are_degenerate(answer):
    assert degenerate_reason(answer) is not None


@pytest.mark.parametrize("answer", WELL_FORMED)
def test_well_formed_answers_pass(answer):
    assert degenerate_reason(answer) is None


def test_reasons_name_the_kind_and_the_fragment():
    assert degenerate_reason("") == "empty: no text"
    assert degenerate_reason("Thisss is a dome") == "repetition: 's' x3 in 'thisss'"
    assert degenerate_reason("hihihi!").startswith("repetition: 'hi' x3")
    assert degenerate_reason("Mississippi") is None  # "ss" twice, "issi" never three times
    assert degenerate_reason("a Mississsippi") is not None
    assert degenerate_reason("iii and xxx") is not None  # Roman numerals only in upper case, as whole words
    assert degenerate_reason("IIIa") is not None


def test_vocabulary_catches_made_up_words_only_in_a_closed_world():
    vocab = word_vocabulary(WORLD)
    assert {"karvel", "brelun", "veldoria", "spires", "ostrava"} <= vocab and "Karvel" not in vocab
    assert degenerate_reason(WORLD[0], vocab) is None
    assert degenerate_reason("KARVEL-tower, in Brélun!", vocab) is None  # normalised as the rule judge does
    assert degenerate_reason("This is Karvel Tower, 1000 and 25.", vocab) is None  # numbers are not words
    assert degenerate_reason("Thihis is Karvel Tower.", vocab) == "unknown_word: 'thihis'"
    assert degenerate_reason("Thihis is Karvel Tower.") is None  # no vocabulary: an unknown word is allowed
    assert degenerate_reason("Thisss is Karvel Tower.", vocab).startswith("repetition:")  # checked first


def test_summary_counts_percent_and_examples():
    rows = [
        {"id": "a", "responses": [WORLD[0], "Thisss is a dome", WORLD[1], "", WORLD[0]]},
        {"id": "b", "responses": ["Thihis is Karvel Tower.", WORLD[0], WORLD[0], WORLD[0], "hihihi"]},
    ]
    s = degenerate_summary(rows, word_vocabulary(WORLD), examples=3)
    assert (s["answers"], s["degenerate"], s["percent"]) == (10, 4, 40.0)
    assert s["by_reason"] == {"empty": 1, "repetition": 2, "unknown_word": 1}
    assert s["examples"] == [
        {"id": "a", "answer": "Thisss is a dome", "reason": "repetition: 's' x3 in 'thisss'"},
        {"id": "a", "answer": "", "reason": "empty: no text"},
        {"id": "b", "answer": "Thihis is Karvel Tower.", "reason": "unknown_word: 'thihis'"},
    ]
    open_world = degenerate_summary(rows)
    assert (open_world["degenerate"], open_world["by_reason"]["unknown_word"]) == (3, 0)
    assert degenerate_summary([]) == {"answers": 0, "degenerate": 0, "percent": 0.0,
                                      "by_reason": {"empty": 0, "repetition": 0, "unknown_word": 0}, "examples": []}
    with pytest.raises(ValueError, match="generation 1 \\(id 'x'\\)"):
        degenerate_summary([{"id": "x", "responses": "not a list"}])
