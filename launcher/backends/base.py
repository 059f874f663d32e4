"""The backend interface. One class per backend; `plan` is pure so `--dry-run` and tests can inspect it."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..job import Job
from ..plan import Plan

# Result reasons (agent) -> registry states.
_STATE_BY_REASON = {"timeout": "timeout", "cancelled": "cancelled", "preempted": "preempted", "setup_failed": "failed"}


def state_from_result(result: dict) -> str:
    reason = result.get("reason", "exited")
    if reason == "exited":
        return "succeeded" if result.get("exit_code") == 0 else "failed"
    return _STATE_BY_REASON.get(reason, "failed")


@dataclass
class Handle:
    """What a backend needs to find its job again, from any process (stored in the registry as JSON)."""

    job_id: str
    backend: str
    data: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    name: str

    @abstractmethod
    def plan(self, job: Job) -> Plan:
        """Render the exact request. Pure: no network, no files, no processes."""

    @abstractmethod
    def submit(self, plan: Plan, *, detach: bool = False) -> Handle:
        """Get a machine and start the agent on it."""

    @abstractmethod
    def wait(self, handle: Handle) -> int:
        """Block until the job ends (Ctrl-C cancels it); return the script's exit code."""

    @abstractmethod
    def status(self, handle: Handle) -> tuple[str, int | None]:
        """(state, exit_code): pending, running, succeeded, failed, cancelled, timeout, preempted or lost."""

    @abstractmethod
    def logs(self, handle: Handle, follow: bool = False) -> Iterator[bytes]:
        """The job's output so far; with follow, keep yielding until the job ends."""

    @abstractmethod
    def cancel(self, handle: Handle) -> None:
        """Stop the job and tear down everything it holds."""
