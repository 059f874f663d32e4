"""Data preparation: formats, tokenizer training/reuse, splits, chunked preparation + merge, trainer on the result."""
import json
import random

import pytest

from hrm_helpers import metrics, train


@pytest.fixture
def raw(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "raw"
    d.mkdir()
    rng = random.Random(0)
    words = "the cat sat on a mat while dogs ran in the park and birds sang".split()
    with (d / "a_text.jsonl").open("w") as f:
        for _ in range(60):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(40))}) + "\n")
    with (d / "b_pairs.jsonl").open("w") as f:
        for i in range(40):
            f.write(json.dumps({"prompt": f"say {i}", "response": f"number {i}"}) + "\n")
    pq.write_table(pa.table({"prompt": [f"hi {i}" for i in range(30)], "response": ["hello"] * 30}),
                   d / "c_pairs.parquet")
    table = pa.table({"question": [f"q{i}" for i in range(20)], "answer": [f"a{i}" for i in range(20)]})
    with pa.OSFile(str(tmp_path / "stream.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return d


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prompt_response_samples_and_meta(raw, tmp_path):
    from runners.hrm_lm.prepare import main
    from runners.hrm_lm.tokenizer import load_tokenizer

    out = tmp_path / "ds"
    assert main(["--input", str(raw / "b_pairs.jsonl"), "--output", str(out), "--vocab-size", "300",
                 "--val-ratio", "0.25", "--max-seq-len", "16"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    tok = load_tokenizer(out)
    assert meta["vocab_size"] == tok.vocab_size and (meta["pad_id"], meta["bos_id"], meta["eos_id"]) == (0, 1, 2)
    train_rows, val_rows = _read_jsonl(out / "train.jsonl"), _read_jsonl(out / "val.jsonl")
    assert (len(train_rows), len(val_rows)) == (30, 10) == (meta["num_train"], meta["num_val"])
    row = train_rows[0]
    prompt = tok.decode(row["encoder_ids"])
    i = int(prompt.split()[1])
    assert prompt == f"say {i}"
    assert row["decoder_input_ids"][0] == 1 and row["labels"][-1] == 2
    assert row["decoder_input_ids"][1:] == row["labels"][:-1]
    assert tok.decode(row["labels"]) == f"number {i}"


def test_text_windows_and_max_seq_len(raw, tmp_path):
    from runners.hrm_lm.prepare import main

    out = tmp_path / "ds"
    assert main(["--input", str(raw / "a_text.jsonl"), "--output", str(out), "--vocab-size", "300",
                 "--max-seq-len", "8", "--val-ratio", "0"]) == 0
    rows = _read_jsonl(out / "train.jsonl")
    assert len(rows) > 60  # 40-word texts over 8-token windows give several samples each
    assert all(len(r["encoder_ids"]) <= 8 and len(r["labels"]) <= 8 for r in rows)
    assert not (out / "val.jsonl").exists()


def test_arrow_output_max_files_and_input_formats(raw, tmp_path):
    from runners.hrm_lm.data import load_split
    from runners.hrm_lm.prepare import main

    out = tmp_path / "ds"
    assert main(["--input", str(raw), "--output", str(out), "--format", "arrow", "--shard-size", "25",
                 "--max-files", "2", "--skip-files", "1", "--vocab-size", "300", "--val-ratio", "0.1"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert [p.rsplit("/", 1)[1] for p in meta["sources"]] == ["b_pairs.jsonl", "c_pairs.parquet"]
    assert meta["num_train"] + meta["num_val"] == 70
    assert len(list(out.glob("train-*.arrow"))) == 3  # 63 rows / 25 per shard
    samples = load_split(out, "train")
    assert len(samples) == meta["num_train"] and set(samples[0]) == {"encoder_ids", "decoder_input_ids", "labels"}

    stream_out = tmp_path / "ds2"
    assert main(["--input", str(tmp_path / "stream.arrow"), "--output", str(stream_out), "--tokenizer", str(out),
                 "--prompt-field", "question", "--response-field", "answer", "--val-ratio", "0"]) == 0
    assert (stream_out / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    assert json.loads((stream_out / "meta.json").read_text())["num_train"] == 20


@pytest.mark.parametrize("fmt", ["jsonl", "arrow"])
def test_merge_moves_chunks_into_one_dataset(raw, tmp_path, fmt):
    from runners.hrm_lm.data import load_split
    from runners.hrm_lm.prepare import main

    c1, c2, merged = tmp_path / "c1", tmp_path / "c2", tmp_path / "merged"
    common = ["--format", fmt, "--val-ratio", "0.2", "--max-seq-len", "16"]
    assert main(["--input", str(raw), "--max-files", "1", "--output", str(c1), "--vocab-size", "300", *common]) == 0
    assert main(["--input", str(raw), "--skip-files", "1", "--output", str(c2), "--tokenizer", str(c1), *common]) == 0
    n = {c: json.loads((c / "meta.json").read_text()) for c in (c1, c2)}
    rows1 = [load_split(c1, "train")[i] for i in range(n[c1]["num_train"])]
    rows2 = [load_split(c2, "train")[i] for i in range(n[c2]["num_train"])]
    assert main(["merge", "--output", str(merged), str(c1), str(c2)]) == 0
    assert not c1.exists() and not c2.exists()  # chunk files were moved/appended and deleted
    meta = json.loads((merged / "meta.json").read_text())
    assert meta["num_train"] == n[c1]["num_train"] + n[c2]["num_train"]
    assert meta["num_val"] == n[c1]["num_val"] + n[c2]["num_val"]
    got = load_split(merged, "train")
    assert [got[i] for i in range(len(got))] == rows1 + rows2
    assert len(load_split(merged, "val")) == meta["num_val"]


def test_merge_refuses_different_tokenizers(raw, tmp_path, capsys):
    from runners.hrm_lm.prepare import main

    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["--input", str(raw / "b_pairs.jsonl"), "--output", str(a), "--vocab-size", "300"]) == 0
    assert main(["--input", str(raw / "a_text.jsonl"), "--output", str(b), "--vocab-size", "300"]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["merge", "--output", str(tmp_path / "m"), str(a), str(b)])
    assert exc.value.code == 2
    assert "tokenizer differs" in capsys.readouterr().err
    assert a.exists() and b.exists() and not (tmp_path / "m").exists()


def test_bad_inputs(tmp_path, capsys, raw):
    from runners.hrm_lm.prepare import main

    with pytest.raises(SystemExit) as exc:
        main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o")])
    assert exc.value.code == 2 and "input not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(SystemExit):
        main(["--input", str(bad), "--output", str(tmp_path / "o")])
    assert "--text-field" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_trainer_on_prepared_bpe_dataset(raw, tmp_path, datapool):
    from runners.hrm_lm.prepare import main

    out = tmp_path / "ds"
    assert main(["--input", str(raw), "--output", str(out), "--format", "arrow", "--vocab-size", "300",
                 "--max-seq-len", "16", "--val-ratio", "0.1"]) == 0
    assert train("--dataset", str(out), "--run_name", "bpe", "--steps", "4", "--val_every", "2", "--log_steps", "1",
                 "--dataset_workers", "1", "--max_seq_len", "12") == 0
    rows = metrics(datapool, "bpe")
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert any("val_loss" in r for r in rows)


def test_relative_dataset_resolves_inside_the_experiment(datapool, monkeypatch, tmp_path):
    from runners.hrm_lm.prepare import main

    exp = datapool / "experiments" / "default"
    assert main(["synthetic", "--output", str(exp / "data" / "tokenized" / "hrm_lm")]) == 0
    monkeypatch.chdir(tmp_path)  # not where the dataset is
    assert train("--dataset", "data/tokenized/hrm_lm", "--run_name", "rel", "--steps", "2", "--val_every", "2") == 0
    assert metrics(datapool, "rel")[-1]["step"] == 2
