"""Dataset and collator: assistant-only labels from the template's spans, placeholders, pad, entities."""

import json

import pytest
import torch

from eeca.mgld.questions import entity_prompt
from eeca.train.data import (
    DataConfig,
    DataError,
    LlavaCollator,
    LlavaJsonDataset,
    build_label_vocabulary,
    read_records,
    resolve_chat_template,
    set_pad_token,
)
from train_helpers import tiny_processor, tiny_tokenizer, write_llava_json


def make_dataset(tmp_path, style="llama3", n=4, text_only=2, **cfg_kw):
    tok = tiny_tokenizer(style)
    set_pad_token(tok, None)
    proc = tiny_processor(tok)
    path = write_llava_json(tmp_path, n=n, text_only=text_only)
    records = read_records(path)
    cfg = DataConfig(path=path, image_root=tmp_path, **cfg_kw)
    ds = LlavaJsonDataset(records, proc, cfg, resolve_chat_template(tok, "tokenizer"),
                          build_label_vocabulary(records), str(path))
    return ds, records, tok, proc


def label_spans(labels):
    """Contiguous runs of unmasked label ids."""
    spans, cur = [], []
    for t in labels.tolist():
        if t == -100:
            if cur:
                spans.append(cur)
            cur = []
        else:
            cur.append(t)
    return spans + ([cur] if cur else [])


@pytest.mark.parametrize("style", ["simple", "llama3"])
def test_unmasked_labels_decode_to_assistant_text_only(tmp_path, style):
    ds, records, tok, _ = make_dataset(tmp_path, style=style)
    for i, record in enumerate(records):
        item = ds[i]
        answers = [t["value"] for t in record["conversations"] if t["from"] == "gpt"]
        decoded = [tok.decode(s).strip() for s in label_spans(item["labels"])]
        # one span per assistant turn, each exactly that turn's text plus the end-of-turn token
        assert decoded == [a + tok.eos_token for a in answers]
        # and every unmasked label is the input token at that position (no shifted offsets)
        keep = item["labels"] != -100
        assert torch.equal(item["labels"][keep], item["input_ids"][keep])


def test_image_placeholders_match_the_processor_and_are_never_labels(tmp_path):
    ds, _, _, proc = make_dataset(tmp_path)
    item = ds[0]
    placeholders = item["input_ids"] == proc.image_token_id
    assert int(placeholders.sum()) == (32 // 8) ** 2  # CLS dropped: 16 patch tokens of a 32px image
    assert (item["labels"][placeholders] == -100).all()
    assert item["pixel_values"].shape == (1, 3, 32, 32)


def test_truncation_through_image_placeholders_is_an_error_naming_the_sample(tmp_path):
    ds, _, _, _ = make_dataset(tmp_path, max_length=10)
    with pytest.raises(DataError, match=r"record 0 \(id 's0'\).*max_length 10"):
        ds[0]


def test_text_after_the_image_may_be_truncated(tmp_path):
    ds, _, _, proc = make_dataset(tmp_path, max_length=30)
    item = ds[0]
    assert len(item["input_ids"]) == 30
    assert int((item["input_ids"] == proc.image_token_id).sum()) == 16


def test_template_without_generation_block_is_refused(tmp_path):
    tok = tiny_tokenizer("llama3")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(DataError, match="generation"):
        resolve_chat_template(tok, "tokenizer")
    assert "{% generation" in resolve_chat_template(tok, "llama3").replace("{%-", "{%")


def test_pad_token_is_explicit_and_never_unk(tmp_path):
    tok = tiny_tokenizer("llama3")
    assert tok.unk_token is None and tok.pad_token is None  # like Llama-3
    assert set_pad_token(tok, None) is True
    assert tok.pad_token == "<pad>" and tok.pad_token_id not in (tok.eos_token_id, tok.bos_token_id)
    tok2 = tiny_tokenizer("llama3")
    tok2.add_special_tokens({"additional_special_tokens": ["<|finetune_right_pad_id|>"]})
    assert set_pad_token(tok2, None) is False and tok2.pad_token == "<|finetune_right_pad_id|>"


def test_image_count_mismatch_is_an_error(tmp_path):
    path = write_llava_json(tmp_path, n=1)
    records = json.loads(path.read_text())
    records[0]["conversations"][0]["value"] = "what is this landmark?"  # no <image>
    path.write_text(json.dumps(records))
    tok = tiny_tokenizer("llama3")
    set_pad_token(tok, None)
    with pytest.raises(DataError, match=r"record 0 \(id=s0\): conversations: a record with an image needs exactly one"):
        read_records(path)  # the file is refused; records built in memory are checked when encoded
    ds = LlavaJsonDataset(records, tiny_processor(tok), DataConfig(path=path, image_root=tmp_path),
                          resolve_chat_template(tok, "tokenizer"), source=str(path))
    with pytest.raises(DataError, match=r"record 0.*0 <image> token\(s\).*1 image"):
        ds[0]


def test_bad_record_names_file_record_and_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"id": "a", "conversations": [{"from": "human", "value": "hi"}]},
                                {"id": "b", "conversations": [{"from": "bot", "value": "x"}]}]))
    with pytest.raises(DataError, match=r"bad.json: record 0 \(id=a\): conversations: needs at least 2 items"):
        read_records(path)
    path.write_text(json.dumps([{"id": "b", "conversations": [{"from": "bot", "value": "x"}]}]))
    with pytest.raises(DataError, match=r"record 0 \(id=b\): conversations.*"):
        read_records(path)


