"""Each input format reads the same records; field mapping normalises QA-style and chat sources."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runners.data.errors import DataError
from runners.data.fields import FieldMap
from runners.data.readers import count_records, detect_format, iter_raw, iter_records, list_files, to_record

ROWS = [{"text": f"document number {i}", "n": i} for i in range(7)]


def _write_all(d):
    d.mkdir(parents=True, exist_ok=True)
    (d / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")
    (d / "b.json").write_text(json.dumps(ROWS))
    (d / "c.json").write_text(json.dumps({"version": "1", "data": ROWS}))
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table, d / "d.parquet", row_group_size=3)
    with pa.OSFile(str(d / "e.arrow"), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)
    with pa.OSFile(str(d / "f.arrow"), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:  # datasets' layout
        w.write_table(table)
    (d / "g.txt").write_text("\n\n".join(r["text"] for r in ROWS) + "\n")
    return d


@pytest.mark.parametrize("name,fmt", [("a.jsonl", "jsonl"), ("b.json", "json"), ("c.json", "json"),
                                      ("d.parquet", "parquet"), ("e.arrow", "arrow"), ("f.arrow", "arrow"),
                                      ("g.txt", "text")])
def test_each_format_reads_the_same_texts(tmp_path, name, fmt):
    path = _write_all(tmp_path / "raw") / name
    assert detect_format(path) == fmt
    texts = [FieldMap.from_config({}).text(to_record(r)) for r in iter_raw(path)]
    assert texts == [r["text"] for r in ROWS]
    assert count_records(path) == len(ROWS)


def test_format_sniffed_without_suffix(tmp_path):
    d = _write_all(tmp_path / "raw")
    for src, want in [("a.jsonl", "jsonl"), ("b.json", "json"), ("d.parquet", "parquet"), ("e.arrow", "arrow"),
                      ("f.arrow", "arrow"), ("g.txt", "text")]:
        bare = tmp_path / f"bare_{want}_{src.split('.')[0]}"
        bare.write_bytes((d / src).read_bytes())
        assert detect_format(bare) == want, src


def test_plain_text_documents_split_on_blank_lines(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("line one\nline two\n\n\npara two\n\nlast")
    assert [r["text"] for r in iter_records(p)] == ["line one\nline two", "para two", "last"]


def test_directory_listing_is_sorted_and_skips_metadata(tmp_path):
    d = _write_all(tmp_path / "raw")
    (d / "state.json").write_text("{}")
    (d / ".hidden").write_text("x")
    names = [p.name for p in list_files(d)]
    assert names == sorted(names) and "state.json" not in names and ".hidden" not in names


def test_missing_input_and_bad_json_line_are_user_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list_files(tmp_path / "nope")
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        list(iter_records(p))


SQUAD = {"data": {"id": "q1", "context": "Paris is the capital of France.", "question": "Capital of France?",
                  "answers": {"text": ["Paris", "paris"], "answer_start": [0, 0]}}}


def test_qa_field_mapping_nested_with_templates():
    fm = FieldMap.from_config({
        "prompt_field": "data.question", "response_field": "data.answers.text[0]",
        "prompt_template": "{data.context}\n\nQuestion: {prompt}", "response_template": "Answer: {response}",
        "system_prompt": "Be brief.",
    })
    msgs = fm.messages(SQUAD)
    assert msgs == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Paris is the capital of France.\n\nQuestion: Capital of France?"},
        {"role": "assistant", "content": "Answer: Paris"},
    ]
    assert fm.text(SQUAD) == "Paris is the capital of France.\n\nQuestion: Capital of France?\nAnswer: Paris"


def test_qa_mapping_negative_index_and_missing_field_named():
    fm = FieldMap.from_config({"prompt_field": "data.question", "response_field": "data.answers.text[-1]"})
    assert fm.messages(SQUAD)[-1]["content"] == "paris"
    bad = FieldMap.from_config({"prompt_field": "data.question", "response_field": "data.answers.text[5]"},
                               source="squad")
    with pytest.raises(DataError, match=r"source 'squad'.*data\.answers\.text\[5\]"):
        bad.messages(SQUAD)


def test_messages_field_sharegpt_roles_and_text_field():
    fm = FieldMap.from_config({"messages_field": "conv"})
    rec = {"conv": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    assert fm.messages(rec) == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert FieldMap.from_config({"text_field": "body.t"}).text({"body": {"t": "x y"}}) == "x y"


def test_mapping_config_errors():
    with pytest.raises(DataError, match="unknown field mapping"):
        FieldMap.from_config({"txt_field": "x"})
    with pytest.raises(DataError, match="go together"):
        FieldMap.from_config({"prompt_field": "q"})
    with pytest.raises(DataError, match="malformed"):
        FieldMap.from_config({"text_field": "a..b[x]"})
    with pytest.raises(DataError, match="no assistant turn"):
        FieldMap.from_config({}).messages({"messages": [{"role": "user", "content": "hi"}]})
