"""Job control on the node, from the job's state directory: is the agent alive, cancel it, kill what is left.

The local backend calls these functions in-process; the ssh backend runs the same code on the box as
`python -m launcher.nodectl VERB STATE_DIR`, so both kill by the same rules: a cancel marker first, SIGTERM to
the agent (which forwards it to the script and pushes), SIGKILL to both process groups after the grace period,
and never a signal to a pid that is no longer the process we started (see launcher/proc.py).

The state directory holds spec.json, agent.pid and script.pid (pid + start time), agent.log (the agent's own
output when detached), a copy of result.json, and the cancel marker. Plain stdlib.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from ..proc import ProcRef
from ..spec import CANCEL_MARKER

AGENT_PID = "agent.pid"
SCRIPT_PID = "script.pid"
DEADMAN_PID = "deadman.pid"  # the node bootstrap's dead-man switch (remote nodes only)
AGENT_LOG = "agent.log"
RESULT = "result.json"  # the agent leaves a copy here too, so the node can answer without the datapool


def agent_ref(state_dir: Path) -> ProcRef | None:
    return ProcRef.load(Path(state_dir) / AGENT_PID)


def agent_alive(state_dir: Path) -> bool:
    ref = agent_ref(state_dir)
    return ref is not None and ref.alive()


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def status(state_dir: Path) -> dict:
    """{'alive': bool, 'result': dict | None, 'agent_log': last lines of the agent's own output}."""
    state_dir = Path(state_dir)
    try:
        result = json.loads((state_dir / RESULT).read_text())
    except (OSError, ValueError):
        result = None
    return {"alive": agent_alive(state_dir), "result": result, "agent_log": tail(state_dir / AGENT_LOG)}


def request_cancel(state_dir: Path) -> None:
    marker = Path(state_dir) / CANCEL_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def cancel(state_dir: Path, grace: float, sig: int = signal.SIGTERM) -> dict:
    """Marker, signal the agent, wait for it (grace + 10 s), then kill whatever is left."""
    state_dir = Path(state_dir)
    request_cancel(state_dir)
    ref = agent_ref(state_dir)
    if ref is not None and ref.signal(sig):
        deadline = time.time() + grace + 10
        while ref.alive() and time.time() < deadline:
            time.sleep(0.1)
    kill(state_dir)
    return status(state_dir)


def kill(state_dir: Path) -> None:
    """SIGKILL the agent's and the script's process groups (and a dead-man switch, now without a job), if they are
    still the processes we started."""
    for name in (AGENT_PID, SCRIPT_PID, DEADMAN_PID):
        ref = ProcRef.load(Path(state_dir) / name)
        if ref is not None:
            ref.signal_group(signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m launcher.nodectl", description=__doc__.splitlines()[0])
    parser.add_argument("verb", choices=["status", "cancel", "kill"])
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--grace", type=float, default=30.0, help="cancel: seconds before SIGKILL")
    ns = parser.parse_args(argv)
    if ns.verb == "kill":
        kill(ns.state_dir)
        out = status(ns.state_dir)
    elif ns.verb == "cancel":
        out = cancel(ns.state_dir, ns.grace)
    else:
        out = status(ns.state_dir)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