def test_entities_and_hierarchical_labels(tmp_path):
    ds, records, tok, _ = make_dataset(tmp_path, entities=True, hierarchical_labels=True)
    vocab = build_label_vocabulary(records)
    assert vocab == ["bridge", "church", "tower"]
    for i in (0, 1):
        item = ds[i]
        ids, mask = item["entity_ids"][0], item["entity_mask"][0]  # [M, L]
        names = [tok.decode(ids[m][mask[m]]) for m in range(ids.shape[0])]
        assert names == records[i]["entities"]
        assert vocab[int(item["hc_labels"][0])] == records[i]["hierarchical_label"]
    assert "entity_ids" not in ds[len(records) - 1]  # text-only sample: no image, no L_EAC row


def test_entity_prompt_appends_entities_to_the_first_question(tmp_path):
    ds, records, _, _ = make_dataset(tmp_path, entity_prompt="train_and_infer")
    msgs = ds.messages(records[1])
    assert msgs[0]["content"] == entity_prompt(records[1]["conversations"][0]["value"],
                                               records[1]["entities"])
    assert msgs[0]["content"].endswith("\nEntities in the image: red brick facade, twin spires.")
    assert msgs[1]["content"] == records[1]["conversations"][1]["value"]


def test_collator_pads_right_and_stacks_image_rows(tmp_path):
    ds, records, tok, _ = make_dataset(tmp_path, entities=True, hierarchical_labels=True)
    items = [ds[0], ds[len(records) - 1], ds[1]]  # image, text-only, image
    batch = LlavaCollator(tok.pad_token_id)(items)
    length = max(len(it["input_ids"]) for it in items)
    assert batch["input_ids"].shape == (3, length)
    for b, it in enumerate(items):
        n = len(it["input_ids"])
        assert torch.equal(batch["input_ids"][b, :n], it["input_ids"])
        assert (batch["input_ids"][b, n:] == tok.pad_token_id).all()
        assert (batch["labels"][b, n:] == -100).all() and batch["attention_mask"][b].sum() == n
    assert batch["pixel_values"].shape[0] == 2 and batch["hc_labels"].shape == (2,)
    assert batch["entity_ids"].shape[:2] == (2, 2) and not batch["entity_mask"][0, 1].any()


