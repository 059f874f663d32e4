"""CPT tokenization: exact packing, shards and meta, determinism across worker counts, no-op re-runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_helpers import make_docs, write_jsonl


def _expected_stream(hf_tok, docs, add_bos=False):
    out = []
    for d in docs:
        if add_bos:
            out.append(hf_tok.bos_token_id)
        out.extend(hf_tok(d, add_special_tokens=False)["input_ids"])
        out.append(hf_tok.eos_token_id)
    return np.array(out)


def _bin_stream(out_dir, split="train"):
    meta = json.loads((out_dir / "meta.json").read_text())
    parts = [np.fromfile(out_dir / split / s["file"], dtype=meta["dtype"]) for s in meta["splits"][split]["shards"]]
    return np.concatenate(parts), meta


def test_packing_is_exact_and_blocks_do_not_cross(exp, tok_dir, hf_tok, tokenize):
    docs = make_docs(300, seed=2)
    write_jsonl(exp / "data/raw/cpt/web.jsonl", [{"text": d} for d in docs])
    rc, out, err = tokenize("--mode", "cpt", "--tokenizer", tok_dir, "--block-size", 32, "--workers", 1,
                            "--batch-docs", 7)
    assert rc == 0, err
    out_dir = exp / "data/tokenized/cpt/default"
    stream, meta = _bin_stream(out_dir)
    want = _expected_stream(hf_tok, docs)
    # Every token of every document, with its EOS, in order: nothing dropped at block or shard edges.
    assert np.array_equal(stream, want)
    assert meta["tokens"] == len(want) and meta["docs"] == 300
    assert meta["blocks"] == len(want) // 32 and meta["splits"]["train"]["tail_tokens"] == len(want) % 32
    assert meta["vocab_size"] == len(hf_tok) and meta["eos_id"] == hf_tok.eos_token_id
    assert meta["pad_id"] == hf_tok.pad_token_id and meta["bos_id"] == hf_tok.bos_token_id
    assert meta["truncations"] == 0 and meta["dtype"] == "uint16"

    from runners.data.pretokenized import CptBlocks

    blocks = CptBlocks(out_dir)
    assert len(blocks) == meta["blocks"]
    for i in (0, 1, len(blocks) - 1):
        item = blocks[i]
        # A block is exactly its slice of the stream, and its labels are its own tokens (the model shifts
        # inside the block), so no loss term links two blocks.
        assert item["input_ids"].tolist() == want[i * 32:(i + 1) * 32].tolist()
        assert item["labels"].tolist() == item["input_ids"].tolist()
    with_tail = CptBlocks(out_dir, keep_tail=True)
    if meta["splits"]["train"]["tail_tokens"]:
        last = with_tail[len(with_tail) - 1]
        n = meta["splits"]["train"]["tail_tokens"]
        assert last["labels"][:n].tolist() == want[-n:].tolist()
        assert (last["labels"][n:] == -100).all() and last["attention_mask"][n:].sum() == 0


def test_shards_bos_and_tables_hold_the_same_stream(exp, tok_dir, hf_tok, tokenize):
    docs = make_docs(120, seed=3)
    write_jsonl(exp / "data/raw/cpt/d.jsonl", [{"text": d} for d in docs])
    want = _expected_stream(hf_tok, docs, add_bos=True)
    for fmt in ("bin", "arrow", "parquet"):
        rc, _, err = tokenize("--mode", "cpt", "--tokenizer", tok_dir, "--block-size", 16, "--add-bos",
                              "--format", fmt, "--name", fmt, "--workers", 1)
        assert rc == 0, err
        from runners.data.pretokenized import CptBlocks

        out_dir = exp / "data/tokenized/cpt" / fmt
        blocks = CptBlocks(out_dir, keep_tail=True)
        meta = blocks.meta
        got = np.concatenate([blocks.tokens(i) for i in range(len(blocks))])
        assert np.array_equal(got, want), fmt
        assert meta["format"] == fmt


def test_small_shards_rotate(exp, tok_dir, hf_tok, tokenize):
    docs = make_docs(200, seed=4)
    write_jsonl(exp / "data/raw/cpt/d.jsonl", [{"text": d} for d in docs])
    from runners.data.pipeline import TokenizeConfig, TokenizeJob

    cfg = TokenizeConfig(mode="cpt", tokenizer=str(tok_dir), block_size=16, shard_tokens=160, workers=1)
    meta = TokenizeJob(cfg, log=lambda *_: None).run()
    shards = meta["splits"]["train"]["shards"]
    assert len(shards) > 3
    assert all(s["tokens"] == 160 for s in shards[:-1])
    stream, _ = _bin_stream(exp / "data/tokenized/cpt/default")
    assert np.array_equal(stream, _expected_stream(hf_tok, docs))


def test_workers_do_not_change_the_output(exp, tok_dir, tokenize):
    write_jsonl(exp / "data/raw/cpt/d.jsonl", [{"text": d} for d in make_docs(400, seed=5)])
    common = ("--mode", "cpt", "--tokenizer", tok_dir, "--block-size", 32, "--batch-docs", 16,
              "--validation-fraction", 0.1, "--seed", 9)
    assert tokenize(*common, "--workers", 1, "--name", "w1")[0] == 0
    assert tokenize(*common, "--workers", 2, "--name", "w2")[0] == 0
    base = exp / "data/tokenized/cpt"
    for split in ("train", "validation"):
        a, ma = _bin_stream(base / "w1", split)
        b, mb = _bin_stream(base / "w2", split)
        assert np.array_equal(a, b) and len(a) > 0
    assert ma["fingerprint"] == mb["fingerprint"]  # worker count is not part of what the data is


def test_rerun_is_a_noop_until_inputs_or_config_change(exp, tok_dir, tokenize):
    src = write_jsonl(exp / "data/raw/cpt/d.jsonl", [{"text": d} for d in make_docs(50, seed=6)])
    args = ("--mode", "cpt", "--tokenizer", tok_dir, "--block-size", 16, "--workers", 1)
    assert tokenize(*args)[0] == 0
    meta_path = exp / "data/tokenized/cpt/default/meta.json"
    first = meta_path.read_text()
    rc, out, _ = tokenize(*args)
    assert rc == 0 and "up to date" in out
    assert meta_path.read_text() == first  # untouched: not even rewritten
    rc, out, _ = tokenize(*args, "--block-size", 8)
    assert rc == 0 and "up to date" not in out
    assert json.loads(meta_path.read_text())["block_size"] == 8
    src.write_text(src.read_text() + json.dumps({"text": "one more document"}) + "\n")
    rc, out, _ = tokenize(*args, "--block-size", 8)
    assert rc == 0 and "up to date" not in out
    assert json.loads(meta_path.read_text())["docs"] == 51
    assert [p.name for p in (exp / "data/tokenized/cpt").iterdir()] == ["default"]  # no temp dirs left


def test_progress_lines_when_not_a_tty(exp, tok_dir, tokenize):
    write_jsonl(exp / "data/raw/cpt/d.jsonl", [{"text": d} for d in make_docs(30)])
    rc, out, err = tokenize("--mode", "cpt", "--tokenizer", tok_dir, "--block-size", 16, "--workers", 1)
    assert rc == 0
    line = [ln for ln in err.splitlines() if ln.startswith("done ")]
    assert line and "docs/s" in line[0] and "tokens/s" in line[0] and "30 docs" in line[0]
    assert "\x1b[" not in err  # no terminal control codes in logs


def test_trained_tokenizer_is_saved_in_hf_format(exp, tokenize):
    write_jsonl(exp / "data/raw/cpt/d.jsonl", [{"text": d} for d in make_docs(200, seed=7)])
    rc, _, err = tokenize("--mode", "cpt", "--train-tokenizer", "--vocab-size", 300, "--block-size", 16,
                          "--workers", 1)
    assert rc == 0, err
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    out_dir = exp / "data/tokenized/cpt/default"
    tok = AutoTokenizer.from_pretrained(str(out_dir / "tokenizer"))
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.eos_token == "<|endoftext|>" and tok.bos_token and tok.pad_token
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    meta = json.loads((out_dir / "meta.json").read_text())
    assert meta["tokenizer"]["trained"] and meta["vocab_size"] == len(tok) <= 300
    stream, _ = _bin_stream(out_dir)
    assert stream.max() < len(tok) and (stream == tok.eos_token_id).sum() == 200


@pytest.mark.parametrize("fmt", ["json", "parquet", "text"])
def test_other_input_formats_tokenize_the_same(exp, tok_dir, hf_tok, tokenize, fmt):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = make_docs(40, seed=8)
    raw = exp / "data/raw/cpt"
    if fmt == "json":
        (raw / "d.json").write_text(json.dumps([{"text": d} for d in docs]))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist([{"text": d} for d in docs]), raw / "d.parquet")
    else:
        (raw / "d.txt").write_text("\n\n".join(docs))
    assert tokenize("--mode", "cpt", "--tokenizer", tok_dir, "--block-size", 16, "--workers", 1)[0] == 0
    stream, _ = _bin_stream(exp / "data/tokenized/cpt/default")
    assert np.array_equal(stream, _expected_stream(hf_tok, docs))
