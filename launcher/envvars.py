"""The environment variables a user sets take one prefix, `LAUNCHER_` (`LAUNCHER_DATAPOOL`, `LAUNCHER_IMAGE_REPO`,
`LAUNCHER_SNAPSHOT_LIMIT`, `LAUNCHER_PROFILE`, ...). The older `LAUNCH_` spellings of the first three are still read,
with a one-line deprecation note on stderr (once per process and name).

The variables the launcher sets for scripts keep their names (`LAUNCH_BACKEND`, `LAUNCH_ATTEMPT`,
`LAUNCH_MAX_RESTARTS`, `LAUNCH_NUM_NODES`, `LAUNCH_TORCHRUN`, the env contract): they are not read from the user.
Stdlib only: `launch --help` and the agent may import it.
"""
from __future__ import annotations

import os
import sys

PREFIX, OLD_PREFIX = "LAUNCHER_", "LAUNCH_"
# The user-set names that had the old prefix (without it): each still read as LAUNCH_<name>, with the note.
RENAMED = ("DATAPOOL", "IMAGE_REPO", "SNAPSHOT_LIMIT")

_noted: set[str] = set()


def get(name: str, default: str | None = None) -> str | None:
    """`$LAUNCHER_<name>`, else the old `$LAUNCH_<name>` (with a deprecation note), else `default`."""
    new = PREFIX + name
    if new in os.environ:
        return os.environ[new]
    old = OLD_PREFIX + name
    if name in RENAMED and old in os.environ:
        if old not in _noted:
            _noted.add(old)
            print(f"[launcher] note: {old} is deprecated; set {new} instead (the old name still works for now)",
                  file=sys.stderr)
        return os.environ[old]
    return default


def option_default(name: str):
    """A click callback: the option's value, else `get(name)` (so `--datapool` falls back to $LAUNCHER_DATAPOOL,
    then the old $LAUNCH_DATAPOOL with its note)."""

    def callback(ctx, param, value):
        return value if value is not None else get(name)

    return callback
