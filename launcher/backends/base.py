"""What a backend is: declared capabilities plus six verbs. Everything else is the one launch path (api.py).

A backend only
  * declares what it can honour (`capabilities`), so the planner refuses or notes what it cannot;
  * says where the job's files live on its node (`node_paths`);
  * renders its exact request (`render`, pure: no network, no files, no processes) and prices it (`price`);
  * checks what only it can check before anything is recorded (`preflight`: a host key, a cluster);
  * starts the agent (`start`), reads its own state (`status`), streams logs (`logs`) and kills (`cancel`).
The store-backed parts (result.json first, cancel marker, log tail) are generic and live in api.py.
"""
from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..job import Job
from ..plan import Plan

# Result reasons (agent) -> registry states.
_STATE_BY_REASON = {"timeout": "timeout", "cancelled": "cancelled", "preempted": "preempted", "setup_failed": "failed"}
ACTIVE = ("submitting", "pending", "running")


def state_from_result(result: dict) -> str:
    reason = result.get("reason", "exited")
    if reason == "exited":
        return "succeeded" if result.get("exit_code") == 0 else "failed"
    return _STATE_BY_REASON.get(reason, "failed")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can honour. The planner turns every Job field outside these into an error or a plan note."""

    remote: bool  # the job runs on another machine: code travels as a snapshot, a store is the meeting point
    gpus: tuple[str, ...] | None  # GPU types it can provide; None = whatever the machine has (not enforced)
    spot: bool
    max_nodes: int
    datapool_schemes: tuple[str, ...]  # store URL schemes its nodes can reach
    resources_enforced: bool  # cpus / memory / disk are requests the platform enforces
    # The platform reruns a preempted attempt itself (Modal's retries): --max-restarts goes to it, and the client
    # never relaunches on top (which would allow twice the restarts asked for).
    retries_itself: bool = False
    # Jobs are taken away without --spot too (k8s: a drain, node pressure, a higher-priority pod): such a stop is
    # a preemption, and --max-restarts relaunches it.
    preempts_on_demand: bool = False


@dataclass
class NodePaths:
    """Where the job lives on the node. Relative paths are relative to the agent's working directory."""

    workdir: str
    datapool_root: str
    state_dir: str


@dataclass
class Handle:
    """What a backend needs to find its job again, from any process (stored in the registry as JSON)."""

    job_id: str
    backend: str
    data: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    name: str
    capabilities: Capabilities

    def check(self, job: Job) -> list[str]:
        """Backend-specific refusals (raise UserError) and notes, beyond what capabilities say. Pure."""
        return []

    @abstractmethod
    def node_paths(self, job: Job, job_id: str, snapshot_sha: str | None) -> NodePaths:
        """Where code, datapool and state live on the node. Pure."""

    @abstractmethod
    def render(self, plan: Plan) -> dict[str, Any]:
        """The exact request, with the AgentSpec inline. Pure: no network, no files, no processes."""

    def price(self, job: Job) -> dict[str, Any]:
        return {}

    def preflight(self, plan: Plan) -> None:
        """Checks that need the network or the machine (host keys, quotas); raise UserError. Nothing is created."""

    def secrets_elsewhere(self, job: Job) -> bool:
        """True when the job's secrets live in the backend's own store (a k8s Secret, a Modal Secret by name), so
        they need not be set in this environment; its preflight checks they exist."""
        return False

    def locator(self, plan: Plan) -> dict[str, Any]:
        """Where the job's resources will be (a region, a cluster): recorded with the `submitting` record, before
        start, so a client killed mid-start leaves a record the sweeper can act on. Cheap; no network."""
        return {}

    @abstractmethod
    def start(self, plan: Plan, *, detach: bool) -> dict[str, Any]:
        """Get a machine and start the agent on it; returns the handle's data."""

    def restart(self, plan: Plan, previous: dict[str, Any]) -> dict[str, Any]:
        """Relaunch a preempted job (`plan.spec.attempt` > 1, same id and deadline); `previous` is the last
        attempt's handle data (an EC2 zone to move away from, say). Returns the new handle's data."""
        return self.start(plan, detach=True)

    @abstractmethod
    def status(self, handle: Handle) -> tuple[str, int | None, str | None]:
        """The backend's own view when the store has no result yet: (pending | running | lost, exit_code, reason)."""

    @abstractmethod
    def logs(self, handle: Handle, follow: bool = False) -> Iterator[bytes] | None:
        """The job's output, or None to let the caller tail the store's copy of log.txt."""

    @abstractmethod
    def cancel(self, handle: Handle, grace: float | None = None) -> None:
        """Stop the job and tear down everything it holds (the cancel marker is already written). `grace`
        overrides the job's grace period (0: kill now)."""

    def release(self, handle: Handle) -> None:
        """The job reached a final state: free what it held beside the machine (secrets kept for the node)."""

    def interrupt(self, handle: Handle) -> None:
        """Ctrl-C in the foreground: ask the agent to stop soon (the cancel marker is already written)."""

    def wait(self, handle: Handle, final_state, output: Iterator[bytes]) -> None:
        """Foreground: block until `final_state()` says the job ended, printing `output` (the job's log, followed:
        the backend's stream or the store's copy) as it comes."""
        out = sys.stdout.buffer
        for chunk in output:
            out.write(chunk)
            out.flush()
        while final_state() is None:
            time.sleep(0.5)
