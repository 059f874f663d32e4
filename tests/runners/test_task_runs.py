"""Every hook of the real tasks feeds its runner: two steps of each runner on the tiny model."""
from __future__ import annotations

import json

import pytest

from .conftest import read_metrics, run_main

# data.mixture=null: the smoke configs train on shipped mixtures; these runs feed each runner the task's own hooks.
SMALL = {
    "rl_run": ("configs/rl/smoke.yaml",
               ["trainer.max_steps=2", "trainer.max_completion_length=6", "data.mixture=null"]),
    "sft_run": ("configs/sft/smoke.yaml", ["trainer.max_steps=2", "model.max_seq_length=256", "data.mixture=null"]),
    "dpo_run": ("configs/dpo/smoke.yaml", ["trainer.max_steps=2", "model.max_seq_length=256", "data.mixture=null"]),
}


@pytest.mark.parametrize("task", ["wordle", "arithmetic"])
def test_task_runs_every_runner(pool, task):
    common = ["model.name_or_path=tiny-" + task, "task.num_examples=16", "run_name=" + task]
    for runner, (config, sets) in SMALL.items():
        argv = ["--config", config, "--task", f"tasks/{task}_task.py"]
        for item in common + sets:
            argv += ["--set", item]
        assert run_main(runner, *argv) == 0, runner
        assert len(read_metrics(pool, task)) == 2
    argv = ["--config", "configs/eval/smoke.yaml", "--task", f"tasks/{task}_task.py", "--set", f"eval.name={task}"]
    for item in common[:2] + ["generation.max_new_tokens=8"]:
        argv += ["--set", item]
    assert run_main("evals", *argv) == 0
    metrics = json.loads((pool / "reports" / "eval" / f"{task}.json").read_text())["metrics"]
    assert metrics["n"] == 16 and "format_rate" in metrics


def test_docs_new_task_example_runs(pool, tmp_path):
    """The "new task in 20 lines" in docs/runners.md is real: GRPO and eval run on it as written."""
    from .conftest import REPO

    doc = (REPO / "docs" / "runners.md").read_text()
    code = doc.split("```python\n# tasks/capitals_task.py\n", 1)[1].split("```", 1)[0]
    task = tmp_path / "capitals_task.py"
    task.write_text(code)
    assert run_main("rl_run", "--config", "configs/rl/smoke.yaml", "--task", str(task), "--set", "data.mixture=null",
                    "--set", "trainer.max_steps=2", "--set", "model.name_or_path=tiny-capitals") == 0
    assert "rewards/correct/mean" in read_metrics(pool, "rl-smoke")[-1]
    assert run_main("evals", "--config", "configs/eval/smoke.yaml", "--task", str(task),
                    "--set", "model.name_or_path=tiny-capitals", "--set", "eval.name=capitals") == 0
    report = json.loads((pool / "reports" / "eval" / "capitals.json").read_text())
    assert report["num_prompts"] == 4 and 0.0 <= report["metrics"]["accuracy"] <= 1.0
