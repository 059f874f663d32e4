"""The datapool layout and the env contract, in plain stdlib so runners can import it cheaply."""
from __future__ import annotations

import os
from pathlib import Path

# Directories every experiment has; the agent creates them before the script starts.
LAYOUT_DIRS = (
    "data/raw/cpt",
    "data/raw/sft",
    "data/raw/rl",
    "data/tokenized/cpt",
    "data/tokenized/sft",
    "model/base",
    "model/cpt_checkpoints",
    "model/sft_checkpoints",
    "model/rl_checkpoints",
    "model/dpo_checkpoints",
    "model/hf",
    "reports",
)

DEFAULT_EXPERIMENT = "default"

# What the agent pulls from the store before the script and pushes after it (folders of the experiment).
# data/tokenized/ is an output too: a tokenize job on a node must bring its shards home.
PULLED = ("data/", "model/base/")
PUSHED = ("model/", "data/tokenized/", "reports/")


def datapool_root(env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("DATAPOOL_ROOT") or "datapool").resolve()


def experiment_name(env: dict | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("EXPERIMENT") or DEFAULT_EXPERIMENT


def experiment_dir(env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("EXPERIMENT_DIR"):
        return Path(env["EXPERIMENT_DIR"]).resolve()
    return datapool_root(env) / "experiments" / experiment_name(env)


def checkpoint_kind(script_stem: str) -> str:
    """`sft_run` -> `sft`: the runner kind that names its checkpoint folder."""
    return script_stem[: -len("_run")] if script_stem.endswith("_run") else script_stem


# Runner kinds whose brief fixed another folder; everything else gets model/<kind>_checkpoints.
_CHECKPOINT_FOLDERS = {"hrm_lm": "model/hrm_lm"}


def default_checkpoint_dir(exp_dir: Path, script_stem: str) -> Path:
    kind = checkpoint_kind(script_stem)
    return exp_dir / _CHECKPOINT_FOLDERS.get(kind, f"model/{kind}_checkpoints")


def checkpoint_dir(script_stem: str, env: dict | None = None) -> Path:
    """CHECKPOINT_DIR when the agent set it, else the same default the agent would pick."""
    env = os.environ if env is None else env
    if env.get("CHECKPOINT_DIR"):
        return Path(env["CHECKPOINT_DIR"]).resolve()
    return default_checkpoint_dir(experiment_dir(env), script_stem)


def create_layout(exp_dir: Path) -> None:
    for rel in LAYOUT_DIRS:
        (exp_dir / rel).mkdir(parents=True, exist_ok=True)


def job_report_dir(exp_dir: Path, job_id: str) -> Path:
    return exp_dir / "reports" / "jobs" / job_id


# A remote node's own logs, kept beside log.txt in the job's report folder (the agent copies them there from its
# state dir): the bootstrap's and the agent's steps, and the agent's own output. `launch logs JOB --setup`.
NODE_LOGS = ("setup.log", "agent.log")
