"""DPO on preference pairs: the implicit reward learns to rank chosen above rejected, on held-out pairs too;
a finished run stays finished."""
from __future__ import annotations

from .conftest import check_finished_then_extend, eval_rows, read_metrics, run_main, train_rows


def test_dpo_reward_accuracy_rises(pool, capfd):
    argv = ("--config", "configs/dpo/smoke.yaml", "--task", "tasks/smoke_task.py", "--eval_interval", "10")
    assert run_main("dpo_run", *argv) == 0
    # The smoke config's shipped mixture (configs/data/posttrain/dpo/smoke.yaml) gave the pairs.
    assert len((pool / "data/prepared/dpo/dpo_smoke/train.jsonl").read_text().splitlines()) == 64
    all_rows = read_metrics(pool, "dpo-smoke")
    rows = train_rows(all_rows)
    acc = [r["rewards/accuracies"] for r in rows]
    assert len(acc) == 20
    assert acc[0] <= 0.5 and sum(acc[-5:]) / 5 >= 0.9, acc  # step 1: policy == reference, no margin yet
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"]
    assert (pool / "model" / "dpo_checkpoints" / "dpo-smoke" / "checkpoint-20").is_dir()
    assert (pool / "model" / "hf" / "dpo-smoke" / "model.safetensors").is_file()
    # The mixture has no validation split: 10% of the pairs are held out, and ranked right by the end.
    evals = eval_rows(all_rows)
    assert [r["step"] for r in evals] == [10, 20]
    assert evals[-1]["eval_rewards/accuracies"] >= 0.8, evals

    check_finished_then_extend("dpo_run", argv, pool, "dpo-smoke", 20, capfd)
