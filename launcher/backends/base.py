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
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Iterator, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from ..job import Job
from ..plan import Plan

# What a `where` fact that needs the network says in a dry run (the confirmation before a launch fills it in).
CHECKED_AT_LAUNCH = "checked at launch"
# A fact `where(online=True)` may give about the code snapshot (is it in the store already?): the summary puts it on
# its own snapshot line, where offline it says CHECKED_AT_LAUNCH.
SNAPSHOT_FACT = "snapshot"
# A plan note that starts so is a warning: the summary shows it first (in colour on a terminal); the planner moves
# it to `Plan.warnings` without the prefix. Backends' `check` may return such notes too.
WARNING = "warning: "


class JobState(StrEnum):
    """Where a job is. The registry records the active ones and the final ones; UNREACHABLE is only ever observed:
    the backend could not be asked (a dropped connection, an API timeout). It is never the same as LOST (the
    backend answered, and the job is gone without a result): nobody relaunches or releases an unreachable job."""

    SUBMITTING = "submitting"
    PENDING = "pending"
    RUNNING = "running"
    # The script ended and the agent is retrying its final push to a store that does not answer (only observed;
    # the registry keeps `running`).
    PUSHING = "pushing"
    UNREACHABLE = "unreachable"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    PREEMPTED = "preempted"
    LOST = "lost"
    # The store did not come back within --push-timeout: the outputs are wherever the backend keeps them (said in
    # the message); never `failed`, which would blame the script. The pipeline treats the step as not done.
    PUSH_FAILED = "push_failed"


ACTIVE = (JobState.SUBMITTING, JobState.PENDING, JobState.RUNNING, JobState.PUSHING, JobState.UNREACHABLE)


class Observation(NamedTuple):
    """What `status` saw (it only reads): the state, the exit code when there is one, and why, in words."""

    state: JobState
    exit_code: int | None = None
    reason: str | None = None


# Result reasons (agent) -> states.
# relay_lease_lost: a relay worker whose run went to another worker (launcher/relay/worker.py) stopped its script;
# like a preemption, the work goes on elsewhere.
_STATE_BY_REASON = {"timeout": JobState.TIMEOUT, "cancelled": JobState.CANCELLED, "preempted": JobState.PREEMPTED,
                    "setup_failed": JobState.FAILED, "relay_lease_lost": JobState.PREEMPTED,
                    "push_failed": JobState.PUSH_FAILED}


def state_from_result(result: dict) -> JobState:
    reason = result.get("reason", "exited")
    if reason == "exited":
        return JobState.SUCCEEDED if result.get("exit_code") == 0 else JobState.FAILED
    return _STATE_BY_REASON.get(reason, JobState.FAILED)


def relaunch_due(job_id: str, state: str) -> bool:
    """A follower's question (read only): will this preempted job be relaunched, so its output goes on? True while
    it has restarts left, its record is still active and its deadline has not passed (whoever reconciles with
    relaunch relaunches it)."""
    if state != JobState.PREEMPTED:
        return False
    from ..registry import Registry

    rec = Registry().get(job_id)
    d = rec.handle
    return (rec.state in ACTIVE and bool(d.get("max_restarts")) and d.get("attempt", 1) <= d["max_restarts"]
            and (rec.deadline is None or rec.deadline > time.time()))


def observed(result: dict) -> Observation:
    """The agent's result.json as an Observation."""
    return Observation(state_from_result(result), result.get("exit_code"), result.get("error"))


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


@dataclass(frozen=True)
class Check:
    """One line of `launch check`: what was checked, whether it is fine (None: not checked, nothing to say it is
    wrong), and what was found, or, when not fine, the fix in one line."""

    name: str  # "credentials", "region", "API server"
    ok: bool | None
    detail: str


@dataclass(frozen=True)
class GpuOffer:
    """One row of a backend's GPU table (`launch gpus`): a catalog GPU (launcher/gpus.py) as this backend gives
    it."""

    gpu: str  # the catalog name
    name: str  # what the backend calls it: a Modal gpu string, a node label value, an instance family
    count: int | None = None  # GPUs per machine; None: whatever count the nodes carry
    machine: str | None = None  # the instance type with that many
    usd_per_hour: float | None = None  # list price of the machine (or the GPUs), as of price_date
    price_date: str | None = None


@dataclass
class NodePaths:
    """Where the job lives on the node. Relative paths are relative to the agent's working directory."""

    workdir: str
    datapool_root: str
    state_dir: str
    # The datapool root is the store itself (ssh: the sftp:// store is that folder on the box): the node syncs
    # nothing, and the client reads the store where the node writes.
    root_is_store: bool = False


