"""The agent's side of a pipeline step (stdlib only: it runs on every node).

A step's job names its env file and the earlier outputs it reads relative to the experiment
(`STEP_ENV_PATH=data/pipeline/<id>.env`, `STEP_INPUTS=model/hf/train_sft_0,...`), because only the node knows where
its datapool root is. The agent makes STEP_ENV_PATH absolute and pulls STEP_INPUTS with the usual inputs, so a
model trained on one backend reaches the next step on another.
"""
from __future__ import annotations

from pathlib import Path


def step_env(env: dict, exp_dir: Path) -> dict[str, str]:
    path = env.get("STEP_ENV_PATH")
    return {"STEP_ENV_PATH": str(Path(exp_dir) / path)} if path else {}


def step_inputs(env: dict, exp_dir: Path) -> list[Path]:
    return [Path(exp_dir) / rel for rel in (env.get("STEP_INPUTS") or "").split(",") if rel.strip()]
