"""The parts every training runner shares: CLI, error funnel, TRL args, outputs, train-or-resume."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path

from runners.common.checkpoints import newest_checkpoint
from runners.common.config import RunConfig, save_resolved
from runners.common.errors import RunnerError, die
from runners.common.paths import RunPaths


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="run YAML (configs/<kind>/*.yaml)")
    parser.add_argument("--task", required=True, help="task plugin: a file (tasks/smoke_task.py) or a module name")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set trainer.max_steps=10 (repeatable; values are YAML)",
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def user_errors():
    """Everything before the first write goes in here: a user mistake is one `error:` line and exit 2."""
    try:
        yield
    except RunnerError as exc:
        die(str(exc))


def trainer_args(cls, config: RunConfig, paths: RunPaths, **forced):
    """Build the TRL config from `trainer:`; the runner owns paths, reporting and CPU safety."""
    import torch

    kwargs = {"logging_steps": 1, "save_steps": 50, "save_total_limit": 2, "seed": config.seed}
    kwargs.update(config.trainer)
    if not torch.cuda.is_available():
        # TRL defaults to bf16 and some configs ask for gradient checkpointing: both break or crawl on CPU.
        kwargs.update(use_cpu=True, bf16=False, fp16=False)
        names = {f.name for f in dataclasses.fields(cls)}
        for key in ("gradient_checkpointing", "activation_checkpointing"):
            if key in names and (key in kwargs or key == "activation_checkpointing"):
                kwargs[key] = False
    if "tensorboard" in config.output.report_to:
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(paths.reports / "tensorboard"))
    kwargs.update(
        output_dir=str(paths.checkpoints),
        report_to=list(config.output.report_to) or "none",
        run_name=config.run_name,
        **forced,
    )
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # TRL's own cross-field checks (e.g. batch vs num_generations)
        raise RunnerError(f"trainer: {str(exc).strip().splitlines()[0]}") from None


def start_outputs(config: RunConfig, paths: RunPaths) -> Path | None:
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


def train_and_save(trainer, tokenizer, sigterm, config: RunConfig, paths: RunPaths, resume: Path | None) -> None:
    from runners.common.callbacks import quiet_console

    quiet_console(trainer)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if sigterm.received:
        print(f"runner: checkpoint saved at step {trainer.state.global_step}; exiting 143", flush=True)
        sys.exit(143)
    if config.output.save_final and trainer.is_world_process_zero():
        from runners.common.model import save_final

        save_final(trainer.model, tokenizer, paths.final_model, config)
        print(f"runner: final model in {paths.final_model}", flush=True)
    summary = {"run_name": config.run_name, "global_step": trainer.state.global_step, **(result.metrics or {})}
    (paths.reports / "summary.json").write_text(json.dumps(summary, indent=2))
