"""Slurm's view of a job, in the launcher's words. Pure: text as `scontrol -o show job` and `scontrol -o show
partition` print it in, states and one-line reasons out, so every case is tested without a cluster.

A pending job waits for one reason. Some no amount of waiting fixes (the partition has fewer nodes than the job
asks for, a time limit above the partition's, an account or QOS the job may not use, a feature no node has): the job
is refused at once with Slurm's own word for it. The others (Resources, Priority, a drained node, a dependency, a
group quota) are shown as they are and end the job only when they outlast the pending timeout.
"""
from __future__ import annotations

import re
from datetime import datetime

# Reasons no waiting fixes, with what they mean in a sentence (Slurm's own name is always shown too).
PERMANENT = {
    "PartitionNodeLimit": "the job asks for more nodes than the partition has or allows",
    "PartitionTimeLimit": "the job's time limit is above the partition's MaxTime",
    "PartitionConfig": "the partition cannot give what the job asks for (GPUs, CPUs, memory or nodes)",
    "AccountNotAllowed": "the partition does not allow this account",
    "QOSNotAllowed": "the partition does not allow this QOS",
    "InvalidAccount": "the account is unknown to Slurm, or not yours",
    "InvalidQOS": "the QOS is unknown to Slurm, or not allowed for this account",
    "BadConstraints": "no node has the features the job asks for (--constraint)",
    "DependencyNeverSatisfied": "the job depends on a job that failed",
    "launch_failed_requeued_held": "Slurm could not launch the job on its node and holds it",
    "JobLaunchFailure": "Slurm could not launch the job on its node",
}  # PartitionDown / PartitionInactive wait: an admin brings a partition back up
# Slurm briefly says PartitionConfig for requests it later names more precisely (PartitionNodeLimit,
# PartitionTimeLimit): it counts only once the job has pended this long.
SETTLE_S = {"PartitionConfig": 15.0}
# A job over a per-job limit of its association or QOS never fits it.
_PER_JOB = re.compile(r"^(Assoc|QOS)(Max\w*PerJob\w*|Min\w*|MaxWallDurationPerJobLimit)$")
# Per-user / per-account limits: other jobs of yours hold the rest; a job alone over it never fits.
PER_USER = re.compile(r"^(Assoc|QOS)Max\w*Per(User|Account)\w*$")
# A group's quota (the account's or the QOS's total): waiting works only when others finish.
QUOTA = re.compile(r"^(Assoc|QOS)(Grp\w*|Max\w*Per(User|Account)\w*|JobLimit|ResourceLimit)$")

# Slurm job states -> the launcher's, while the job is Slurm's to report.
ACTIVE_STATES = {"PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending",
                 "CONFIGURING": "running", "RUNNING": "running", "COMPLETING": "running", "SUSPENDED": "running",
                 "STOPPED": "running", "SIGNALING": "running", "RESIZING": "running", "STAGE_OUT": "running",
                 "POWER_UP_NODE": "pending", "RESV_DEL_HOLD": "pending", "SPECIAL_EXIT": "pending"}
ENDED_STATES = {"COMPLETED": "lost", "FAILED": "lost", "CANCELLED": "cancelled", "TIMEOUT": "timeout",
                "DEADLINE": "timeout", "PREEMPTED": "preempted", "NODE_FAIL": "preempted", "BOOT_FAIL": "failed",
                "OUT_OF_MEMORY": "failed", "REVOKED": "cancelled"}


def parse_record(line: str) -> dict[str, str]:
    """One `scontrol -o show ...` line -> {key: value}. Values may hold spaces (Command=, Comment=): a field ends
    where the next ` Key=` begins."""
    out = {}
    for part in re.split(r" (?=[A-Za-z][A-Za-z0-9_:/]*=)", line.strip()):
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out


def parse_time(text: str | None) -> datetime | None:
    """Slurm's local timestamps (2026-12-07T13:11:44), compared only with another from the same machine."""
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def minutes(text: str | None) -> int | None:
    """A Slurm time limit ([days-]hours:minutes:seconds, minutes, UNLIMITED) in whole minutes (rounded up); None
    for no limit."""
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        secs = parts[0] * 60
    elif len(parts) == 2:
        secs = parts[0] * 60 + parts[1]
    else:
        secs = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return days * 1440 + -(-secs // 60)


def reason_name(reason: str) -> str:
    """`ReqNodeNotAvail,_UnavailableNodes:n1` -> `ReqNodeNotAvail`."""
    return re.split(r"[,(\s]", reason or "None", maxsplit=1)[0]


def permanent(reason: str, *, pended_s: float, alone: bool | None = None) -> str | None:
    """What a pending reason means when no waiting fixes it, else None. `alone`: the user has no other job running
    (a per-user limit the job alone is over never lifts); None when not known."""
    name = reason_name(reason)
    if name in SETTLE_S and pended_s < SETTLE_S[name]:
        return None
    if name in PERMANENT:
        return PERMANENT[name]
    if _PER_JOB.match(name):
        return "the job alone is over a per-job limit of its account or QOS"
    if PER_USER.match(name) and alone:
        return "the job alone is over a per-user limit of its account or QOS"
    return None


def is_quota(reason: str) -> bool:
    return bool(QUOTA.match(reason_name(reason)))


def partition_limits(text: str) -> dict[str, dict[str, str]]:
    """`scontrol -o show partition` -> {name: record}; the default partition also under "" (its Default=YES)."""
    parts = {}
    for line in text.splitlines():
        rec = parse_record(line)
        if "PartitionName" in rec:
            parts[rec["PartitionName"]] = rec
            if rec.get("Default") == "YES":
                parts[""] = rec
    return parts


def config_value(text: str, key: str) -> str | None:
    """A value from `scontrol show config` (`KillWait                = 30 sec`)."""
    m = re.search(rf"^{re.escape(key)}\s*=\s*(.+?)\s*$", text, re.M)
    return m[1] if m else None


def seconds(value: str | None) -> int | None:
    m = re.match(r"(\d+)", value or "")
    return int(m[1]) if m else None
