"""Shared helpers for the HRM-LM tests (a plain module: pytest runs with --import-mode=importlib)."""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "hrm_lm" / "smoke.yaml"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def run_dir(datapool: Path, run_name: str) -> Path:
    return datapool / "experiments" / "default" / "model" / "hrm_lm" / run_name


def metrics(datapool: Path, run_name: str) -> list[dict]:
    import json

    path = datapool / "experiments" / "default" / "reports" / run_name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def train(*args: str) -> int:
    from runners.hrm_lm.train import main

    return main(["--config", str(SMOKE), *args])


def subprocess_env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    for key in ("CHECKPOINT_DIR", "EXPERIMENT", "EXPERIMENT_DIR"):
        env.pop(key, None)
    return env
