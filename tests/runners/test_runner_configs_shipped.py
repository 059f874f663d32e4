"""Every shipped config validates: sections, TRL trainer keys, and the task section of the task it names."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from runners.common.config import check_trainer_keys, load_config
from runners.common.tasks import load_task, validate_task_section

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for kind in ("sft", "rl", "dpo", "eval") for p in (REPO / "configs" / kind).glob("*.yaml"))


def test_configs_exist():
    names = {f"{p.parent.name}/{p.name}" for p in CONFIGS}
    assert {"sft/smoke.yaml", "rl/smoke.yaml", "dpo/smoke.yaml", "eval/smoke.yaml", "rl/wordle.yaml",
            "sft/wordle.yaml", "rl/arithmetic.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_validates(path):
    from trl import DPOConfig, SFTConfig

    from runners.common.grpo import GRPOConfig  # TRL's plus the rollout-saving keys: what rl_run.py checks against

    config = load_config(path)
    kind = path.parent.name
    if kind != "eval":
        check_trainer_keys(config, {"sft": SFTConfig, "rl": GRPOConfig, "dpo": DPOConfig}[kind])
    # The task a config is for is named in its launch comment; smoke configs use the smoke task.
    found = re.search(r"--task (tasks/\w+\.py)", path.read_text())
    task = load_task(found.group(1) if found else "tasks/smoke_task.py", kind)
    validate_task_section(task, config.task)
