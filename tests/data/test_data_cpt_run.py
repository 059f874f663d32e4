"""runners/cpt_run.py: a tiny CPT run through `launch` whose loss falls; SIGTERM saves and exits 143; resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from data_helpers import tree

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATAPOOL_ROOT", "EXPERIMENT", "EXPERIMENT_DIR", "CHECKPOINT_DIR")}
    return {**env, "LAUNCHER_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}


def _metrics(exp: Path, run: str) -> list[dict]:
    p = exp / "reports" / run / "metrics.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []


def test_tiny_cpt_run_through_launch_loss_falls_and_resumes(tmp_path):
    dp = tmp_path / "dp"
    cmd = [sys.executable, "-m", "launcher", "--datapool", f"file://{dp}", "runners/cpt_run.py",
           "--config", "configs/cpt/smoke.yaml"]
    r = subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    exp = dp / "experiments" / "default"
    rows = _metrics(exp, "cpt-smoke")
    assert len(rows) >= 4
    for key in ("loss", "learning_rate", "grad_norm", "tokens_per_s"):
        assert all(key in row for row in rows), key
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"], [row["loss"] for row in rows]
    ckpts = sorted(p.name for p in (exp / "model/cpt_checkpoints/cpt-smoke").iterdir())
    assert "checkpoint-40" in ckpts
    assert (exp / "model/hf/cpt-smoke/config.json").is_file()
    assert (exp / "data/tokenized/cpt/smoke/meta.json").is_file()  # data.prepare ran the tokenize job
    summary = json.loads((exp / "reports/cpt-smoke/summary.json").read_text())
    assert summary["global_step"] == 40 and "eval_loss" in summary

    r = subprocess.run(cmd + ["--set", "trainer.max_steps=45"], cwd=REPO, env=_env(tmp_path),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "up to date" in out and "resuming from" in out and "checkpoint-40" in out
    assert "checkpoint-45" in [p.name for p in (exp / "model/cpt_checkpoints/cpt-smoke").iterdir()]
    assert _metrics(exp, "cpt-smoke")[-1]["step"] == 45


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
    dp = tmp_path / "dp"
    env = {**_env(tmp_path), "DATAPOOL_ROOT": str(dp)}
    args = [sys.executable, "runners/cpt_run.py", "--config", "configs/cpt/smoke.yaml",
            "--set", "run_name=sig", "--set", "trainer.max_steps=100000", "--set", "trainer.logging_steps=1",
            "--set", "trainer.save_steps=100000"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    exp = dp / "experiments" / "default"
    try:
        deadline = time.monotonic() + 180
        while not _metrics(exp, "sig") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out[-3000:]
    ckpts = [p for p in (exp / "model/cpt_checkpoints/sig").iterdir() if p.name.startswith("checkpoint-")]
    assert len(ckpts) == 1 and (ckpts[0] / "trainer_state.json").is_file()


def test_bad_config_exits_2_before_writing(tmp_path):
    dp = tmp_path / "dp"
    env = {**_env(tmp_path), "DATAPOOL_ROOT": str(dp)}
    for extra, want in ((["--set", "trainer.max_stepz=3"], "max_steps"),
                        (["--set", "data.tokenized=data/tokenized/cpt/none", "--set", "data.prepare=null"],
                         "not tokenized CPT data"),
                        (["--set", "model.init=pretrained", "--set", "model.name_or_path=model/base/none"],
                         "no model dir")):
        r = subprocess.run([sys.executable, "runners/cpt_run.py", "--config", "configs/cpt/smoke.yaml", *extra],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and want in errors[0], r.stderr
        assert tree(dp) == []
