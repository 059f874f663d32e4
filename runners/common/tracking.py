"""Experiment trackers for `output.report_to`: Weights & Biases and TensorBoard, with the seed's key names.

The runner logs through these instead of transformers' own integrations, so every trainer (TRL's, a home-made
PPO/SPO loop, CPT's plain Trainer) writes the same keys: `train/loss`, `train/learning_rate`, `train/grad_norm`,
`train/epoch`, `train/global_step`, `train/tokens_per_second`, `train/samples_per_second`, `train/mfu_percent`,
`train/<anything else the trainer logs>` and `eval/*`.

`check_trackers` runs at config load: a tracker that is not installed, or wandb online without a key, is one
line and exit 2 before anything is built. wandb's key comes from the environment (`launch --secret
WANDB_API_KEY`); it is never in the config, the logs or a process argument.
"""
from __future__ import annotations

import importlib.util
import netrc
import os
from pathlib import Path

from runners.common.errors import RunnerError

_PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard"}
# Our metrics.jsonl names -> the seed's tracker names.
_TRAIN_KEYS = {
    "step": "train/global_step",
    "tokens_per_s": "train/tokens_per_second",
    "samples_per_s": "train/samples_per_second",
}
_DROP = {"time"}


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _wandb_key_known() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None  # `wandb login` writes ~/.netrc
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def check_trackers(report_to: list[str]) -> None:
    for name in report_to:
        if not _installed(_PACKAGES[name]):
            raise RunnerError(f"output.report_to: {name} is not installed; pip install 'launcher[track]' "
                              f"(or {_PACKAGES[name]}) or remove {name} from output.report_to")
    mode = os.environ.get("WANDB_MODE", "").lower()
    if "wandb" in report_to and mode not in ("offline", "disabled", "dryrun") and not _wandb_key_known():
        raise RunnerError("output.report_to: wandb needs an API key: pass it with `launch --secret WANDB_API_KEY` "
                          "(or `wandb login`), or set WANDB_MODE=offline to log to files only")


def tracker_keys(row: dict) -> dict:
    """A metrics.jsonl row -> tracker keys: train rows get `train/`, eval rows (`eval_*`) get `eval/`."""
    out = {}
    for key, value in row.items():
        if key in _DROP or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if key.startswith("eval_"):
            out["eval/" + key[len("eval_"):]] = value
        elif key in _TRAIN_KEYS:
            out[_TRAIN_KEYS[key]] = value
        else:
            out["train/" + key] = value
    return out


class Trackers:
    """The trackers a run reports to; opened on the first log, so a run that stops early opens none."""

    def __init__(self, report_to: list[str], run_name: str, reports_dir: Path, project: str | None = None,
                 config: dict | None = None):
        self.report_to = list(report_to)
        self.run_name, self.reports_dir = run_name, Path(reports_dir)
        self.project = project or os.environ.get("WANDB_PROJECT") or os.environ.get("EXPERIMENT") or "launcher"
        self.config = config or {}
        self._wandb = None
        self._tb = None
        self._opened = False

    @property
    def tensorboard_dir(self) -> Path:
        return self.reports_dir / "tensorboard"

    def _open(self) -> None:
        self._opened = True
        if "wandb" in self.report_to:
            import wandb

            self.reports_dir.mkdir(parents=True, exist_ok=True)
            # console off: the job log already has every line (the agent copies it); quiet: no run summary table.
            self._wandb = wandb.init(project=self.project, name=self.run_name, dir=str(self.reports_dir),
                                     config=self.config, settings=wandb.Settings(console="off", quiet=True))
            # Resumed runs log steps the earlier process already logged past; the step axis is ours.
            self._wandb.define_metric("*", step_metric="train/global_step")
        if "tensorboard" in self.report_to:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.tensorboard_dir))

    def log(self, row: dict) -> None:
        if not self.report_to:
            return
        if not self._opened:
            self._open()
        step = int(row["step"])
        metrics = tracker_keys(row)
        metrics["train/global_step"] = step
        if self._wandb is not None:
            self._wandb.log(metrics)
        if self._tb is not None:
            for key, value in metrics.items():
                if key != "train/global_step":
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
