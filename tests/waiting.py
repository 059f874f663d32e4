"""Polling for a condition the code under test brings about in its own time (a process, a server, a file)."""
from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 60, poll: float = 0.1) -> bool:
    """True as soon as `predicate()` is; after `timeout` s, its last answer (so a slow last poll still counts)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())
