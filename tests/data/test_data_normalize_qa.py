"""normalize_qa (the seed's normalize_qa_dataset.py) and the QA field mapping it shares with the tokenize runner."""
from __future__ import annotations

import json

import pytest


def _rows(n: int) -> list[dict]:
    return [{"id": i, "data": {"question": f"q{i}?", "context": f"ctx {i}",
                               "answers": {"text": [f"a{i}", "other"] if i % 4 else []}}} for i in range(n)]


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_input_format_gives_the_same_pairs(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from runners.data.normalize_qa import main

    rows = _rows(8)
    (tmp_path / "squad.json").write_text(json.dumps({"version": "x", "data": rows}))  # SQuAD-style wrapper
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "rows.parquet")
    with pa.OSFile(str(tmp_path / "rows.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)  # the IPC stream format `datasets` caches use
    want = [{"prompt": f"q{i}?", "response": f"a{i}"} for i in range(8) if i % 4]
    for name in ("squad.json", "rows.jsonl", "rows.parquet", "rows.arrow"):
        out = tmp_path / "out" / f"{name}.jsonl"
        assert main(["--input", str(tmp_path / name), "--output", str(out), "--question-field", "data.question",
                     "--answer-field", "data.answers.text[0]"]) == 0
        assert _read(out) == want, name
        assert "normalized 6 of 8 records" in capsys.readouterr().out


def test_context_and_templates(tmp_path):
    from runners.data.normalize_qa import main

    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(4)))
    out = tmp_path / "o.jsonl"
    # the default template with a context is the seed's documented one; `\n` typed in a shell becomes a newline
    assert main(["--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--question-field", "data.question",
                 "--answer-field", "data.answers.text[-1]", "--context-field", "data.context"]) == 0
    assert _read(out)[0] == {"prompt": "q1?\nContext: ctx 1", "response": "other"}
    assert main(["--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--question-field", "data.question",
                 "--answer-field", "data.answers.text[0]", "--context-field", "data.context",
                 "--prompt-template", r"{context}\n\nQ: {question} (#{id})", "--response-template", "A: {answer}"]) == 0
    assert _read(out)[0] == {"prompt": "ctx 1\n\nQ: q1? (#1)", "response": "A: a1"}


def test_field_map_context_key_is_shared_with_tokenize_configs():
    from runners.data.errors import DataError
    from runners.data.fields import FieldMap

    fm = FieldMap.from_config({"prompt_field": "data.question", "response_field": "data.answers.text[0]",
                               "context_field": "data.context", "prompt_template": "{context} | {prompt}"})
    assert fm.qa_pair(_rows(2)[1]) == ("ctx 1 | q1?", "a1")
    with pytest.raises(DataError, match="context_field needs prompt_field"):
        FieldMap.from_config({"text_field": "t", "context_field": "c"})


def test_errors_are_one_line_and_leave_no_output(tmp_path, capsys):
    from runners.data.normalize_qa import main

    (tmp_path / "in.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    out = tmp_path / "o.jsonl"
    cases = {
        "does not exist": ["--input", str(tmp_path / "missing.jsonl"), "--output", str(out)],
        "none of the 1 records": ["--input", str(tmp_path / "in.jsonl"), "--output", str(out),
                                  "--answer-field", "answers.text[0]"],
        "--question-field: field path": ["--input", str(tmp_path / "in.jsonl"), "--output", str(out),
                                         "--question-field", "a[x"],
        "is a directory": ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path)],
    }
    for expected, argv in cases.items():
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, (expected, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
