"""Processes we own, named so that a reused pid is never mistaken for ours.

A pid alone is not an identity: after a process ends the kernel hands its number to someone else, and a
`launch down` that trusted `script.pid` once killed an unrelated process group. A ProcRef is (pid, start time in
clock ticks since boot, from /proc/PID/stat); every signal checks both before it is sent. Plain stdlib: the agent
and the node-side control (`python -m launcher.nodectl`) import it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), or None if there is no such process or it is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass(frozen=True)
class ProcRef:
    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> "ProcRef | None":
        start = start_time(pid)
        return None if start is None else cls(pid, start)

    def alive(self) -> bool:
        return start_time(self.pid) == self.start

    def signal_group(self, sig: int) -> bool:
        """Signal this process's group, only if the process is still the one we started. Returns whether a
        signal was sent."""
        if not self.alive():
            return False
        try:
            os.killpg(os.getpgid(self.pid), sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def signal(self, sig: int) -> bool:
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def dump(self) -> str:
        return f"{self.pid} {self.start}\n"

    @classmethod
    def load(cls, path: Path) -> "ProcRef | None":
        """Read a pid file written by dump(); a missing or malformed file (e.g. an old bare pid) is None."""
        try:
            pid, start = path.read_text().split()
            return cls(int(pid), int(start))
        except (OSError, ValueError):
            return None


def write_ref(path: Path, ref: ProcRef) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(ref.dump())
    os.replace(tmp, path)

