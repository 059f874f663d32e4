"""SFT's optional task hooks reach SFTTrainer: get_sft_formatting_func makes the text it trains on and
get_sft_data_collator builds every batch (here: completion-only labels). Fixture task: sft_hooks_task.py."""
from __future__ import annotations

import json
import math
from pathlib import Path

from .conftest import read_metrics, run_main
from .sft_hooks_task import PAIRS, prompt_text

TASK = str(Path(__file__).with_name("sft_hooks_task.py"))


def test_sft_trains_on_the_tasks_formatting_func_and_collator(pool, tmp_path):
    trace = tmp_path / "batches.jsonl"
    assert run_main("sft_run", "--config", "configs/sft/smoke.yaml", "--task", TASK, "--set", "run_name=sft-hooks",
                    "--set", "data.mixture=null", "--set", "trainer.max_steps=2", "--set", f"task.trace={trace}") == 0

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pool / "model" / "base" / "tiny-smoke")
    # Full token ids of each formatted row (TRL appends EOS to text rows) -> how many of them are the prompt.
    expected = {}
    for q, a in PAIRS:
        prompt_ids = tok(prompt_text(q))["input_ids"]
        full_ids = tok(prompt_text(q) + a + tok.eos_token)["input_ids"]
        assert full_ids[: len(prompt_ids)] == prompt_ids
        expected[tuple(full_ids)] = len(prompt_ids)

    # Only the task's collator writes this file: no file, or no batch, means the trainer used another one.
    batches = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(batches) >= 2  # one per optimizer step at least (the dataloader may fetch one ahead)
    rows = 0
    for batch in batches:
        for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            n = sum(mask)
            assert tuple(ids[:n]) in expected, tok.decode(ids[:n])  # the formatting func's text, tokenized by TRL
            p = expected[tuple(ids[:n])]
            assert 0 < p < n
            assert labels[:p] == [-100] * p  # prompt: no loss
            assert labels[p:n] == ids[p:n]  # answer + EOS: trained
            assert labels[n:] == [-100] * (len(ids) - n)  # padding
            rows += 1
    assert rows >= 2 * 8  # per_device_train_batch_size in configs/sft/smoke.yaml

    losses = [r["loss"] for r in read_metrics(pool, "sft-hooks")]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses), losses
