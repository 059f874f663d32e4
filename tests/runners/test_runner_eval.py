"""Eval: batched generation, task metrics, a report with samples."""
from __future__ import annotations

import json

from .conftest import run_main


def test_eval_writes_metrics_and_samples(pool):
    assert run_main("evals", "--config", "configs/eval/smoke.yaml", "--task", "tasks/smoke_task.py",
                    "--set", "eval.num_samples=10", "--set", "generation.batch_size=4") == 0
    report = json.loads((pool / "reports" / "eval" / "smoke.json").read_text())
    assert report["num_prompts"] == 10 and report["metrics"]["n"] == 10
    assert 0.0 <= report["metrics"]["a_share"] <= 1.0
    assert len(report["samples"]) == 4 and report["samples"][0]["prompt"].startswith("<|im_start|>user")
    assert report["backend"] == "transformers"
    assert (pool / "reports" / "eval" / "smoke.config.yaml").is_file()
