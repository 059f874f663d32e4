"""Helpers for runner tests: real TRL runs on a tiny offline Llama, on CPU, one thread.

Training tests call a runner's `main(argv)` in this process (TRL imports once per session); the CLI exit
codes, SIGTERM and `launch` are covered by subprocess tests.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def pool(tmp_path, monkeypatch):
    """A fresh datapool for this test; runners see it through the env contract."""
    root = tmp_path / "pool"
    for var in ("EXPERIMENT_DIR", "CHECKPOINT_DIR", "JOB_ID", "LAUNCH_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATAPOOL_ROOT", str(root))
    monkeypatch.setenv("EXPERIMENT", "t")
    monkeypatch.chdir(REPO)
    return root / "experiments" / "t"


def run_main(runner: str, *argv: str) -> int:
    """Run runners/<runner>.py's main in-process; returns the exit code (0 when main returns)."""
    module = importlib.import_module(f"runners.{runner}")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        module.main(list(argv))
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def read_metrics(exp_dir: Path, run_name: str) -> list[dict]:
    path = exp_dir / "reports" / run_name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def run_script(script: str, *args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"runners/{script}.py", *args],
        cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, **kwargs,
    )


def train_rows(rows: list[dict]) -> list[dict]:
    """The training curve: metrics.jsonl also holds the eval loop's rows (keys `eval_*`)."""
    return [r for r in rows if not any(k.startswith("eval_") for k in r)]


def eval_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if any(k.startswith("eval_") for k in r)]


def check_finished_then_extend(runner: str, argv: tuple, pool: Path, run_name: str, steps: int, capfd,
                               weights: str = "model.safetensors") -> None:
    """Finished means finished: the same command again is a no-op (no step, the final model's bytes as they were);
    a larger trainer.max_steps resumes from the newest checkpoint, without the tied-weights warning."""
    final = pool / "model" / "hf" / run_name / weights
    metrics = pool / "reports" / run_name / "metrics.jsonl"
    model_bytes, curve = final.read_bytes(), metrics.read_text()
    capfd.readouterr()
    assert run_main(runner, *argv) == 0
    out = capfd.readouterr().out
    assert f"already finished at step {steps}" in out, out[-2000:]
    assert final.read_bytes() == model_bytes and metrics.read_text() == curve

    assert run_main(runner, *argv, "--set", f"trainer.max_steps={steps + 2}") == 0
    cap = capfd.readouterr()
    assert f"resuming from {pool / 'model' / (runner.replace('_run', '') + '_checkpoints') / run_name}" in cap.out
    assert f"checkpoint-{steps}" in cap.out
    assert "missing keys" not in cap.out + cap.err, (cap.out + cap.err)[-2000:]
    assert [r["step"] for r in train_rows(read_metrics(pool, run_name))][-3:] == [steps, steps + 1, steps + 2]
    assert final.read_bytes() != model_bytes
