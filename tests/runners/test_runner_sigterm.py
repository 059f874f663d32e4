"""SIGTERM mid-run: the runner saves a checkpoint and exits 143; started again it resumes from that step."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from .conftest import REPO, read_metrics


def test_sigterm_checkpoints_then_restart_resumes(tmp_path):
    env = {**os.environ, "DATAPOOL_ROOT": str(tmp_path / "pool"), "EXPERIMENT": "t", "OMP_NUM_THREADS": "1"}
    exp = tmp_path / "pool" / "experiments" / "t"
    metrics = exp / "reports" / "sft-smoke" / "metrics.jsonl"
    cmd = [sys.executable, "runners/sft_run.py", "--config", "configs/sft/smoke.yaml", "--task", "tasks/smoke_task.py",
           "--set", "trainer.save_steps=100000"]  # only the SIGTERM can make a checkpoint
    proc = subprocess.Popen([*cmd, "--set", "trainer.max_steps=100000"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no training steps logged"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, out
    ckpts = list((exp / "model" / "sft_checkpoints" / "sft-smoke").glob("checkpoint-*"))
    assert len(ckpts) == 1
    step = int(ckpts[0].name.split("-")[1])
    assert step >= 3
    assert json.loads((ckpts[0] / "trainer_state.json").read_text())["global_step"] == step
    assert not (exp / "model" / "hf" / "sft-smoke").exists()  # no final model from a cut-short run

    again = subprocess.run([*cmd, "--set", f"trainer.max_steps={step + 3}"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {ckpts[0]}" in again.stdout
    steps = [r["step"] for r in read_metrics(exp, "sft-smoke")]
    assert steps[-3:] == [step + 1, step + 2, step + 3]  # continued, not restarted at 1
    assert (exp / "model" / "hf" / "sft-smoke" / "model.safetensors").is_file()
