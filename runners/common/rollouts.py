"""Rollout trajectories on disk, for GRPO, PPO and SPO (`trainer.save_rollout_trajectories`).

Three `trainer:` keys (mixed into GRPO's, PPO's and SPO's trainer config by `RolloutTrajectoryArgs`):

    save_rollout_trajectories: false                  # true: one file per training rollout
    rollout_trajectory_subdir: rollouts               # relative to CHECKPOINT_DIR/<run_name>
    rollout_trajectory_pattern: rollout_{rollout_id:08d}.pt

Each file is `torch.save` of a dict (plain lists, numbers and tensors: `torch.load` reads it with its default
`weights_only=True`): `prompts` (list[str], as the model saw them: chat prompts rendered with the chat template),
`completions` (list[str]), `rewards` (list[float], the task's rewards summed per completion), `advantages` (a
tensor), `step`, `rollout_id`, `algorithm`, plus what the algorithm has at hand (`rewards_per_func`, ...).
Files are written atomically: a hidden temp name in the same folder (the datapool never pushes dot-files),
then os.replace. The folder lives next to the `checkpoint-N` folders, so it goes to the datapool with them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

DEFAULT_SUBDIR = "rollouts"
DEFAULT_PATTERN = "rollout_{rollout_id:08d}.pt"


def check_rollout_trajectory_args(save: object, subdir: object, pattern: object) -> None:
    """Raise ValueError (one line naming the key) for a bad value; the runner shows it as `error: trainer: ...`."""
    if not isinstance(save, bool):
        raise ValueError(f"save_rollout_trajectories must be true or false (got {save!r})")
    if not isinstance(subdir, str):
        raise ValueError(f"rollout_trajectory_subdir must be a folder name (got {subdir!r})")
    if PurePosixPath(subdir).is_absolute() or PureWindowsPath(subdir).is_absolute() or subdir.startswith("~"):
        raise ValueError(f"rollout_trajectory_subdir must be a relative path (got {subdir!r}): it is a folder "
                         f"inside the run's checkpoint folder, CHECKPOINT_DIR/<run_name>, so it travels with the "
                         f"checkpoints")
    parts = PurePosixPath(subdir).parts
    if ".." in parts:
        raise ValueError(f"rollout_trajectory_subdir must stay inside the run's checkpoint folder (got {subdir!r}: "
                         f"no '..')")
    if parts and (parts[0].startswith(("checkpoint-", "tmp-checkpoint-")) or any(p.startswith(".") for p in parts)):
        raise ValueError(f"rollout_trajectory_subdir {subdir!r} would be taken for a checkpoint or work in progress "
                         f"(checkpoint-*, tmp-checkpoint-*, .hidden); pick another name, e.g. 'rollouts'")
    if not isinstance(pattern, str):
        raise ValueError(f"rollout_trajectory_pattern must be a string such as {DEFAULT_PATTERN!r} (got {pattern!r})")
    try:
        first, second = pattern.format(rollout_id=0), pattern.format(rollout_id=1)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f"rollout_trajectory_pattern {pattern!r} does not format with rollout_id=0 "
                         f"({type(exc).__name__}: {exc}); e.g. {DEFAULT_PATTERN!r}") from None
    if "/" in pattern or "\\" in pattern:
        raise ValueError(f"rollout_trajectory_pattern {pattern!r} must be a file name, without '/' "
                         f"(folders go in rollout_trajectory_subdir)")
    if first.startswith(".") or not first.strip():
        raise ValueError(f"rollout_trajectory_pattern {pattern!r} gives {first!r}: a file name that is empty or "
                         f"starts with '.' (hidden files are not pushed to the datapool)")
    if first == second:
        raise ValueError(f"rollout_trajectory_pattern {pattern!r} does not use {{rollout_id}}: every rollout would "
                         f"overwrite the same file")


@dataclass
class RolloutTrajectoryArgs:
    """The `trainer:` keys that save rollouts; mixed into GRPO's config (runners/common/grpo.py) and PPO's and
    SPO's (runners/common/ppo.py: RolloutConfig), whose __post_init__ calls `check_rollout_trajectories`."""

    save_rollout_trajectories: bool = False
    rollout_trajectory_subdir: str = DEFAULT_SUBDIR  # relative to CHECKPOINT_DIR/<run_name> (the trainer's output_dir)
    rollout_trajectory_pattern: str = DEFAULT_PATTERN  # a file name; {rollout_id} is filled in

    def check_rollout_trajectories(self) -> None:
        check_rollout_trajectory_args(self.save_rollout_trajectories, self.rollout_trajectory_subdir,
                                      self.rollout_trajectory_pattern)


def _plain(value):
    """Tensors detached onto the CPU, containers walked; what torch.load(weights_only=True) reads back."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").clone()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class RolloutSaver:
    """`save(rollout_id, **fields)` writes folder/pattern.format(rollout_id=...) atomically; returns its path."""

    def __init__(self, folder: str | Path, pattern: str = DEFAULT_PATTERN):
        check_rollout_trajectory_args(True, DEFAULT_SUBDIR, pattern)
        self.folder, self.pattern = Path(folder), pattern

    @classmethod
    def from_args(cls, args) -> "RolloutSaver | None":
        """The saver a trainer config asks for (its output_dir is CHECKPOINT_DIR/<run_name>), or None when off."""
        if not getattr(args, "save_rollout_trajectories", False):
            return None
        return cls(Path(args.output_dir) / args.rollout_trajectory_subdir, args.rollout_trajectory_pattern)

    def path(self, rollout_id: int) -> Path:
        return self.folder / self.pattern.format(rollout_id=int(rollout_id))

    def save(self, rollout_id: int, **fields) -> Path:
        import torch

        target = self.path(rollout_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{target.name}.tmp-{os.getpid()}"
        try:
            torch.save({"rollout_id": int(rollout_id), **_plain(fields)}, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target


def completion_text(completion) -> str:
    """A completion as text: a string as it is; chat messages ([{"role": "assistant", "content": ...}]) joined."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content")
        parts.append(content if isinstance(content, str) else "" if content is None else str(content))
    return "".join(parts)
