"""Question set, entity prompt, prompts and reply parsing, the train/test split and the validator."""

import json
from pathlib import Path

import pytest

from eeca.cli import main
from eeca.mgld.questions import entity_prompt, load_questions, pick_question
from eeca.mgld.split import eval_subset, split_by_landmark
from eeca.mgld.tasks import load_task
from eeca.mgld.validate import validate_records


def test_packaged_questions_are_location_paraphrases_and_choice_is_stable():
    qs = load_questions()
    assert 15 <= len(qs) <= 20 and qs[0] == "What is the location shown in the image?"
    assert len(set(qs)) == len(qs)
    ids = [f"{i:016x}" for i in range(400)]
    forward = {i: pick_question(qs, 7, i) for i in ids}
    backward = {i: pick_question(qs, 7, i) for i in reversed(ids)}
    assert forward == backward  # order-independent
    assert len(set(forward.values())) == len(qs)  # every question is used on 400 samples
    assert sum(forward[i] != pick_question(qs, 8, i) for i in ids) > 300  # the seed matters


def test_question_file_errors_name_file_and_line(tmp_path):
    p = tmp_path / "q.txt"
    p.write_text("# header\nWhere is this?\n\nWhere is this?\n")
    with pytest.raises(ValueError, match=r"q.txt: line 4: duplicate question \(first on line 2\)"):
        load_questions(p)
    p.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="no questions"):
        load_questions(p)


def test_entity_prompt_puts_the_entities_after_the_question():
    question = "<image>\nWhat is the location shown in the image?"
    assert entity_prompt(question, ["red brick facade", "clock face"]) == (
        "<image>\nWhat is the location shown in the image?\nEntities in the image: red brick facade, clock face.")
    assert entity_prompt("Where?", ["spire"]) == "Where?\nEntities in the image: spire."


def test_prompts_fill_and_reject_wrong_placeholders(tmp_path):
    s2, s3 = load_task("stage2"), load_task("stage3")
    assert (s2.version, s3.version) == ("stage2_v1", "stage3_v1")
    text = s2.prompt(landmark_name="Karvel $Tower", question="Where is this?")
    assert "Karvel $Tower" in text and "Where is this?" in text and "$" not in text.replace("Karvel $Tower", "")
    assert "Tower (old)" in s3.prompt(landmark_name="x", original_label="Tower (old)", question="q", answer="a")
    with pytest.raises(ValueError, match="needs fields"):
        s2.prompt(landmark_name="x")
    bad = tmp_path / "stage2_v9.txt"
    bad.write_text("Name: $landmark_name only")
    with pytest.raises(ValueError, match=r"stage2_v9.txt: a stage2 prompt must use the placeholders"):
        load_task("stage2", bad)
    good = tmp_path / "stage2_v2.txt"
    good.write_text("Q: $question about ${landmark_name}")
    assert load_task("stage2", good).version == "stage2_v2"


@pytest.mark.parametrize("text, expected", [
    ('{"answer": " This is X. "}', {"answer": "This is X."}),
    ('```json\n{"answer": "fenced"}\n```', {"answer": "fenced"}),
    ('Here you go: {"answer": "inside prose"} Thanks!', {"answer": "inside prose"}),
])
def test_stage2_reply_parsing_accepts(text, expected):
    assert load_task("stage2").parse(text) == (expected, None)


@pytest.mark.parametrize("text, reason", [
    ("no json at all", "invalid JSON"),
    ('{"answer": ""}', "schema: answer: must not be empty"),
    ('{"answer": "   "}', "schema: answer: must not be empty"),
    ('{"answer": 3}', "schema: answer: expected string, got int 3"),
    ('{"text": "x"}', "schema: answer: required field is missing; text: unexpected field"),
    ('["answer"]', "schema: <root>: expected object"),
])
def test_stage2_reply_parsing_rejects(text, reason):
    reply, why = load_task("stage2").parse(text)
    assert reply is None and why.startswith(reason)