def test_a_selection_manifest_picks_its_records_in_its_order_and_names_unknown_ids(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from eeca.knowledge.select import select_table
    from eeca.train.data import DataError, select_records

    records = [{"id": f"{i:016x}", "landmark_id": i, "s_gt": 0.1 * i, "rsr": 1.0 - 0.1 * i,
                "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]} for i in range(6)]
    pool = pa.table({k: [r[k] for r in records] for k in ("id", "landmark_id", "s_gt", "rsr")})
    pq.write_table(select_table(pool, "hss", 3), tmp_path / "HSS-3.parquet")  # what `eeca select` writes
    chosen = select_records(records, tmp_path / "HSS-3.parquet", "train.json")
    assert [r["id"] for r in chosen] == [f"{i:016x}" for i in (5, 4, 3)]  # highest S first
    with pytest.raises(DataError, match=r"HSS-3.parquet: field 'id': 3 of its 3 ids are not records of train.json"):
        select_records(records[:2], tmp_path / "HSS-3.parquet", "train.json")
    with pytest.raises(DataError, match="cannot read a selection manifest"):
        select_records(records, tmp_path / "missing.parquet", "train.json")


def test_vicuna_template_renders_llava_15_format_and_learns_only_the_answers(tmp_path):
    """llava-hf/llava-1.5-7b-hf's format (Vicuna v1): the answers and their </s> are learned, nothing else."""
    from tiny_llava import CORPUS, bpe_tokenizer

    system = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
              "helpful, detailed, and polite answers to the human's questions.")
    tok = bpe_tokenizer(CORPUS + [system, "USER: ASSISTANT:"], ["<s>", "</s>", "<unk>", "<pad>", "<image>"], 500,
                        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                        extra_special_tokens={"image_token": "<image>"})
    template = resolve_chat_template(tok, "vicuna")
    turns = [("human", "Which landmark is this?"), ("gpt", "The Grey Tower."), ("human", "Where is it?"),
             ("gpt", "In Vasta.")]
    record = {"id": "a", "conversations": [{"from": f, "value": v} for f, v in turns]}
    item = LlavaJsonDataset([record], tiny_processor(tok), DataConfig(path=tmp_path / "x.json", max_length=256),
                            template, [], "x.json")[0]
    # LLaVA-1.5's conv_vicuna_v1: system + " ", then "USER: q" + " " and "ASSISTANT: a" + "</s>" per turn
    expected = f"<s>{system} USER: Which landmark is this? ASSISTANT: The Grey Tower.</s>USER: Where is it? ASSISTANT: In Vasta.</s>"
    assert tok.decode(item["input_ids"]) == expected
    learned = tok.decode(item["input_ids"][item["labels"] != -100])
    # the answers and their </s>; a byte-level BPE token may carry the space before an answer with it
    assert learned.lstrip() == "The Grey Tower.</s>In Vasta.</s>" or learned.replace(" ", "") == "TheGreyTower.</s>InVasta.</s>"
    assert "USER" not in learned and "ASSISTANT" not in learned
    prompt = tok.apply_chat_template([{"role": "user", "content": "Where is it?"}], chat_template=template,
                                     add_generation_prompt=True, tokenize=False)
    assert prompt == f"<s>{system} USER: Where is it? ASSISTANT:"



@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink", "bomb"])
def test_hostile_image_is_an_error_naming_the_record(tmp_path, case):
    import os

    from image_cases import write_png_bomb

    ds, records, _, _ = make_dataset(tmp_path, n=2, text_only=0)
    outside = tmp_path.parent / f"outside-{case}.jpg"
    outside.write_bytes((tmp_path / "img" / "1.jpg").read_bytes())
    if case == "absolute":
        records[0]["image"] = str(outside)
    elif case == "dotdot":
        records[0]["image"] = f"../{outside.name}"
    elif case == "symlink":
        (tmp_path / "img" / "0.jpg").unlink()
        os.symlink(outside, tmp_path / "img" / "0.jpg")
    else:
        write_png_bomb(tmp_path / "img" / "0.jpg")
    with pytest.raises(DataError, match=r"record 0 \(id 's0'\): field 'image': .*(path escapes|too many pixels)"):
        ds[0]
    assert ds[1]["pixel_values"].shape[0] == 1  # the other record is untouched
