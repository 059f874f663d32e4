"""Every network wait of the client and the agent, named in one place: how long one call may take, and how long
(or how many tries) a caller keeps trying before it says so.

Why one module: a flaky network is survived by the sum of these numbers (a store outage of 18 s must fit inside
the agent's push budget, a dropped SSH connection inside the foreground's reconnect budget), and they are only
reviewable side by side. Tests shorten the long ones with `LAUNCHER_NET_SCALE` (a factor on every duration
here: 0.05 makes a 5-minute push budget 15 s) instead of patching constants one by one.

Nothing here imports anything heavy: `launch --help` reads none of it, the agent on a node reads all of it.
"""
from __future__ import annotations

import os
import random


def _scale() -> float:
    try:
        return max(0.001, float(os.environ.get("LAUNCHER_NET_SCALE", "1")))
    except ValueError:
        return 1.0


def seconds(value: float) -> float:
    """A duration of this module, scaled for tests (LAUNCHER_NET_SCALE)."""
    return value * _scale()


# -- one call ---------------------------------------------------------------------------------------------------
SSH_CONNECT_S = 10.0  # TCP connect + banner; auth gets max(this, 30)
SSH_COMMAND_S = 60.0  # a short remote command (status, cancel marker); long ones pass their own
SSH_IDLE_PROBE_S = 15.0  # a followed stream quiet this long asks the server for an answer (a dead link is silent)
SSH_PROBE_TIMEOUT_S = 10.0  # ... and counts the connection lost without one in this long
S3_REQUEST_S = 120.0  # one S3 request: connect and each read
K8S_REQUEST_S = (10.0, 60.0)  # (connect, read) for every Kubernetes API call but a followed log
K8S_LOG_READ_S = 3600.0  # a followed pod log: a quiet script may print nothing for a long while
K8S_CONNECT_RETRIES = 2  # a refused or reset API connection is tried again this often (at once); a timed-out read never
EC2_CONNECT_S, EC2_READ_S = 10.0, 60.0  # botocore's own timeouts for EC2/SSM
EC2_ATTEMPTS = 3  # botocore's standard retry mode: the first try and two more
MODAL_CALL_S = 30.0  # a Modal control-plane call (status, logs poll, stop)
MODAL_COMMIT_S = 600.0  # a volume commit on a Modal node (it flushes what the job wrote since the last one)
TRANSFER_FLOOR_BPS = 1 << 20  # a file transfer slower than 1 MiB/s (after one call's time) counts as a dead link
RELAY_REQUEST_S = 10.0  # one commander request (a renewal's own bound is the worker's stop time)

# -- how long a caller keeps trying ------------------------------------------------------------------------------
S3_ATTEMPTS = 5  # one S3 request: tries on a connection error or a 5xx, with S3_BACKOFF between them
S3_BACKOFF = (0.05, 2.0)  # (first wait, cap) in seconds, doubled each try, with jitter
PUSH_BACKOFF = (1.0, 30.0)  # the agent's pushes: (first wait, cap) between tries
PUSH_TIMEOUT_S = 300  # the final push keeps trying this long (the job's --push-timeout default)
LOG_RECONNECT = (0.5, 10.0)  # the foreground's log stream: (first wait, cap) between reconnects
CANCEL_MARKER_RETRY = (0.5, 5.0)  # Ctrl-C: the marker write is retried until it lands (or a second Ctrl-C)
DOWN_MARKER_BUDGET_S = 10.0  # `launch down` of an unreachable job: how long the marker write is retried
WATCH_FAILED_LOOKS = 10  # `launch watch`: failed looks in a row before it gives up


def backoff(attempt: int, schedule: tuple[float, float]) -> float:
    """The wait before try `attempt + 1` (attempt counts from 0): first * 2**attempt, capped, with full jitter
    in its upper half so many clients that lost the same store do not come back in step. Scaled for tests."""
    first, cap = schedule
    base = min(cap, first * 2 ** min(attempt, 30))
    return seconds(base * (0.5 + random.random() / 2))
