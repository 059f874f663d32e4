"""Is this run already finished? Read from the newest checkpoint's trainer state, before any model is built.

Resuming a run whose state already reached its end is not harmless in transformers: the loop trains one batch
before it checks the stop flag (`step 41/40`), which changes the final model on every re-run. So a finished run
never calls train() again: with its final model in place it is a no-op; without one, the final model is saved
from the last checkpoint and nothing is trained.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from runners.common.checkpoints import newest_checkpoint


@dataclass(frozen=True)
class Finished:
    step: int  # the step the run stopped at
    checkpoint: Path  # the checkpoint holding that step
    final_present: bool  # the final model is in place


def final_model_present(final_dir: Path) -> bool:
    return any((Path(final_dir) / f).is_file() for f in ("config.json", "adapter_config.json"))


def target_reached(state: dict, args) -> bool:
    """Whether `state` (trainer_state.json) is at or past the end `args` asks for (max_steps, else epochs)."""
    step = int(state.get("global_step", 0))
    if getattr(args, "max_steps", -1) and args.max_steps > 0:
        return step >= args.max_steps
    # Epoch-based: the state's max_steps was derived from the same epochs; more epochs asked = not finished.
    if math.ceil(float(args.num_train_epochs)) > int(state.get("num_train_epochs") or 0):
        return False
    return step >= int(state.get("max_steps") or 0) > 0


def finished(checkpoints: Path, final_dir: Path, args) -> Finished | None:
    """The run's end, when its newest checkpoint already reached what `args` asks for; else None."""
    ckpt = newest_checkpoint(checkpoints)
    if ckpt is None:
        return None
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    if not target_reached(state, args):
        return None
    return Finished(int(state["global_step"]), ckpt, final_model_present(final_dir))