class StoreRef(BaseModel):
    """How any process finds a job's folder in the store (or, local, the datapool on this machine)."""

    model_config = ConfigDict(extra="ignore")

    store_url: str | None = None
    local_root: str | None = None
    experiment: str = "default"
    endpoint_url: str | None = None


class HandleData(BaseModel):
    """What any process needs to find a job again: the registry's handle, typed. The core's part is here; each
    backend extends it with its own fields (`Backend.handle_type`). Parsed once where a record is read
    (`Backend.handle`): a record written before a field existed gets its default, a retired key is ignored."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    store: StoreRef = Field(default_factory=StoreRef)
    grace_period: float = 30.0
    push_timeout: float = 300.0  # the job's --push-timeout: how long its agent may keep trying the final push
    attempt: int = 1  # with --max-restarts where the client relaunches
    max_restarts: int = 0
    usd_per_hour: float | None = None  # the plan's price, for `launch status`'s cost so far (None: not known)


@dataclass
class Handle:
    """A job as its backend finds it again, from any process (its data stored in the registry as JSON)."""

    job_id: str
    backend: str
    data: HandleData


class Backend(ABC):
    name: str
    capabilities: Capabilities
    handle_type: type[HandleData] = HandleData  # its own subclass, with what `locator` and `start` return
    # The fields of its handle (nested ones too) that say where a job runs, in the order `launch status` shows them.
    where_fields: tuple[str, ...] = ()

    def handle(self, job_id: str, data: dict[str, Any] | HandleData, *, fresh: bool = False) -> Handle:
        """The job's handle from its registry record, parsed once. `fresh`: the dicts the launch path just merged
        (locator, start, restart), where a key the handle type does not declare is a bug, not an old record."""
        if isinstance(data, self.handle_type):
            return Handle(job_id, self.name, data)
        raw = data if isinstance(data, dict) else data.model_dump()
        if fresh and (unknown := set(raw) - set(self.handle_type.model_fields)):
            raise TypeError(f"backend {self.name}: {', '.join(sorted(unknown))} not declared by "
                            f"{self.handle_type.__name__}: it would be dropped from the job's record")
        return Handle(job_id, self.name, self.handle_type.model_validate(raw))

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

    def where(self, plan: Plan, *, online: bool = False) -> list[tuple[str, str]]:
        """Labelled facts for the plan's summary (launcher/summary.py), in order: where it runs ("region",
        "us-east-1"; "cluster", "ctx / namespace ml"; "host", ...), the "machine" and its GPUs, the "image".
        Pure and offline by default: a fact that needs the network says CHECKED_AT_LAUNCH. `online`: called at the
        launch's confirmation, after preflight, where a backend may fill such a fact in (a backend that uploads the
        snapshot to the store adds snapshot.in_store_fact there). The core adds price, runtime, datapool, snapshot
        and notes itself; a value is one short line (the summary cuts it at 80)."""
        return []

    def default_datapool(self, options=None, *, online: bool = False) -> str | None:
        """The store this backend's jobs use when none is given (`options`: the job's section for this backend, as
        `job.options` or `launch check` has it) (--datapool, LAUNCHER_DATAPOOL, the profile); None:
        the user must name one. Offline (the planner, --dry-run) it may hold a placeholder for what only the network
        knows (an account id) and must not touch the network; `online` (the launch, before its plan) it is the real
        URL. Either way the store need not exist yet: `create_datapool` makes it after the confirmation."""
        return None

    def create_datapool(self, url: str, *, dry_run: bool = False) -> bool:
        """Make the default store `url` if it is missing (private, as the backend's docs say); True when it was
        missing. Called by the launch after the confirmation, before anything is uploaded; `dry_run` (launch check)
        only looks."""
        return False

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
        """Get a machine and start the agent on it; returns the handle's data (the fields of its `handle_type`)."""

    def restart(self, plan: Plan, previous: HandleData) -> dict[str, Any]:
        """Relaunch a preempted job (`plan.spec.attempt` > 1, same id and deadline); `previous` is the last
        attempt's handle data (an EC2 zone to move away from, say). Returns the new handle's data."""
        return self.start(plan, detach=True)

    @abstractmethod
    def status(self, handle: Handle) -> Observation:
        """The backend's own view when the store has no result yet: pending, running, lost, or unreachable when
        the backend could not be asked. Only reads: what to do about it is `api.reconcile`'s."""

    # The backend's log stream is the bytes of the node's log.txt (ssh, ec2 over ssh): a follower that lost it can
    # go on from the same byte offset in the store's copy. False where the stream is the platform's own (a pod's
    # or a Modal app's output, with the node's setup lines in it): a follower then waits for the backend.
    stream_is_store_log: bool = False

    @abstractmethod
    def logs(self, handle: Handle, follow: bool = False, offset: int = 0) -> Iterator[bytes] | None:
        """The job's output, or None to let the caller tail the store's copy of log.txt. `offset`: how many bytes
        of this stream the caller already has (it reconnects after a drop): resume right after them, so no line
        is printed twice. A dropped connection raises (or ends the stream); the caller reconnects with backoff."""

    # -- cancel: the policy is here, once; a backend answers three questions --------------------------------------

    cancel_poll: float = 1.0  # seconds between looks while the job uses its grace period
    # A job gets its grace period plus this much (the agent's last push) before the hard kill, at most CANCEL_CAP.
    CANCEL_SLACK, CANCEL_CAP = 15.0, 120.0

    def cancel(self, handle: Handle, grace: float | None = None) -> None:
        """Stop the job and tear down everything it holds; the cancel marker is already in the store (the agent
        polls it). Soft stop, then up to the grace period (+ the push slack) for the job to end by itself, then the
        hard kill, which also confirms: after it returns nothing of the job runs. `grace` overrides the job's
        grace period (0: kill now)."""
        grace = handle.data.grace_period if grace is None else grace
        if grace > 0:
            self.stop_softly(handle)
            end = time.time() + min(grace + self.CANCEL_SLACK, self.CANCEL_CAP)
            while time.time() < end and self.still_running(handle):
                time.sleep(self.cancel_poll)
        self.kill_now(handle)

    def stop_softly(self, handle: Handle) -> None:
        """Ask the job to stop within its grace period (SIGTERM to the script). Default: nothing beyond the cancel
        marker the agent polls."""

    def still_running(self, handle: Handle) -> bool:
        """During a cancel: is anything of the job still running (so still able to push)?"""
        return False

    def kill_now(self, handle: Handle) -> None:
        """End whatever is left of the job at once, and everything it holds; idempotent."""
        raise NotImplementedError

    def release(self, handle: Handle) -> None:
        """The job reached a final state: free what it held beside the machine (secrets kept for the node)."""

    def confirm_teardown(self, handle: Handle) -> str | None:
        """--terminate-after: the job is over; make sure what it held is gone and say so (and what it cost)."""
        return None

    def sweep(self, now: float, options=None, *, dry_run: bool = False) -> list[str]:
        """Teardown layer 4 beyond this machine's registry: end what this backend holds past a deadline (found by
        its tags), wherever it was launched from; `options` (the backend's Options, from `launch down --expired
        --backend NAME` and its flags) says where to look. Returns a line per thing ended."""
        from ..errors import UserError

        raise UserError(f"--backend {self.name} keeps nothing outside this machine's registry; "
                        "`launch down --expired` alone sweeps it")

    def fetch_outputs(self, handle: Handle, into) -> None:
        """`launch sync up --from-job JOB` after `push_failed`: copy what the job left on its node (its experiment's
        model/ and reports/ folders) into the folder `into` (a pathlib.Path standing for the experiment dir); the
        client then pushes it with its own credentials. Only a backend whose node outlives the job can."""
        from ..errors import UserError

        raise UserError(f"--backend {self.name} keeps nothing of a job once it ends; its outputs went with the "
                        "machine (see the job's message for where they are)")

    def access_checks(self, options=None) -> list[Check]:
        """`launch check`: is this backend usable from here: its client library, credentials, region / context /
        token, one cheap read-only call, each a Check. `options`: the backend's Options (the default profile's
        section and flags), None for its defaults. Reads only; every wait bounded by launcher/netpolicy.py. The
        datapool store is checked by the caller."""
        return []

    def gpu_offers(self, options=None) -> list[GpuOffer]:
        """`launch gpus`: the GPUs this backend gives, from its own table (no network). Empty: whatever the machine
        has (not checked)."""
        return []

    def interrupt(self, handle: Handle) -> None:
        """Ctrl-C in the foreground: ask the agent to stop soon (the cancel marker is already written)."""

    def wait(self, handle: Handle, final_state, output: Iterator[bytes]) -> None:
        """Foreground: block until `final_state()` says the job ended, printing `output` (the job's log, followed:
        the backend's stream or the store's copy) as it comes. The output is pumped beside the looks, so a look
        that relaunches a preempted job does it while the stream waits for the new attempt's output."""
        import threading

        out = sys.stdout.buffer

        def pump():
            for chunk in output:
                out.write(chunk)
                out.flush()

        pumping = threading.Thread(target=pump, name="launcher-output", daemon=True)
        pumping.start()
        while final_state() is None:
            if pumping.is_alive():
                # The stream mostly ends because the job did: look at once then, not up to a second later.
                pumping.join(timeout=1.0)
            else:
                time.sleep(1.0)
        # The stream ends by itself once the job is final; its last bytes first (bounded: a wedged stream must not
        # hold a finished job's exit code back for ever).
        pumping.join(timeout=120)
