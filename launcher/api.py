"""The Python API: everything the CLI does, as functions. `from launcher import Job, launch`."""
from __future__ import annotations

from dataclasses import dataclass

from .backends import get_backend
from .backends.base import Handle
from .job import Job
from .plan import Plan
from .registry import Registry


@dataclass
class Run:
    """A submitted job. `exit_code` is set when launch waited for the end (not detached)."""

    job_id: str
    plan: Plan
    handle: Handle
    exit_code: int | None = None

    @property
    def state(self) -> str:
        return status(self.job_id)[0]


def plan(job: Job) -> Plan:
    """The exact request, rendered offline; nothing is created."""
    return get_backend(job.backend).plan(job)


def launch(job: Job, *, detach: bool = False, on_start=None) -> Run:
    """Run `job` on its backend. Foreground by default: returns when it ends (Ctrl-C cancels it).

    `on_start(run)` is called once the job is submitted, before waiting (the CLI prints the job id there).
    """
    backend = get_backend(job.backend)
    p = backend.plan(job)
    handle = backend.submit(p, detach=detach)
    run = Run(p.job_id, p, handle)
    if on_start is not None:
        on_start(run)
    if not detach:
        run.exit_code = backend.wait(handle)
    return run


def _handle(job_id: str) -> tuple[object, Handle, str]:
    rec = Registry().get(job_id)
    return get_backend(rec.backend), Handle(rec.id, rec.backend, rec.handle), rec.id


def status(job_id: str) -> tuple[str, int | None]:
    """(state, exit_code), refreshed from the backend for an active job."""
    rec = Registry().get(job_id)
    if rec.state not in ("pending", "running"):
        return rec.state, rec.exit_code
    backend, handle, _ = _handle(rec.id)
    state, code = backend.status(handle)
    if state not in ("pending", "running"):
        Registry().finish(rec.id, state, code)
    return state, code


def logs(job_id: str, follow: bool = False):
    backend, handle, _ = _handle(job_id)
    yield from backend.logs(handle, follow=follow)


def down(job_id: str) -> str:
    """Cancel a job and tear down what it holds; returns its final state."""
    backend, handle, full_id = _handle(job_id)
    backend.cancel(handle)
    return Registry().get(full_id).state


def down_expired(now: float | None = None) -> list[str]:
    """The sweeper: end every active job that outlived its deadline."""
    import time

    now = now or time.time()
    ended = []
    for rec in Registry().active():
        if status(rec.id)[0] in ("pending", "running") and rec.deadline is not None and rec.deadline < now:
            down(rec.id)
            ended.append(rec.id)
    return ended


def jobs(limit: int = 50):
    """Recent jobs, newest first, with active ones refreshed from their backends."""
    for rec in Registry().active():
        status(rec.id)
    return Registry().list(limit)
