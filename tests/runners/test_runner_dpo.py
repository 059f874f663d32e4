"""DPO on preference pairs: the implicit reward learns to rank chosen above rejected."""
from __future__ import annotations

from .conftest import read_metrics, run_main


def test_dpo_reward_accuracy_rises(pool):
    assert run_main("dpo_run", "--config", "configs/dpo/smoke.yaml", "--task", "tasks/smoke_task.py") == 0
    rows = read_metrics(pool, "dpo-smoke")
    acc = [r["rewards/accuracies"] for r in rows]
    assert len(acc) == 20
    assert acc[0] <= 0.5 and sum(acc[-5:]) / 5 >= 0.9, acc  # step 1: policy == reference, no margin yet
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"]
    assert (pool / "model" / "dpo_checkpoints" / "dpo-smoke" / "checkpoint-20").is_dir()
    assert (pool / "model" / "hf" / "dpo-smoke" / "model.safetensors").is_file()
