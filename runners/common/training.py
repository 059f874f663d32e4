"""Pieces of the run path (runners/common/skeleton.py): the error funnel, the trainer's arguments, first writes."""
from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path

from runners.common.checkpoints import newest_checkpoint
from runners.common.config import save_resolved
from runners.common.errors import RunnerError, die
from runners.common.paths import RunPaths


@contextlib.contextmanager
def user_errors():
    """Everything before the first write goes in here: a user mistake is one `error:` line and exit 2."""
    try:
        yield
    except RunnerError as exc:  # runners.data's DataError and HRM-LM's error are RunnerErrors too
        die(str(exc))


def parse_args(argv, description: str):
    """Kept for scripts that take only --config/--task/--set (evals.py)."""
    from runners.common.cli import parse_cli

    with user_errors():
        return parse_cli(argv, None, description, train_flags=False)


def trainer_args(cls, config, paths: RunPaths, defaults: dict | None = None, **forced):
    """The trainer's config (a TRL config or TrainingArguments) from `trainer:`; the runner owns paths, reporting
    (runners/common/tracking.py, not transformers' integrations) and CPU safety."""
    import torch

    kwargs = {"logging_steps": 1, "save_steps": 50, "save_total_limit": 2, "seed": config.seed,
              "disable_tqdm": not sys.stdout.isatty(), **(defaults or {})}  # no \r bars in job logs
    kwargs.update(config.trainer)
    names = {f.name for f in dataclasses.fields(cls)}
    # transformers 5 renamed gradient_* to activation_checkpointing; the old name only adds a deprecation warning.
    for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                     ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
        if old in kwargs and new in names:
            kwargs.setdefault(new, kwargs.pop(old))
    if not torch.cuda.is_available():
        # TRL defaults to bf16 and some configs ask for activation checkpointing: both break or crawl on CPU.
        kwargs.update(use_cpu=True, bf16=False, fp16=False)
        if "activation_checkpointing" in names:
            kwargs["activation_checkpointing"] = False
    kwargs.update(output_dir=str(paths.checkpoints), report_to="none", run_name=config.run_name, **forced)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # TRL's own cross-field checks (e.g. batch vs num_generations)
        raise RunnerError(f"trainer: {str(exc).strip().splitlines()[0]}") from None


def start_outputs(config, paths: RunPaths) -> Path | None:
    """First write of the run. Returns the checkpoint to resume from, if any."""
    resume = newest_checkpoint(paths.checkpoints) if config.output.resume else None
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    paths.reports.mkdir(parents=True, exist_ok=True)
    save_resolved(config, paths.reports / "config.yaml")
    if resume is None and paths.metrics.exists():
        paths.metrics.unlink()  # a fresh run; a resumed one appends to the same curve
    if resume is not None:
        print(f"runner: resuming from {resume}", flush=True)
    return resume
