"""SFT: full fine-tune loss falls; LoRA saves an adapter; pre-tokenized data trains too."""
from __future__ import annotations

import json

import pytest

from .conftest import check_finished_then_extend, eval_rows, read_metrics, run_main, train_rows

ARGS = ("--config", "configs/sft/smoke.yaml", "--task", "tasks/smoke_task.py")


def mean(xs):
    return sum(xs) / len(xs)


def tensorboard_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """The event files read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_sft_loss_falls_eval_loop_tensorboard_finished(pool, capfd):
    argv = (*ARGS, "--set", "output.report_to=[tensorboard]", "--eval_interval", "10", "--eval_batches", "1")
    assert run_main("sft_run", *argv) == 0
    out = capfd.readouterr().out
    rows = read_metrics(pool, "sft-smoke")
    losses = [r["loss"] for r in train_rows(rows)]
    assert len(losses) == 30
    assert mean(losses[-5:]) < 0.5 * mean(losses[:5]), losses
    assert (pool / "model" / "hf" / "sft-smoke" / "model.safetensors").is_file()
    summary = json.loads((pool / "reports" / "sft-smoke" / "summary.json").read_text())
    assert summary["global_step"] == 30 and "eval_loss" in summary

    # The eval loop: every 10 steps on one batch of the task's eval set, printed, in metrics.jsonl, in TensorBoard.
    evals = eval_rows(rows)
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert "eval step 10/30  loss" in out
    scalars = tensorboard_scalars(pool / "reports" / "sft-smoke" / "tensorboard")
    for tag in ("train/loss", "train/learning_rate", "train/grad_norm", "train/epoch", "train/tokens_per_second",
                "train/samples_per_second", "eval/loss"):
        assert tag in scalars, sorted(scalars)
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, 31))
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(losses)
    assert [s for s, _ in scalars["eval/loss"]] == [10, 20, 30]

    check_finished_then_extend("sft_run", argv, pool, "sft-smoke", 30, capfd)

    # Finished but its final model gone (cut short while saving it): saved from the last checkpoint, no step taken.
    import shutil

    shutil.rmtree(pool / "model" / "hf" / "sft-smoke")
    curve = (pool / "reports" / "sft-smoke" / "metrics.jsonl").read_text()
    extended = (*argv, "--set", "trainer.max_steps=32")
    assert run_main("sft_run", *extended) == 0
    assert "finished at step 32; saving its final model" in capfd.readouterr().out
    assert (pool / "reports" / "sft-smoke" / "metrics.jsonl").read_text() == curve
    saved = pool / "model" / "hf" / "sft-smoke" / "model.safetensors"
    ckpt = pool / "model" / "sft_checkpoints" / "sft-smoke" / "checkpoint-32" / "model.safetensors"
    assert _tensors(saved) == _tensors(ckpt)


def _tensors(path) -> dict:
    from safetensors.torch import load_file

    return {k: v.tolist() for k, v in load_file(str(path)).items()}


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
