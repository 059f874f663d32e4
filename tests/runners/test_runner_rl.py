"""GRPO on the smoke task: the reward climbs; metrics, checkpoints (rotated), final model and config land in place."""
from __future__ import annotations

import json

import yaml

from .conftest import read_metrics, run_main

ARGS = ("--config", "configs/rl/smoke.yaml", "--task", "tasks/smoke_task.py")


def test_grpo_raises_reward_and_writes_outputs(pool):
    assert run_main("rl_run", *ARGS, "--set", "trainer.save_steps=10") == 0

    rows = read_metrics(pool, "rl-smoke")
    assert [r["step"] for r in rows] == list(range(1, 41))
    first, last = [r["reward"] for r in rows[:10]], [r["reward"] for r in rows[-10:]]
    assert sum(last) / 10 > sum(first) / 10 + 0.3, (first, last)
    for key in ("loss", "learning_rate", "grad_norm", "reward", "tokens_per_s", "samples_per_s"):
        assert key in rows[-1], key
    assert rows[-1]["tokens_per_s"] > 0 and rows[-1]["samples_per_s"] > 0

    # save_total_limit: 2 -> only the two newest of checkpoint-10/20/30/40 remain.
    ckpts = sorted(p.name for p in (pool / "model" / "rl_checkpoints" / "rl-smoke").glob("checkpoint-*"))
    assert ckpts == ["checkpoint-30", "checkpoint-40"]
    assert (pool / "model" / "hf" / "rl-smoke" / "model.safetensors").is_file()
    saved = yaml.safe_load((pool / "reports" / "rl-smoke" / "config.yaml").read_text())
    assert saved["trainer"]["save_steps"] == 10 and saved["model"]["init"] == "tiny"

    # The trained policy, evaluated greedily, says "a" far more than the untrained base does.
    common = ("--config", "configs/eval/smoke.yaml", "--task", "tasks/smoke_task.py")
    assert run_main("evals", *common, "--set", "eval.name=base") == 0
    assert run_main("evals", *common, "--set", "eval.name=trained", "--set", "model.init=pretrained",
                    "--set", "model.name_or_path=model/hf/rl-smoke") == 0
    base = json.loads((pool / "reports" / "eval" / "base.json").read_text())["metrics"]["a_share"]
    trained = json.loads((pool / "reports" / "eval" / "trained.json").read_text())["metrics"]["a_share"]
    assert trained > base + 0.3, (base, trained)
