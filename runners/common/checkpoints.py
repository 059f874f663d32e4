"""Checkpoint folders are `checkpoint-N` (transformers' naming); the newest is the highest N that is complete."""
from __future__ import annotations

import re
from pathlib import Path

_CKPT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    if not Path(run_dir).is_dir():
        return []
    found = []
    for child in Path(run_dir).iterdir():
        m = _CKPT.match(child.name)
        # trainer_state.json is written last; without it the checkpoint was cut short.
        if m and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def newest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None
