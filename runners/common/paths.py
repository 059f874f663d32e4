"""Where a run reads and writes, from the env contract (see docs/contract.md)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from launcher.layout import checkpoint_dir, experiment_dir

# A hub id is `name` or `org/name`; anything with more slashes can only be a directory.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class RunPaths:
    experiment_dir: Path
    checkpoints: Path  # <CHECKPOINT_DIR>/<run_name>, holds checkpoint-N
    final_model: Path  # model/hf/<run_name>
    reports: Path  # reports/<run_name>

    @property
    def metrics(self) -> Path:
        return self.reports / "metrics.jsonl"


def run_paths(script_stem: str, run_name: str, env: dict | None = None) -> RunPaths:
    env = os.environ if env is None else env
    exp = experiment_dir(env)
    return RunPaths(
        experiment_dir=exp,
        checkpoints=checkpoint_dir(script_stem, env) / run_name,
        final_model=exp / "model" / "hf" / run_name,
        reports=exp / "reports" / run_name,
    )


def resolve_in_experiment(value: str, exp_dir: Path) -> Path:
    """Relative data/model paths mean "inside this experiment" so a config works on any backend."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else exp_dir / path


def looks_like_hub_id(value: str) -> bool:
    return bool(_HUB_ID.match(value)) and not value.startswith((".", "~"))