def test_stage3_reply_is_cleaned_and_checked():
    s3 = load_task("stage3")
    reply, _ = s3.parse('{"entities": [" Iron lattice ", "iron LATTICE", "arched base"], "hierarchical_label": " Tower  Structure"}')
    assert reply == {"entities": ["Iron lattice", "arched base"], "hierarchical_label": "tower structure"}
    assert s3.parse('{"entities": [], "hierarchical_label": "tower"}')[1] == \
        "schema: entities: needs at least 1 items, has 0"
    assert "entities[1]: expected string" in s3.parse('{"entities": ["a", 2], "hierarchical_label": "t"}')[1]


def test_split_is_disjoint_by_landmark_sized_and_order_independent():
    one_each = [(f"{i:016x}", i) for i in range(1000)]
    test = split_by_landmark(one_each, test_count=25, seed=1)
    assert len(test) == 25
    assert split_by_landmark(list(reversed(one_each)), test_count=25, seed=1) == test
    assert split_by_landmark(one_each, test_count=25, seed=2) != test
    assert len(split_by_landmark(one_each, test_fraction=0.1, seed=1)) == 100
    # several images per landmark: every landmark is wholly on one side
    many = [(f"{lm}-{k}", lm) for lm in range(60) for k in range(lm % 4 + 1)]
    test = split_by_landmark(many, test_count=20, seed=0)
    test_lms = {lm for sid, lm in many if sid in test}
    train_lms = {lm for sid, lm in many if sid not in test}
    assert test_lms and not test_lms & train_lms and 20 <= len(test) < 24
    with pytest.raises(ValueError, match="leaves none of the 1000 for training"):
        split_by_landmark(one_each, test_count=1000)


def _record(i, **over):
    rec = {"id": f"{i:016x}", "image": f"train/0/0/0/{i:016x}.jpg",
           "conversations": [{"from": "human", "value": "<image>\nWhere is this?"},
                             {"from": "gpt", "value": "This is Karvel Tower."}],
           "landmark_id": i, "landmark_name": "Karvel Tower", "entities": ["twin spires"],
           "hierarchical_label": "tower", "s_gt": 0.31, "rsr": 0.9}
    rec.update(over)
    return rec


def test_validator_names_record_and_field():
    records = [
        _record(0),
        _record(1, rsr=1.5),
        _record(2, conversations=[{"from": "gpt", "value": "<image>\nx"}, {"from": "human", "value": "y"}]),
        _record(3, entities=["Spire", "spire"], extra=1),
        _record(4, image="../escape.jpg", s_gt=float("nan")),
        _record(0),
    ]
    del records[3]["landmark_name"]
    messages = [m for _, m in validate_records(records)]
    expected = [
        "record 1 (id=0000000000000001): rsr: must be <= 1.0, got 1.5",
        "record 2 (id=0000000000000002): conversations[0].from: expected 'human'",
        "record 2 (id=0000000000000002): conversations[1].from: expected 'gpt'",
        "record 3 (id=0000000000000003): landmark_name: required field is missing",
        "record 3 (id=0000000000000003): extra: unexpected field",
        "record 3 (id=0000000000000003): entities: repeated entities: ['spire']",
        "record 4 (id=0000000000000004): s_gt: must be a finite number",
        "record 4 (id=0000000000000004): image: '../escape.jpg' must be a path inside the image folder",
        "record 5 (id=0000000000000000): id: duplicate of record 0",
    ]
    for e in expected:
        assert any(m.startswith(e) for m in messages), (e, messages)
    assert not any(m.startswith("record 0 ") for m in messages)
    # LLaVA records: an image needs exactly one placeholder; a text-only record needs none
    llava = [{"id": 1, "image": "a.jpg", "conversations": [{"from": "human", "value": "no token"},
                                                           {"from": "gpt", "value": "x"}]},
             {"id": 2, "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]},
             {"id": 3, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},
                                         {"from": "human", "value": "more?"}]}]
    messages = [m for _, m in validate_records(llava, "llava")]
    assert messages == [
        "record 0 (id=1): conversations: a record with an image needs exactly one <image> placeholder, found 0",
        "record 1 (id=2): conversations: <image> placeholder in a record without an image",
        "record 2 (id=3): conversations: ends with a question: 3 turns, the last has no answer",
    ]


