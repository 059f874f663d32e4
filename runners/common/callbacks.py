"""Trainer callbacks: metrics.jsonl every logging step, and SIGTERM -> checkpoint -> exit 143."""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

# Keys copied as they are from the trainer's logs (names as TRL logs them).
_KEEP = ("loss", "learning_rate", "grad_norm", "reward", "reward_std", "rewards/accuracies", "rewards/margins",
         "entropy", "kl", "mean_token_accuracy", "num_tokens", "epoch")


class MetricsCallback(TrainerCallback):
    """Appends one JSON line per log event; tokens/s and samples/s are over the interval since the last one."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._last_time = None
        self._last_step = 0
        self._last_tokens = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = time.monotonic()
        self._last_step = state.global_step
        self._last_tokens = state.num_input_tokens_seen or None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs and "reward" not in logs:
            return  # eval/summary logs carry neither; train logs always carry loss
        now = time.monotonic()
        elapsed = max(now - (self._last_time or now), 1e-9)
        row = {"step": state.global_step, "time": time.time()}
        row.update({k: logs[k] for k in _KEEP if k in logs})
        row.update({k: v for k, v in logs.items() if k.startswith("rewards/") and k not in row})
        samples = (state.global_step - self._last_step) * args.per_device_train_batch_size * \
            args.gradient_accumulation_steps * max(args.world_size, 1)
        row["samples_per_s"] = samples / elapsed
        tokens = logs.get("num_tokens", state.num_input_tokens_seen or None)
        if tokens is not None and self._last_tokens is not None:
            row["tokens_per_s"] = (tokens - self._last_tokens) / elapsed
        elif tokens is not None:
            row["tokens_per_s"] = tokens / elapsed
        self._last_time, self._last_step, self._last_tokens = now, state.global_step, tokens
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(console_line(row, state.max_steps), flush=True)


def console_line(row: dict, max_steps: int) -> str:
    """One short line per logging step, instead of the trainer's dict of 25 keys."""
    parts = [f"step {row['step']}/{max_steps}"]
    for key, label, fmt in (("loss", "loss", ".4g"), ("reward", "reward", ".3f"), ("rewards/accuracies", "acc", ".2f"),
                            ("learning_rate", "lr", ".2e"), ("grad_norm", "grad", ".3g"),
                            ("samples_per_s", "samples/s", ".1f"), ("tokens_per_s", "tok/s", ".0f")):
        if row.get(key) is not None:
            parts.append(f"{label} {float(row[key]):{fmt}}")
    return "  ".join(parts)


class _BarOnly(ProgressCallback):
    """The trainer's progress bar without its habit of printing every log dict under it."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def quiet_console(trainer) -> None:
    """MetricsCallback prints one line per log step; keep the bar on a terminal, drop it in logs (no \\r noise)."""
    import warnings

    # transformers warns about its own internal call on every save; it is not ours to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*deprecated")
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if sys.stdout.isatty():
        trainer.add_callback(_BarOnly)
    else:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Writing model shards" bars at every checkpoint


class SigtermCallback(TrainerCallback):
    """On SIGTERM (spot notice, `launch down`), finish the current step, save a checkpoint, stop.

    The handler only sets a flag: saving from inside a signal handler could interrupt a half-done optimizer step.
    """

    def __init__(self):
        self.received = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.received = True
        print("runner: SIGTERM received; saving a checkpoint at the end of this step", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.received:
            control.should_save = True
            control.should_training_stop = True
        return control
