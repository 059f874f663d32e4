"""The commander's keeper: keeps each unfinished run staffed, from the commander (not from anyone's laptop).

Each look, per run:
- the state of every worker job it launched, read through `launcher.api.reconcile` (which records an end, never
  relaunches that job: a relay worker is replaced by a new job, not restarted);
- a worker still pending, running or *unreachable* counts as alive: an unreachable backend is waited out, never
  relaunched over (a status read that timed out says nothing about the job);
- when fewer workers are alive than the run asks for (`workers`, default 1), it launches one (while a live lease
  is held by a job that ended, it waits for the lease to expire first) through `launcher.api.launch`, walking the run's
  backend list from the top and skipping entries in backoff. A CapacityError (or a start that failed on the way,
  e.g. a dropped connection) backs that entry off (doubling from `backoff_s` up to `backoff_cap_s`) and falls to
  the next; a UserError is recorded and the next entry tried. Launches per run and hour are capped (`max_launches_per_hour`).

A finished run is never relaunched.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from .state import RelayState

log = logging.getLogger("launcher.relay")
ALIVE = ("submitted", "submitting", "pending", "running", "unreachable")


def merged_job(template: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The worker's Job fields: the run's template, then the backend entry (a section merges key by key)."""
    fields = dict(template)
    for key, value in entry.items():
        if isinstance(value, dict) and isinstance(fields.get(key), dict):
            fields[key] = {**fields[key], **value}
        else:
            fields[key] = value
    return fields


class Keeper:
    def __init__(self, state: RelayState, every: float = 5.0, *, launch=None, look=None):
        self.state = state
        self.every = every
        self._launch = launch or _launch_worker  # (fields) -> (job id, registry record dict)
        self._look = look or _look_at_worker  # (job id) -> state
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said: dict[str, str] = {}

    def start(self) -> None:
        def loop():
            while not self._stop.wait(self.every):
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - one failed look must not stop the next
                    log.exception("keeper: look failed")

        self._thread = threading.Thread(target=loop, name="relay-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def tick(self, now: float | None = None) -> None:
        for run_id in self.state.runs():
            self.look_after(run_id, time.time() if now is None else now)

    def look_after(self, run_id: str, now: float) -> list[str]:
        """One look at one run; returns the job ids it launched."""
        view = self.state.view(run_id, now)
        cfg = view["config"]
        alive = 0
        for worker in view["workers"]:
            if worker["state"] not in ALIVE:
                continue
            seen = self._look(worker["job_id"])
            if seen != worker["state"]:
                self.state.set_worker_state(run_id, worker["job_id"], seen, now)
            alive += seen in ALIVE
        if view["finished"]:
            return []  # its workers are still looked at (above) until they end; none is launched
        wanted = int(cfg.get("workers", 1))
        if alive >= wanted or not cfg.get("backends"):
            return []
        if view["holder"] is not None and alive == 0:
            return []  # the holder's job ended but its lease is live: the run is the holder's until it expires
        cap = int(cfg.get("max_launches_per_hour", 6))
        if self.state.launches_since(run_id, now - 3600) >= cap:
            self._once(run_id, "launch_cap", f"{cap} launches in the last hour: waiting (max_launches_per_hour)")
            return []
        job_id = self._launch_one(run_id, cfg, now)
        return [job_id] if job_id else []

    def _launch_one(self, run_id: str, cfg: dict, now: float) -> str | None:
        from ..errors import CapacityError, UserError

        skipped = self.state.backoff(run_id, now)
        for index, entry in enumerate(cfg["backends"]):
            if index in skipped:
                continue
            fields = merged_job(cfg["job"], entry)
            try:
                job_id, record = self._launch(fields)
            except UserError as exc:
                self.state.event(run_id, "launch_refused", now, entry=index, backend=fields.get("backend"),
                                 error=str(exc))
                log.warning("run %s: entry %d (%s) refused: %s", run_id, index, fields.get("backend"), exc)
                continue
            except Exception as exc:  # noqa: BLE001 - capacity short, or a start that failed (upload, connection)
                short = isinstance(exc, CapacityError)
                wait = self.state.back_off(run_id, index, float(cfg.get("backoff_s", 60)),
                                           float(cfg.get("backoff_cap_s", 1800)), now)
                self.state.event(run_id, "capacity" if short else "launch_failed", now, entry=index,
                                 backend=fields.get("backend"),
                                 error=str(exc) if short else f"{type(exc).__name__}: {exc}", backoff_s=wait)
                log.info("run %s: entry %d (%s) %s: %s; skipped for %.0f s", run_id, index, fields.get("backend"),
                         "has no capacity" if short else "failed to start", exc, wait)
                continue
            self.state.clear_backoff(run_id, index)
            self.state.add_worker(run_id, job_id, str(fields.get("backend", "local")), index, record, now)
            self._said.pop(run_id, None)
            log.info("run %s: launched worker %s on entry %d (%s)", run_id, job_id, index, fields.get("backend"))
            return job_id
        self._once(run_id, "no_backend", "every backend entry is short of capacity or refused; trying again later")
        return None

    def _once(self, run_id: str, kind: str, message: str) -> None:
        if self._said.get(run_id) != kind:
            self._said[run_id] = kind
            self.state.event(run_id, kind, message=message)
            log.info("run %s: %s", run_id, message)


def _launch_worker(fields: dict[str, Any]) -> tuple[str, dict]:
    from .. import api
    from ..job import build_job
    from ..registry import Registry

    job = build_job(f"relay worker ({fields.get('backend', 'local')})", **fields)
    run = api.launch(job, detach=True)
    record = dataclasses.asdict(Registry().get(run.job_id))
    return run.job_id, record


def _look_at_worker(job_id: str) -> str:
    """The worker job's state, recorded in this machine's registry when it ended."""
    from .. import api
    from ..errors import UserError

    try:
        state, _ = api.reconcile(job_id)
    except UserError:
        return "lost"  # no record here: nothing this commander can look at or relaunch over
    return str(state)
