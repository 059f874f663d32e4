"""SFT tokenization: chat template applied, only assistant spans trained, output the SFT runner reads."""
from __future__ import annotations

import json

import pytest

from data_helpers import write_jsonl

CONVS = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello there, assistant."}],
    [{"role": "system", "content": "be kind"}, {"role": "user", "content": "the cat sat"},
     {"role": "assistant", "content": "on a mat"}, {"role": "user", "content": "and then"},
     {"role": "assistant", "content": "dogs ran far away"}],
    [{"role": "user", "content": "What is the answer?"}, {"role": "assistant", "content": "It is forty two."}],
]


def _trained_runs(labels):
    """Contiguous runs of positions whose label is not -100."""
    runs, cur = [], []
    for i, v in enumerate(labels):
        if v != -100:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def test_only_assistant_turns_are_trained(exp, tok_dir, hf_tok, tokenize):
    write_jsonl(exp / "data/raw/sft/chat.jsonl", [{"messages": c} for c in CONVS])
    rc, _, err = tokenize("--mode", "sft", "--tokenizer", tok_dir, "--workers", 1)
    assert rc == 0, err
    from runners.data.pretokenized import load_pretokenized_sft

    ds = load_pretokenized_sft(exp / "data/tokenized/sft/default")
    assert ds.column_names == ["input_ids", "attention_mask", "labels"] and len(ds) == len(CONVS)
    for row, conv in zip(ds, CONVS):
        ids, labels = row["input_ids"], row["labels"]
        assert row["attention_mask"] == [1] * len(ids)
        # The whole conversation, rendered by the chat template, is the input.
        assert hf_tok.decode(ids) == hf_tok.apply_chat_template(conv, tokenize=False)
        # Each trained span is exactly one assistant turn: its content and the end-of-turn marker.
        spans = [hf_tok.decode([ids[i] for i in run]) for run in _trained_runs(labels)]
        assert spans == [m["content"] + "<|im_end|>\n" for m in conv if m["role"] == "assistant"]
        assert all(labels[i] == ids[i] for i in range(len(ids)) if labels[i] != -100)
    meta = json.loads((exp / "data/tokenized/sft/default/meta.json").read_text())
    assert meta["mode"] == "sft" and meta["docs"] == 3 and meta["truncations"] == 0
    assert meta["splits"]["train"]["trained_tokens"] < meta["tokens"]


def test_qa_source_truncation_parquet_and_validation(exp, tok_dir, hf_tok, tokenize):
    rows = [{"data": {"question": f"q{i} the cat?", "context": "the old river bank " * (1 + i % 3),
                      "answers": {"text": [f"answer {i}", "x"]}}} for i in range(40)]
    (exp / "data/raw/sft/squad.json").write_text(json.dumps({"version": "v2", "data": rows}))
    cfg = exp.parent.parent.parent / "sft.yaml"
    cfg.write_text(json.dumps({
        "mode": "sft", "input": "squad.json", "tokenizer": str(tok_dir), "max_length": 30, "workers": 2,
        "validation_fraction": 0.25, "seed": 1, "batch_docs": 4,
        "fields": {"prompt_field": "data.question", "response_field": "data.answers.text[0]",
                   "prompt_template": "{data.context}\n{prompt}"},
    }))
    # The file's outer {"data": [...]} is unwrapped by the reader; each row nests its fields under data.
    rc, _, err = tokenize("--config", cfg)
    assert rc == 0, err
    out = exp / "data/tokenized/sft/squad"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"]["train"]["rows"] == 30 and meta["splits"]["validation"]["rows"] == 10
    full = [hf_tok.apply_chat_template(
        [{"role": "user", "content": f"{r['data']['context']}\n{r['data']['question']}"},
         {"role": "assistant", "content": r["data"]["answers"]["text"][0]}], tokenize=False) for r in rows]
    n_long = sum(len(hf_tok(t, add_special_tokens=False)["input_ids"]) > 30 for t in full)
    assert meta["truncations"] == n_long > 0
    from runners.data.pretokenized import load_pretokenized_sft

    train = load_pretokenized_sft(out)
    assert max(len(x) for x in train["input_ids"]) <= 30
    val = load_pretokenized_sft(out, "validation")
    assert len(val) == 10

    rc, _, err = tokenize("--config", cfg, "--format", "parquet", "--name", "squad_pq")
    assert rc == 0, err
    pq = load_pretokenized_sft(exp / "data/tokenized/sft/squad_pq")
    assert pq["input_ids"] == train["input_ids"] and pq["labels"] == train["labels"]


def test_sft_runner_loader_reads_our_output(exp, tok_dir, tokenize):
    """runners/common/pretokenized.py (the SFT runner's side) loads what we write."""
    write_jsonl(exp / "data/raw/sft/chat.jsonl", [{"messages": c} for c in CONVS])
    assert tokenize("--mode", "sft", "--tokenizer", tok_dir, "--workers", 1)[0] == 0
    import runners.common.pretokenized as common

    out = exp / "data/tokenized/sft/default"
    ds = common.load_pretokenized(common.check_pretokenized_dir(out))
    assert len(ds) == 3


def test_sft_refuses_cpt_data_and_a_tokenizer_without_template(exp, tok_dir, tokenize, tmp_path):
    write_jsonl(exp / "data/raw/cpt/d.jsonl", [{"text": "the cat"}])
    assert tokenize("--mode", "cpt", "--tokenizer", tok_dir, "--block-size", 4, "--workers", 1)[0] == 0
    from runners.data.errors import DataError
    from runners.data.pretokenized import load_pretokenized_sft

    with pytest.raises(DataError, match="not sft"):
        load_pretokenized_sft(exp / "data/tokenized/cpt/default")
    import shutil

    bare = tmp_path / "bare_tok"
    shutil.copytree(tok_dir, bare)
    (bare / "chat_template.jinja").unlink()
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    write_jsonl(exp / "data/raw/sft/chat.jsonl", [{"messages": c} for c in CONVS])
    rc, _, err = tokenize("--mode", "sft", "--tokenizer", bare, "--workers", 1)
    assert rc == 2 and "no chat template" in err
    assert not (exp / "data/tokenized/sft/default").exists()


def test_sft_runner_trains_on_our_output(exp, tokenize):
    """The hand-off: runners/sft_run.py with data.pretokenized reads our dir, with the model's own tokenizer."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import runners.common.tiny_model as tiny

    texts = [m["content"] for c in CONVS for m in c] * 5
    model_dir = tiny.build_tiny_model(texts, exp / "model/base/tiny-smoke")  # the sizes configs/sft/smoke.yaml asks
    write_jsonl(exp / "data/raw/sft/chat.jsonl", [{"messages": c} for c in CONVS * 8])
    rc, _, err = tokenize("--mode", "sft", "--tokenizer", model_dir, "--name", "chat", "--max-length", 64,
                          "--workers", 1)
    assert rc == 0, err
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DATAPOOL_ROOT": str(exp.parent.parent), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "runners/sft_run.py", "--config", "configs/sft/smoke.yaml",  # no task
                        "--set", "data.pretokenized=data/tokenized/sft/chat",
                        "--set", "trainer.max_steps=4", "--set", "trainer.save_steps=100", "--set", "run_name=pretok"],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(ln) for ln in (exp / "reports/pretok/metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(row["loss"] > 0 for row in rows)
