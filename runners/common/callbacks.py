"""Trainer callbacks: metrics.jsonl every logging step, and SIGTERM -> checkpoint -> exit 143."""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

# The trainer's end-of-training summary log (not a step of the curve) carries these. (Step logs may carry
# `train_runtime` and other `train_*` speeds since the session began: ours, per interval, replace them.)
_SUMMARY_KEYS = {"train_loss", "total_flos"}


class MetricsCallback(TrainerCallback):
    """One JSON line per log event (train and periodic eval) in metrics.jsonl, one console line, the trackers.

    tokens/s and samples/s are over the interval since the last train log; MFU is added when `mfu` (a
    `(flops_per_token, peak_flops, devices)` triple, CUDA only) is given. Eval logs are written while training
    runs (the eval loop); a summary evaluate() after training is not a row of the curve.
    """

    def __init__(self, path: Path, trackers=None, mfu: tuple[float, float, int] | None = None):
        self.path = Path(path)
        self.trackers = trackers
        self.mfu = mfu
        self._last_time = None
        self._last_step = 0
        self._last_tokens = None
        self._training = False
        self.last_eval: dict | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._training = True
        self._last_time = time.monotonic()
        self._last_step = state.global_step
        self._last_tokens = state.num_input_tokens_seen or None

    def on_train_end(self, args, state, control, **kwargs):
        self._training = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if any(k.startswith("eval_") for k in logs):
            if not self._training:
                return
            row = {"step": state.global_step, "time": time.time()}
            row.update({k: v for k, v in logs.items() if k.startswith("eval_") and k not in _EVAL_TIMING})
            self._write(row, eval_line, state.max_steps)
            self.last_eval = row
        elif not _SUMMARY_KEYS & set(logs):
            self._write(self._train_row(args, state, logs), console_line, state.max_steps)

    def _train_row(self, args, state, logs) -> dict:
        now = time.monotonic()
        elapsed = max(now - (self._last_time or now), 1e-9)
        row = {"step": state.global_step, "time": time.time()}
        # Every number the trainer logs, under its own name (TRL's, or a PPO/SPO loop's `loss/policy`, ...).
        row.update({k: v for k, v in logs.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in row
                    and not k.startswith("train_")})
        samples = (state.global_step - self._last_step) * args.per_device_train_batch_size * \
            args.gradient_accumulation_steps * max(args.world_size, 1)
        row["samples_per_s"] = samples / elapsed
        tokens = logs.get("num_tokens", state.num_input_tokens_seen or None)
        if tokens is not None and self._last_tokens is not None:
            row["tokens_per_s"] = (tokens - self._last_tokens) / elapsed
        elif tokens is not None:
            row["tokens_per_s"] = tokens / elapsed
        if self.mfu is not None and row.get("tokens_per_s") is not None:
            from runners.common.mfu import mfu_percent

            row["mfu_percent"] = mfu_percent(row["tokens_per_s"], *self.mfu)
        self._last_time, self._last_step, self._last_tokens = now, state.global_step, tokens
        return row

    def _write(self, row: dict, fmt, max_steps: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(fmt(row, max_steps), flush=True)
        if self.trackers is not None:
            self.trackers.log(row)


# Timing noise of an eval pass; the eval curve keeps what was measured.
_EVAL_TIMING = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}


def console_line(row: dict, max_steps: int) -> str:
    """One short line per logging step, instead of the trainer's dict of 25 keys."""
    parts = [f"step {row['step']}/{max_steps}"]
    for key, label, fmt in (("loss", "loss", ".4g"), ("reward", "reward", ".3f"), ("rewards/accuracies", "acc", ".2f"),
                            ("learning_rate", "lr", ".2e"), ("grad_norm", "grad", ".3g"),
                            ("samples_per_s", "samples/s", ".1f"), ("tokens_per_s", "tok/s", ".0f"),
                            ("mfu_percent", "mfu %", ".1f")):
        if row.get(key) is not None:
            parts.append(f"{label} {float(row[key]):{fmt}}")
    return "  ".join(parts)


def eval_line(row: dict, max_steps: int) -> str:
    """`eval step 10/40  loss 1.23  reward 0.41 ...`: the eval keys in the trainer's order, without `eval_`."""
    parts = [f"eval step {row['step']}/{max_steps}"]
    for key, value in row.items():
        if key.startswith("eval_") and isinstance(value, (int, float)):
            parts.append(f"{key[len('eval_'):]} {value:.4g}")
    return "  ".join(parts)


class _BarOnly(ProgressCallback):
    """The trainer's progress bar without its habit of printing every log dict under it."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def quiet_console(trainer) -> None:
    """MetricsCallback prints one line per log step; keep the bar on a terminal, drop it in logs (no \\r noise)."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if sys.stdout.isatty():
        trainer.add_callback(_BarOnly)


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
