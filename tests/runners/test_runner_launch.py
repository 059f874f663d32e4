"""Each runner once through the real `launch` CLI (local backend, file datapool): the env contract end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO

CASES = {
    "rl_run": ("configs/rl/smoke.yaml", "rl-smoke", "rl_checkpoints"),
    "sft_run": ("configs/sft/smoke.yaml", "sft-smoke", "sft_checkpoints"),
    "dpo_run": ("configs/dpo/smoke.yaml", "dpo-smoke", "dpo_checkpoints"),
}


def launch(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("DATAPOOL_ROOT", "EXPERIMENT", "EXPERIMENT_DIR", "CHECKPOINT_DIR")}
    env.update(LAUNCHER_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "launcher", "--experiment", "t", "--datapool", f"file://{tmp_path / 'pool'}", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.parametrize("runner", sorted(CASES))
def test_training_runner_through_launch(tmp_path, runner):
    config, run_name, ckpt_dir = CASES[runner]
    proc = launch(tmp_path, f"runners/{runner}.py", "--config", config, "--task", "tasks/smoke_task.py",
                  "--set", "trainer.max_steps=3", "--set", "trainer.save_steps=3")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # A job log is one line per step: no progress bars' \r, no deprecation notes about the libraries' own calls.
    assert "\r" not in proc.stdout + proc.stderr
    assert "deprecated" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    exp = tmp_path / "pool" / "experiments" / "t"
    rows = [json.loads(line) for line in (exp / "reports" / run_name / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (exp / "model" / ckpt_dir / run_name / "checkpoint-3" / "trainer_state.json").is_file()
    assert (exp / "model" / "hf" / run_name / "config.json").is_file()
    assert (exp / "model" / "base" / "tiny-smoke" / "tokenizer.json").is_file()


def test_eval_through_launch_and_bad_input_exit_code(tmp_path):
    proc = launch(tmp_path, "runners/evals.py", "--config", "configs/eval/smoke.yaml", "--task", "tasks/smoke_task.py")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "pool" / "experiments" / "t" / "reports" / "eval" / "smoke.json").read_text())
    assert report["metrics"]["n"] == 16
    # A runner's user error keeps its exit code and its one line under launch.
    bad = launch(tmp_path, "runners/evals.py", "--config", "configs/eval/smoke.yaml", "--task", "tasks/smoke_task.py",
                 "--set", "generation.max_new_token=4")
    assert bad.returncode == 2
    assert "error: configs/eval/smoke.yaml: unknown key 'generation.max_new_token'" in bad.stdout + bad.stderr
