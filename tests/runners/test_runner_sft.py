"""SFT: full fine-tune loss falls; LoRA saves an adapter; pre-tokenized data trains too."""
from __future__ import annotations

import json

from .conftest import read_metrics, run_main

ARGS = ("--config", "configs/sft/smoke.yaml", "--task", "tasks/smoke_task.py")


def mean(xs):
    return sum(xs) / len(xs)


def test_sft_loss_falls(pool):
    assert run_main("sft_run", *ARGS) == 0
    losses = [r["loss"] for r in read_metrics(pool, "sft-smoke")]
    assert len(losses) == 30
    assert mean(losses[-5:]) < 0.5 * mean(losses[:5]), losses
    assert (pool / "model" / "hf" / "sft-smoke" / "model.safetensors").is_file()
    assert json.loads((pool / "reports" / "sft-smoke" / "summary.json").read_text())["global_step"] == 30


def test_sft_lora_saves_adapter_and_eval_loads_it(pool):
    assert run_main("sft_run", *ARGS, "--set", "run_name=sft-lora", "--set", "lora.enabled=true",
                    "--set", "lora.r=4", "--set", "output.final=adapter", "--set", "trainer.max_steps=8") == 0
    out = pool / "model" / "hf" / "sft-lora"
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert len(read_metrics(pool, "sft-lora")) == 8
    assert run_main("evals", "--config", "configs/eval/smoke.yaml", "--task", "tasks/smoke_task.py",
                    "--set", "model.init=pretrained", "--set", "model.name_or_path=model/hf/sft-lora") == 0
    assert json.loads((pool / "reports" / "eval" / "smoke.json").read_text())["metrics"]["n"] == 16


def make_pretokenized(pool, tokenizer_dir):
    """The agreed format: <dir>/meta.json + <dir>/train saved by datasets' save_to_disk."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = []
    for i in range(32):
        chat = [{"role": "user", "content": "Say a."}, {"role": "assistant", "content": "a " * (2 + i % 4)}]
        enc = tok.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
        labels = [t if m else -100 for t, m in zip(enc["input_ids"], enc["assistant_masks"])]
        rows.append({"input_ids": enc["input_ids"], "attention_mask": [1] * len(labels), "labels": labels})
    out = pool / "data" / "tokenized" / "sft" / "smoke"
    Dataset.from_list(rows).save_to_disk(str(out / "train"))
    (out / "meta.json").write_text(json.dumps({"mode": "sft", "format": "arrow", "tokenizer": str(tokenizer_dir)}))
    return out


def test_sft_on_pretokenized_data(pool):
    from runners.common.tiny_model import build_tiny_model
    from tasks.smoke_task import get_corpus

    base = build_tiny_model(get_corpus(None), pool / "model" / "base" / "tiny-smoke")
    make_pretokenized(pool, base)
    assert run_main("sft_run", *ARGS, "--set", "run_name=sft-pretok", "--set", "trainer.max_steps=12",
                    "--set", "data.pretokenized=data/tokenized/sft/smoke") == 0
    losses = [r["loss"] for r in read_metrics(pool, "sft-pretok")]
    assert len(losses) == 12 and mean(losses[-3:]) < 0.6 * mean(losses[:3]), losses