def test_validate_verb_exit_status_and_summary(tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps([_record(0), _record(1)]))
    bad.write_text(json.dumps([_record(0), _record(1, landmark_id="7"), _record(2, entities=[])]))
    assert main(["mgld", "validate", str(good)]) == 0
    said = capsys.readouterr()
    assert said.out.strip().endswith("2 mgld records, 0 invalid, 0 errors") and said.out.count("\n") == 1
    assert "mgld validate: 100%" in said.err and "2/2" in said.err  # the progress bar: on stderr, every record
    assert main(["mgld", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "record 1 (id=0000000000000001): landmark_id: expected integer, got str '7'" in out
    assert "record 2 (id=0000000000000002): entities: needs at least 1 items, has 0" in out
    assert out.strip().endswith("3 mgld records, 2 invalid, 2 errors")
    (tmp_path / "broken.json").write_text('[{"id": 1},\n{oops}]')
    assert main(["mgld", "validate", str(tmp_path / "broken.json")]) == 1
    assert "broken.json: line 2: invalid JSON" in capsys.readouterr().out
    missing = Path(tmp_path / "nope.json")
    assert main(["mgld", "validate", str(missing), "--image_root", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", ["synth", "paper"])
def test_shipped_configs_annotate_as_their_scale_needs(name):
    from eeca.config import load_config
    from eeca.mgld.stages import MgldConfig

    path = Path(__file__).resolve().parents[2] / "src" / "eeca" / "configs" / name / "mgld.yaml"
    cfg = load_config(MgldConfig, path)
    assert cfg.annotator.backend == {"synth": "template", "paper": "openai"}[name]
    if name == "paper":
        assert (cfg.annotator.model, cfg.split.test_count) == ("gpt-4o", 5000)


def test_evaluated_subset_is_seeded_sized_order_independent_and_inside_the_test_split():
    test = [f"{i:016x}" for i in range(5000)]  # App. B.4's 5k test samples
    chosen = eval_subset(test, 2500, seed=0)  # Tables 6-7's 2,500 per row
    assert len(chosen) == 2500 and chosen <= set(test)
    assert eval_subset(list(reversed(test)), 2500, seed=0) == chosen
    assert eval_subset(test, 2500, seed=1) != chosen
    assert eval_subset(test, 2400, seed=0) < chosen  # a smaller subset is a prefix of the same draw
    assert eval_subset(test[:10], 2500) == set(test[:10]) and eval_subset(test, None) == set(test)


@pytest.mark.parametrize("size, detail, tokens", [
    ((4000, 3000), "low", 85),
    ((1024, 1024), "high", 85 + 170 * 4),    # -> 768 x 768: 2 x 2 tiles (OpenAI's worked example: 765)
    ((2048, 4096), "high", 85 + 170 * 6),    # -> 1024 x 2048 -> 768 x 1536: 2 x 3 tiles (1105)
    ((300, 200), "auto", 85 + 170 * 1),      # small images are not scaled up: one tile
])
def test_gpt4o_image_tokens_follow_openais_rule(size, detail, tokens):
    from eeca.mgld.estimate import image_tokens

    assert image_tokens(*size, detail) == tokens


def test_annotator_image_reader_uses_the_one_loader(tmp_path):
    from eeca.llm_client import ChatError
    from eeca.mgld.annotators import read_image
    from image_cases import write_16bit_png, write_png_bomb

    with pytest.raises(ChatError, match="too many pixels"):  # old: DecompressionBombError killed the run
        read_image(write_png_bomb(tmp_path / "bomb.png"))
    data, mime = read_image(write_16bit_png(tmp_path / "grey.png"))
    assert mime == "image/png" and data == (tmp_path / "grey.png").read_bytes()
    with pytest.raises(ChatError, match="missing file"):
        read_image(tmp_path / "nope.jpg")
