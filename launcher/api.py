"""The Python API and the one launch path every backend goes through. `from launcher import Job, launch`.

    launch(job) = validate -> code snapshot (remote) -> plan (pure) -> secrets exist here -> probe the store
                  -> backend preflight -> registry record (submitting) -> backend.start (the snapshot goes to
                  where the node reads it) -> registry record (running) -> [foreground: stream until the result]

status reads result.json from the store first and the backend's own state second; down writes the cancel
marker into the store (the agent polls it), then uses the backend's kill. So client and node never need a
live link, and any terminal can follow, stop or sweep any job.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from . import joblog
from .backends import get_backend
from .backends.base import ACTIVE, Handle, JobState, Observation, observed, relaunch_due, state_from_result
from .errors import CapacityError, NotConfirmed, UserError
from .job import Job
from .plan import Plan
from .registry import Registry, launcher_home


# A job's output lives in joblog.py; these names stay here for the SDK, the CLI and Run.
logs, log_lines, setup_logs, tail_store_log = joblog.logs, joblog.log_lines, joblog.setup_logs, joblog.tail_store_log


@dataclass(frozen=True)
class JobStatus:
    """A job as `launch status`, `launch jobs --json` and the SDK see it (`launcher.status(id)`, `Run.status()`,
    `launcher.jobs()`). Times are epoch seconds (UTC); `to_dict()` gives them as ISO 8601 text, as `--json` prints.
    `summary` is `launch status`'s first line (`succeeded (exit code 0)`, `running (unreachable since ...)`)."""

    job_id: str
    name: str
    state: str  # a JobState value: submitting, pending, running, pushing, unreachable, or a final state
    exit_code: int | None
    reason: str | None  # why it ended the way it did, when the state alone does not say
    backend: str
    where: str | None  # where it runs: a region and instance, a host, a namespace, this machine (pid)
    submitted: float
    started: float | None  # when the script started (from the job's result; None until it ended)
    ended: float | None
    deadline: float | None
    duration_s: float | None  # started (else submitted) to ended, or to now while it runs
    usd_per_hour: float | None  # the plan's price; None where none is known (your own box or cluster)
    cost_usd: float | None  # price x hours from submission to the end (or now): what it cost so far
    attempt: int
    max_attempts: int  # 1 + --max-restarts (where the client relaunches)
    log: str | None  # where the job's log.txt is kept (a path, or the store's URL)
    summary: str

    @property
    def active(self) -> bool:
        """Not ended yet (submitting, pending, running, pushing, unreachable)."""
        return self.state in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        from .plan import iso

        out: dict[str, Any] = dict(self.__dict__)
        for key in ("submitted", "started", "ended", "deadline"):
            out[key] = iso(out[key])
        out["active"] = self.active
        return out


@dataclass
class Run:
    """A submitted job. `exit_code` is set when launch waited for the end (not detached), or by `wait()`."""

    job_id: str
    plan: Plan
    handle: Handle
    exit_code: int | None = None
    teardown: str | None = None  # --terminate-after: what the backend confirmed (instance gone, runtime, cost)

    @property
    def state(self) -> str:
        return status(self.job_id)[0]

    def status(self) -> JobStatus:
        """The job now (reads the store's result, else asks the backend; records a final state it finds)."""
        return job_status(self.job_id)

    def wait(self, timeout: float | None = None, poll: float = 1.0) -> JobStatus:
        """Block until the job ends and return how it ended (a preempted job with --max-restarts left is
        relaunched meanwhile, as `launch watch` does). Raises TimeoutError after `timeout` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        delay = min(0.2, poll)
        while True:
            state, code = reconcile(self.job_id, relaunch=True)
            if state not in ACTIVE:
                self.exit_code = code
                return job_status(self.job_id)
            if end is not None and time.monotonic() >= end:
                raise TimeoutError(f"{self.job_id} still {state} after {timeout:g} s")
            time.sleep(delay if end is None else max(0.0, min(delay, end - time.monotonic())))
            delay = min(delay * 2, poll)

    def logs(self, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """The job's output as text lines (without their newline); `follow` goes on until the job ends."""
        return log_lines(self.job_id, follow=follow, tail=tail)

    def down(self, wait: bool = True) -> JobStatus:
        """Stop the job and tear down what it holds (`launch down JOB`); returns how it ended."""
        return down_job(self.job_id, wait=wait)


def _get_backend(name: str):
    """The backend, its module imported without pydantic's plugin scan (launcher/fastmodels.py): its handle models
    would otherwise be the first built outside the CLI's `without_plugins`, and scan every entry point (~25 ms)."""
    from .fastmodels import without_plugins

    with without_plugins():
        return get_backend(name)


def plan(job: Job) -> Plan:
    """The exact request, rendered offline; nothing is created."""
    from .planner import make_plan

    return make_plan(job)


def _check_secrets(job: Job, backend) -> None:
    if backend.secrets_elsewhere(job):
        return  # the backend's own store holds them (k8s: an existing Secret); its preflight checks them
    missing = [s for s in job.secrets if s not in os.environ]
    if missing:
        raise UserError(f"secret {missing[0]} is not set in your environment; export {missing[0]}=... "
                        f"(the value never goes into the plan or the job record)")


def _probe_store(p: Plan) -> None:
    """A missing bucket or missing credentials is the user's to fix: say so now, before any record or machine."""
    from .datapool import mount_only, open_store

    if not p.spec.store_url or mount_only(p.spec.store_url):  # the backend checks a claim exists (preflight)
        return

    store = open_store(p.spec.store_url, f"experiments/{p.job.experiment}", readonly=True,
                       endpoint_url=p.spec.endpoint_url)
    try:
        store.probe()
    finally:
        store.close()


def _jobstore_ref(p: Plan, backend) -> dict:
    """How any process finds this job's folder in the store later (kept in the handle)."""
    if not backend.capabilities.remote:  # the node is this machine: read its datapool directly
        return {"store_url": None, "local_root": p.spec.datapool_root, "experiment": p.job.experiment}
    from .datapool import mount_only

    if mount_only(p.spec.store_url):
        return {"store_url": None, "experiment": p.job.experiment}  # no store here: the backend's view answers
    # The plan's store, not the spec's: where the node's root is the store (spec None), the client still reads it.
    return {"store_url": p.datapool.get("store"), "experiment": p.job.experiment, "endpoint_url": p.spec.endpoint_url}


def launch(job: Job, *, detach: bool = False, on_start=None, confirm=None, progress=False) -> Run:
    """Run `job` on its backend. Foreground by default: returns when it ends (Ctrl-C cancels it).

    `on_start(run)` is called once the job is submitted, before waiting (the CLI prints the job id there).
    `confirm(plan, facts)`: asked after preflight, before anything is recorded or created; `facts()` gives the
    backend's `where(plan, online=True)`. False raises NotLaunched. None (the SDK's default): never asked.
    `progress`: True prints a remote launch's phases on stderr as they happen (launcher/progress.py; the CLI does),
    or a `progress.Reporter` to send them to. False (the SDK's default): nothing printed.
    """
    from .progress import showing

    with showing(progress):
        return _launch(job, detach=detach, on_start=on_start, confirm=confirm)


def _launch(job: Job, *, detach: bool, on_start, confirm) -> Run:
    from . import progress
    from .planner import make_plan

    if detach and job.terminate_after:
        raise UserError("--terminate-after waits for the end to tear down: drop --detach (or --terminate-after)")
    backend = _get_backend(job.backend)
    snapshot = None
    if backend.capabilities.remote:
        from .snapshot import build

        job.check_script()
        snapshot = build(Path(job.workdir))
    default_store = None
    if backend.capabilities.remote and not job.datapool:
        from .planner import with_default_datapool

        job, default_note = with_default_datapool(backend, job, online=True)  # the real URL (an account id)
        default_store = job.datapool
    p = make_plan(job, snapshot=snapshot, backend=backend)  # one backend object for the whole launch
    if default_store is not None:
        p.notes[:0] = default_note
    _check_secrets(p.job, backend)
    if default_store is None:
        _probe_store(p)  # the default store may not exist yet: create_datapool below makes and checks it
    backend.preflight(p)
    if confirm is not None and not confirm(p, lambda: backend.where(p, online=True)):
        from .errors import NotLaunched

        raise NotLaunched(f"{p.job_id}: not launched")
    if snapshot is not None:  # after the [Y/n]: a terminal's status line would run over the question
        progress.report(progress.SNAPSHOT, f"{snapshot.sha256[:12]}, {snapshot.files} files, "
                                           f"{progress.human_bytes(snapshot.size)}")
    if default_store is not None and backend.create_datapool(str(default_store)):
        print(f"created the {backend.name} default store {default_store}", file=sys.stderr)
    registry = Registry()  # add() below refuses an unusable registry (exit 2, the file named) before start
    handle_data = {"store": _jobstore_ref(p, backend), "grace_period": p.job.grace_period,
                   "push_timeout": p.job.push_timeout, "usd_per_hour": (p.price or {}).get("usd_per_hour"),
                   **backend.locator(p)}
    if p.job.max_restarts and not backend.capabilities.retries_itself:
        handle_data.update(attempt=1, max_restarts=p.job.max_restarts)
        _save_for_restart(p)
    registry.add(p.job_id, p.job.run_name, backend.name, p.deadline_at, handle_data, state="submitting")
    try:
        handle_data.update(backend.start(p, detach=detach))
    except BaseException as exc:
        # start raised before the job ran (a failed upload, a refused command): the record says why.
        registry.update(p.job_id, handle=handle_data)
        registry.finish(p.job_id, "failed", None)
        _save_reason(p.job_id, f"start failed: {exc}")
        raise
    handle = backend.handle(p.job_id, handle_data, fresh=True)  # typed from here on; the registry keeps that
    registry.update(p.job_id, state="running", handle=handle.data.model_dump(mode="json"))
    if backend.capabilities.remote:
        progress.report(progress.REQUEST_SENT, _where(backend, handle, None) or backend.name)
    run = Run(p.job_id, p, handle)
    if detach and handle_data.get("max_restarts") and os.environ.get("LAUNCHER_WATCH") != "0":
        _start_watcher(p.job_id)  # a relaunch needs someone looking, and the user has walked away
    if on_start is not None:
        on_start(run)
    if not detach:
        run.exit_code = wait(p.job_id, backend, run.handle)
        if p.job.terminate_after:
            run.teardown = backend.confirm_teardown(run.handle)
    return run


def _start_watcher(job_id: str) -> None:
    """`launch watch JOB` in a session of its own, outliving this client: it looks at the job until it ends, so a
    preempted job is relaunched without anyone running `launch status`. Its output: jobs/<id>/watch.log."""
    import subprocess

    log_path = launcher_home() / "jobs" / job_id / "watch.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log, open(os.devnull, "rb") as null:
        subprocess.Popen([sys.executable, "-m", "launcher", "watch", job_id], stdin=null, stdout=log, stderr=log,
                         start_new_session=True, close_fds=True)


def watch(job_id: str, every: float | None = None, on_change=None) -> tuple[str, int | None]:
    """Look at the job every `every` seconds (LAUNCHER_WATCH_EVERY, default 15) until it ends; each look is a
    `reconcile`, which relaunches a preempted job with restarts left. `on_change(state)` hears each new state. Ten
    failed looks in a row (the cloud unreachable) end the watch with that error; a relaunch short of capacity is
    retried with backoff."""
    from . import netpolicy

    every = every if every is not None else float(os.environ.get("LAUNCHER_WATCH_EVERY", "15"))
    last, failures, short = None, 0, 0
    while True:
        try:
            state, code = reconcile(job_id, relaunch=True)
            failures = short = 0
        except UserError:
            raise
        except CapacityError as exc:
            if exc.quota:
                raise  # waiting does not raise a quota: that is for another region or backend
            # No machine for the relaunch now: ask again later, backing off (at most every 10 minutes); the
            # deadline ends it (a relaunch is not tried without time left).
            short += 1
            sys.stderr.write(f"[launcher] {job_id}: {exc}; retrying\n")
            time.sleep(min(every * 2 ** min(short, 6), 600))
            continue
        except Exception:  # noqa: BLE001 - a network blip is asked again; a dead end is not asked forever
            failures += 1
            if failures >= netpolicy.WATCH_FAILED_LOOKS:
                raise
            time.sleep(every)
            continue
        if state != last and on_change is not None:
            on_change(state)
        last = state
        if state not in ACTIVE:
            return state, code
        time.sleep(every)


def _restart_file(job_id: str):
    return launcher_home() / "jobs" / job_id / "restart.json"


def _save_for_restart(p: Plan) -> None:
    """What a relaunch re-plans from: the validated job, its id and creation time (so the deadline stays one)."""
    import json

    path = _restart_file(p.job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The workdir made absolute: whoever relaunches (`launch watch`, the foreground) may look from another directory.
    job = {**p.job.model_dump(mode="json"), "workdir": str(Path(p.job.workdir).resolve())}
    snap = p.snapshot
    path.write_text(json.dumps({"job": job, "created": p.created, "snapshot": snap and {
        "sha256": snap.sha256, "size": snap.size, "files": snap.files, "path": str(snap.path) if snap.path else None}}))


def _restart_if_preempted(rec, backend, handle: Handle) -> bool:
    """A preempted job with restarts left is relaunched: same id and deadline, attempt + 1, the last attempt's
    result moved aside (result.attempt-N.json) so the store answers for the new one. Whoever reconciles with
    relaunch first (the foreground wait, `launch watch`) relaunches; a lock file keeps it to one."""
    import fcntl
    import json

    d = handle.data
    attempt, allowed = d.attempt, d.max_restarts
    if attempt > allowed:
        return False
    saved = json.loads(_restart_file(rec.id).read_text())
    lock = open(_restart_file(rec.id).with_suffix(".lock"), "w")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True  # another process is relaunching it right now
        current = Registry().get(rec.id)
        if current.handle.get("attempt", 1) != attempt or current.state not in ACTIVE:
            return current.state in ACTIVE  # relaunched (or ended) by someone else meanwhile
        from .planner import make_plan
        from .snapshot import Snapshot

        job = Job.model_validate(saved["job"])
        snap = saved.get("snapshot")
        # A record written before the Plan carried the Snapshot object keeps its path beside it.
        path = None if snap is None else (snap.get("path") or saved.get("snapshot_file"))
        snapshot = None if snap is None else Snapshot(snap["sha256"], snap["size"], snap["files"],
                                                      Path(path) if path else None)
        p = make_plan(job, snapshot=snapshot, job_id=rec.id, created=saved["created"], attempt=attempt + 1,
                      backend=backend)
        if p.spec.stop_at is not None and p.spec.stop_at - time.time() < 60:
            _save_reason(rec.id, f"preempted on attempt {attempt}; no time left before the deadline to relaunch")
            return False
        backend.cancel(handle, grace=0.0)  # whatever is left of the preempted attempt goes first
        js = _jobstore(handle)
        previous = None
        if js is not None:
            try:
                previous = js.read("result.json")
                if previous is not None:
                    js.write(f"result.attempt-{attempt}.json", previous)
                    js.remove("result.json")
            finally:
                js.close()
        try:
            new = backend.restart(p, d)
        except CapacityError:
            # No machine now: the attempt's result goes back, so the next look sees it preempted again and retries.
            if previous is not None and (js := _jobstore(handle)) is not None:
                try:
                    js.write("result.json", previous)
                finally:
                    js.close()
            raise
        handle.data = backend.handle(rec.id, {**d.model_dump(), **new, "attempt": attempt + 1}, fresh=True).data
        Registry().update(rec.id, handle=handle.data.model_dump(mode="json"))
        sys.stderr.write(f"[launcher] {rec.id} was preempted (attempt {attempt}); relaunched as attempt "
                         f"{attempt + 1} of {allowed + 1}, resuming from its last pushed checkpoint\n")
        return True
    finally:
        lock.close()


def wait(job_id: str, backend, handle: Handle) -> int:
    """Foreground: stream the job until it ends, through any number of dropped connections (the stream reconnects,
    a look that cannot reach the backend is asked again), and return the script's exit code once the store or the
    backend has the result. Ctrl-C cancels it (a second Ctrl-C kills at once)."""
    from . import progress
    from .spec import PUSH_FAILED_EXIT

    warned = []
    # A remote launch's phases until its first output: the backend's own view (its looks below) and the node's
    # setup.log in the job's store folder (the agent pushes it).
    shown = progress.current() if backend.capabilities.remote else None
    node_files = _jobstore(handle) if shown is not None else None
    if shown is not None:
        shown.job_id = job_id
        if node_files is not None:
            shown.follow_node(lambda offset: node_files.read("setup.log", offset))

    def final():
        if shown is not None:
            shown.node_lines()
        try:
            state, code = reconcile(job_id, relaunch=True)
        except (UserError, CapacityError):
            raise
        except Exception as exc:  # noqa: BLE001 - a look that failed on the network is asked again next second
            if not warned:
                sys.stderr.write(f"[launcher] warning: cannot look at {job_id} now ({exc}); still waiting\n")
                warned.append(exc)
            return None
        return None if state in ACTIVE else (state, code)

    try:
        output = logs(job_id, follow=True)
        backend.wait(handle, final, output if shown is None else shown.until_first_output(output))
    except KeyboardInterrupt:
        sys.stderr.write("\n[launcher] cancelling (Ctrl-C again to kill)\n")
        try:
            _request_cancel(handle, until_landed=True)
            try:
                backend.interrupt(handle)
            except Exception as exc:  # noqa: BLE001 - unreachable: the marker in the store reaches the agent
                sys.stderr.write(f"[launcher] {exc}; the agent stops the job when it sees the cancel marker\n")
            while final() is None:
                time.sleep(0.3)
        except KeyboardInterrupt:
            sys.stderr.write("\n[launcher] killing\n")
            try:
                backend.cancel(handle, grace=0.0)
            except Exception as exc:  # noqa: BLE001 - nothing more a client cut off from the node can do
                sys.stderr.write(f"[launcher] cannot reach the job to kill it ({str(exc).splitlines()[0]}); "
                                 f"`launch down {job_id}` ends it once it can; its deadline ends it in any case\n")
                return 130
    state, code = final() or ("cancelled", None)
    if shown is not None:  # ended before any output (a setup failure): the phases end with its last setup line
        shown.close()
        if node_files is not None:
            node_files.close()
    Registry().finish(job_id, state, code)
    if state == JobState.PUSH_FAILED:
        why = reason(job_id)
        sys.stderr.write(f"[launcher] {job_id}: push_failed" + (f": {why}" if why else "") + "\n")
        return PUSH_FAILED_EXIT
    return code if code is not None else (130 if state == "cancelled" else 1)


def _jobstore(handle: Handle):
    from .jobstore import JobStore

    ref = handle.data.store
    if not ref.store_url and not ref.local_root:
        return None  # a record from before jobs had a store reference
    return JobStore(ref.store_url, ref.local_root, ref.experiment, handle.job_id, endpoint_url=ref.endpoint_url)


_UNREADABLE = object()  # _read_result(strict=True): the store did not answer (not: there is no result)


def _read_result(handle: Handle, strict: bool = False):
    """The job's result.json from the store, or None. An unreachable store also reads as None (the backend's own
    view answers instead), unless `strict`: then it is _UNREADABLE."""
    import json

    js = _jobstore(handle)
    if js is None:
        return None
    try:
        data = js.read("result.json")
    except Exception:  # noqa: BLE001 - an unreachable store leaves the backend's own view to answer
        if strict:
            return _UNREADABLE
        data = None
    finally:
        js.close()
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _request_cancel(handle: Handle, *, until_landed: bool = False, budget: float | None = None) -> bool:
    """Write the cancel marker into the store (the agent polls it); True once it landed. A store that does not
    answer is asked again with backoff: `until_landed` for ever (the foreground's Ctrl-C: a second Ctrl-C stops
    it), else for at most `budget` seconds (default: one try)."""
    from . import netpolicy
    from .spec import CANCEL_MARKER

    end = None if until_landed else time.monotonic() + (budget or 0)
    tries = 0
    while True:
        js = _jobstore(handle)
        if js is None:
            return False
        try:
            js.write(CANCEL_MARKER, f"{time.time()}\n".encode())
            return True
        except Exception as exc:  # noqa: BLE001 - the backend's own kill still follows
            wait = netpolicy.backoff(tries, netpolicy.CANCEL_MARKER_RETRY)
            if end is not None and time.monotonic() + wait > end:
                sys.stderr.write(f"[launcher] warning: cancel marker not written to the store: {exc}\n")
                return False
            if tries == 0:
                sys.stderr.write(f"[launcher] the store does not answer ({exc}); retrying the cancel marker"
                                 + (" (Ctrl-C again to stop trying)" if until_landed else "") + "\n")
        finally:
            js.close()
        tries += 1
        time.sleep(wait)


def _save_reason(job_id: str, reason: str) -> None:
    path = launcher_home() / "jobs" / job_id / "reason.txt"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(reason.strip() + "\n")
    except OSError:
        pass


def reason(job_id: str) -> str | None:
    """Why a job ended the way it did, when the result alone does not say (lost, start failed, setup failed)."""
    rec = Registry().get(job_id)
    path = launcher_home() / "jobs" / rec.id / "reason.txt"
    if path.exists():
        return path.read_text().strip()
    result = _read_result(get_backend(rec.backend).handle(rec.id, rec.handle))
    if result and result.get("error"):
        return result["error"]
    return None


def _release(job_id: str, backend, handle: Handle) -> None:
    """The job is final: the backend frees what it kept beside the machine (secrets, a security group)."""
    try:
        backend.release(handle)
    except Exception as exc:  # noqa: BLE001 - the sweeper is the layer that retries
        sys.stderr.write(f"[launcher] warning: {job_id}: not released: {exc}\n")


def attempts(job_id: str) -> tuple[int, int] | None:
    """(this attempt, attempts allowed) for a job launched with --max-restarts; None otherwise."""
    d = Registry().get(job_id).handle
    return (d.get("attempt", 1), d["max_restarts"] + 1) if d.get("max_restarts") else None


def _handle(job_id: str):
    rec = Registry().get(job_id)
    backend = _get_backend(rec.backend)
    return rec, backend, backend.handle(rec.id, rec.handle)


def observe(job_id: str) -> Observation:
    """What the job is doing now, read only: the registry's final state, else the store's result.json, else the
    backend's own view. Writes nothing, relaunches nothing: `reconcile` acts on what this finds."""
    rec, backend, handle = _handle(job_id)
    if rec.state not in ACTIVE:
        return Observation(JobState(rec.state), rec.exit_code)
    result = _read_result(handle)
    if result is not None:
        return observed(result)
    seen = _backend_view(backend, handle)
    if seen.state in (*ACTIVE, JobState.PUSH_FAILED):  # push_failed: the node gave up on that store itself
        return seen
    # The node pushes result.json last and then ends: it may have landed between our read and the backend's
    # answer. Only a second look that still finds nothing (and can read the store) is final.
    result = _read_result(handle, strict=True)
    if result is _UNREADABLE:
        return Observation(JobState.UNREACHABLE, None, "the store did not answer; decided on the next look")
    return observed(result) if result is not None else seen


def _backend_view(backend, handle: Handle) -> Observation:
    from .progress import current

    state, code, why = backend.status(handle)
    if (shown := current()) is not None:  # a launch's foreground: the backend's words are what it waits for
        shown.observed(handle.job_id, state, why)
    return Observation(JobState(state), code, why)


def status(job_id: str) -> tuple[str, int | None]:
    """(state, exit_code), read only (see `observe`)."""
    seen = observe(job_id)
    return seen.state, seen.exit_code


def reconcile(job_id: str, *, relaunch: bool = False) -> tuple[str, int | None]:
    """Act on what `observe` finds: record a final state in the registry (the first recorded wins), release what
    the job held, and, with `relaunch`, relaunch a preempted job with restarts left. Its callers: the foreground
    wait and `launch watch` (relaunch), `launch down --expired` (the sweeper), `launch status` and `launch jobs`
    (which only record: they never relaunch). An unreachable backend is waited out, never acted on."""
    rec, backend, handle = _handle(job_id)
    if rec.state not in ACTIVE:
        return rec.state, rec.exit_code
    seen = observe(job_id)
    _note_reachability(rec.id, seen)
    if relaunch_due(job_id, seen.state):
        if relaunch and _restart_if_preempted(rec, backend, handle):
            return JobState.PENDING, None
        if not relaunch:
            return seen.state, seen.exit_code  # the relauncher's to act on (watch, the foreground): not an end
    if seen.state in ACTIVE:
        return seen.state, seen.exit_code
    if seen.reason and _read_result(handle) is None:
        _save_reason(rec.id, seen.reason)  # e.g. a setup failure whose result never reached the store
    Registry().finish(rec.id, seen.state, seen.exit_code)
    _release(rec.id, backend, handle)
    final = Registry().get(rec.id)  # the first final state recorded wins (a concurrent `down`, say)
    return final.state, final.exit_code


def _unreachable_file(job_id: str) -> Path:
    return launcher_home() / "jobs" / job_id / "unreachable"


def _note_reachability(job_id: str, seen: Observation) -> None:
    """Kept beside the job's other observations (reason.txt): when a look first failed to reach the backend, and
    why. Cleared by the next look that gets an answer."""
    path = _unreachable_file(job_id)
    if seen.state != JobState.UNREACHABLE:
        path.unlink(missing_ok=True)
    elif not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{time.time()}\n{(seen.reason or 'no answer').splitlines()[0]}\n")
        except OSError:
            pass


def unreachable_since(job_id: str) -> tuple[float, str] | None:
    """(when a look first failed to reach the job's backend, why), while the looks keep failing; else None."""
    try:
        when, _, why = _unreachable_file(Registry().get(job_id).id).read_text().partition("\n")
        return float(when), why.strip()
    except (OSError, ValueError):
        return None


def describe(job_id: str, state: str, code: int | None) -> str:
    """A state as `launch status` and the SDK say it: `succeeded (exit code 0)`, `running (unreachable since
    14:02:11: <why>)`, `pushing (store unreachable, retrying)`."""
    if state == JobState.UNREACHABLE:
        since = unreachable_since(job_id)
        when, why = since if since else (time.time(), observe(job_id).reason or "no answer")
        return f"running (unreachable since {time.strftime('%H:%M:%S', time.localtime(when))}: {why})"
    if state == JobState.PUSHING:
        return f"pushing ({observe(job_id).reason or 'store unreachable, retrying'})"
    return state if code is None else f"{state} (exit code {code})"


def down(job_id: str, *, wait: bool = True) -> str:
    """Cancel a job and tear down what it holds; returns its final state. When the backend cannot be reached, the
    cancel marker in the store is what stops it: with `wait`, this waits for the node's result there for at most
    the job's grace period + push timeout (without, it returns the state it is in now, active). Raises
    NotConfirmed when the end cannot be confirmed."""
    from . import netpolicy

    rec, backend, handle = _handle(job_id)
    landed = False
    if rec.state in ACTIVE:
        landed = _request_cancel(handle)  # one try: the backend's kill usually follows at once
    try:
        backend.cancel(handle)
    except Exception as exc:  # noqa: BLE001 - e.g. the box is unreachable: the marker in the store still works
        if rec.state not in ACTIVE or not backend.capabilities.remote:
            raise
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        landed = landed or _request_cancel(handle, budget=netpolicy.seconds(netpolicy.DOWN_MARKER_BUDGET_S))
        if not landed:
            raise NotConfirmed(f"{rec.id}: not cancelled: {why}, and the store did not take the cancel marker "
                               f"either; try again when either answers (its deadline ends it in any case)") from None
        sys.stderr.write(f"[launcher] {why}; the cancel marker is in the store: the node stops the job when it next "
                         "looks (within 5 s)\n")
        if not wait:
            return reconcile(rec.id)[0]
        state = _wait_for_end(rec.id, handle)
        if state in ACTIVE:
            raise NotConfirmed(f"{rec.id}: not confirmed ended: no result in the store after "
                               f"{handle.data.grace_period + handle.data.push_timeout:g} s and the backend still "
                               f"does not answer ({why}); the marker stays, and the job's deadline ends it in any case")
        return state
    if rec.state in ACTIVE:
        _record_cancelled(rec.id, backend, handle)
    _release(rec.id, backend, handle)
    return Registry().get(rec.id).state


def _wait_for_end(job_id: str, handle: Handle, poll: float = 2.0) -> str:
    """After a cancel the backend could not carry out: the job's state once its result is in the store (or the
    backend answers again), waiting at most its grace period + push reserve (what the agent may take to stop)."""
    from . import netpolicy

    d = handle.data
    end = time.monotonic() + d.grace_period + d.push_timeout + netpolicy.seconds(10)
    sys.stderr.write(f"[launcher] waiting for {job_id} to end (at most {d.grace_period + d.push_timeout:g} s; "
                     "--no-wait returns at once)\n")
    while True:
        state = reconcile(job_id)[0]
        if state not in ACTIVE or time.monotonic() >= end:
            return state
        time.sleep(poll)


def _record_cancelled(job_id: str, backend, handle: Handle) -> None:
    """After we ended a job: the agent's result says how it ended; without one, it ended because we ended it."""
    result = _read_result(handle)
    if result is not None:
        Registry().finish(job_id, state_from_result(result), result.get("exit_code"))
        return
    state, code, _ = backend.status(handle)
    Registry().finish(job_id, state if state not in (*ACTIVE, "lost") else "cancelled", code)


def down_expired(now: float | None = None, *, backend: str | None = None, options=None,
                 dry_run: bool = False) -> list[str]:
    """The sweeper: end every job that outlived its deadline, running or lost (a lost job's leftovers may still
    hold a GPU). Each lost job is reaped once. With `backend`, also ask that backend for whatever it holds past a
    deadline that this machine's registry does not know of (another laptop's job, a lost registry); `options` (its
    Options model, from its flags) says where to look."""
    now = now or time.time()
    ended = []
    if backend is not None:
        ended += get_backend(backend).sweep(now, options, dry_run=dry_run)
        if dry_run:
            return ended
    elif dry_run:
        return [r.id for r in Registry().expired(now)]
    for rec in Registry().expired(now):  # past the deadline, active or lost: the rest of the registry is not read
        swept = launcher_home() / "jobs" / rec.id / "swept"
        if rec.state == "lost" and swept.exists():
            continue
        if rec.state in ACTIVE and reconcile(rec.id)[0] not in (*ACTIVE, "lost"):
            continue  # it ended by itself just now (a lost one still has leftovers to reap)
        _, backend, handle = _handle(rec.id)
        if rec.state in ACTIVE:
            _request_cancel(handle)
        try:
            backend.cancel(handle, grace=0.0)  # the deadline already held the grace period and the push reserve
        except Exception as exc:  # noqa: BLE001 - unreachable: the marker is in the store; the next sweep asks again
            if rec.state not in ACTIVE:
                raise
            sys.stderr.write(f"[launcher] warning: {rec.id}: not ended now ({str(exc).splitlines()[0]}); the cancel "
                             "marker is in the store and the next sweep tries again\n")
            continue
        if Registry().get(rec.id).state in ACTIVE:
            _record_cancelled(rec.id, backend, handle)
        _release(rec.id, backend, handle)
        swept.parent.mkdir(parents=True, exist_ok=True)
        swept.touch()
        ended.append(rec.id)
    return ended


def job_records(limit: int | None = 50, *, state: str | list[str] | None = None,
                backend: str | None = None):
    """Registry records, newest first, with active ones refreshed from the store and their backends; `state` (one
    or several; `active` = submitting, pending or running) and `backend` filter them, `limit` None: all of them."""
    states = _states(state)
    for rec in Registry().active():
        if backend is not None and rec.backend != backend:
            continue
        try:
            reconcile(rec.id)
        except Exception as exc:  # noqa: BLE001 - one unreachable machine must not hide the others
            sys.stderr.write(f"[launcher] warning: {rec.id}: state not refreshed: {exc}\n")
    return Registry().list(limit, states=states, backend=backend)  # filtered in SQL: only what is shown is read


def _states(state: str | list[str] | tuple[str, ...] | None) -> set[str] | None:
    from .registry import ACTIVE_STATES, FINAL_STATES

    if state is None or state == [] or state == ():
        return None
    given = [state] if isinstance(state, str) else list(state)
    out: set[str] = set()
    for s in (part.strip() for g in given for part in g.split(",")):
        if s == "active":
            out.update(ACTIVE_STATES)
        elif s in ACTIVE_STATES + FINAL_STATES:
            out.add(s)
        else:
            raise UserError(f"unknown job state {s!r}; one of: active, {', '.join(ACTIVE_STATES + FINAL_STATES)}")
    return out


def jobs(limit: int | None = 50, *, state: str | list[str] | None = None,
         backend: str | None = None) -> list[JobStatus]:
    """Recent jobs, newest first (`limit` None: all), as JobStatus; `state` (e.g. "running", "failed", "active")
    and `backend` filter them. Reads only this machine's registry: no store is asked (`status(id)` does)."""
    return [_job_status(rec, deep=False) for rec in job_records(limit, state=state, backend=backend)]


def job_status(job_id: str) -> JobStatus:
    """The job now, as `launch status JOB` says it: its state (a final one it finds is recorded, as `launch status`
    does; nothing is relaunched), exit code, reason, backend, where, times, cost so far, attempt and log."""
    seen = reconcile(job_id)
    return _job_status(Registry().get(job_id), deep=True, seen=seen)


def _where(backend, handle: Handle, result: dict | None) -> str | None:
    from pydantic import BaseModel

    facts: dict[str, str] = {}
    # The backend's own facts, then (remote) the node's host name from its result.
    keys = tuple(dict.fromkeys((*backend.where_fields, *(("host",) if backend.capabilities.remote else ()))))

    def collect(model: BaseModel) -> None:
        for key in type(model).model_fields:
            value = getattr(model, key, None)
            if isinstance(value, BaseModel):
                collect(value)
            elif key in keys and value not in (None, "") and not isinstance(value, bool):
                facts.setdefault(key, str(value))

    collect(handle.data)
    if result and result.get("host") and backend.capabilities.remote:
        facts.setdefault("host", str(result["host"]))
    parts = [f"{k.replace('_', ' ')} {facts[k]}" for k in keys if k in facts]
    if not backend.capabilities.remote:
        parts.insert(0, "this machine")
    return ", ".join(parts) or None


def _log_location(handle: Handle) -> str | None:
    from .datapool.url import StoreUrl
    from .node.layout import job_report_dir

    ref = handle.data.store
    rel = f"experiments/{ref.experiment}/reports/jobs/{handle.job_id}/log.txt"
    url = StoreUrl.of(ref.store_url)
    if url is not None and url.scheme != "file":
        return f"{str(url).partition('?')[0].rstrip('/')}/{rel}"  # an sftp:// URL's query names key files
    base = Path(url.path) if url is not None else Path(ref.local_root) if ref.local_root else None
    if base is None:
        return None  # no store here (a claim only the cluster mounts): `launch logs JOB` asks the backend
    return str(job_report_dir(base / "experiments" / ref.experiment, handle.job_id) / "log.txt")


_PREEMPTED = "the machine was taken away (spot reclaim, drain or eviction); the agent pushed what it had"


def _job_status(rec, *, deep: bool, seen: tuple[str, int | None] | None = None) -> JobStatus:
    """`deep`: also read an ended job's result in the store (start and end times, host, error); else only what this
    machine keeps (the registry, reason.txt, a local job's result). `seen`: what `reconcile` just found (an
    active job's observed state: unreachable, pushing), so nothing is asked twice."""
    backend = get_backend(rec.backend)
    handle = backend.handle(rec.id, rec.handle)
    d = handle.data
    state, code = seen if seen is not None and rec.state in ACTIVE else (rec.state, rec.exit_code)
    result = (_read_result(handle) if state not in ACTIVE and (deep or not backend.capabilities.remote)
              else None)
    summary = describe(rec.id, state, code) if deep else (state if code is None else f"{state} (exit code {code})")
    why = None
    if state in ("failed", "lost", "timeout", "cancelled", "preempted", "push_failed"):
        path = launcher_home() / "jobs" / rec.id / "reason.txt"
        why = path.read_text().strip() if path.exists() else (result or {}).get("error")
        if not why and state == "preempted":  # the agent saw it coming (a SIGTERM nobody asked for) and said so
            why = _PREEMPTED + ("" if d.max_restarts else
                                "; --max-restarts N relaunches such a job, resuming from its checkpoints")
    elif state == JobState.UNREACHABLE and (since := unreachable_since(rec.id)):
        why = since[1]
    started = (result or {}).get("started_at")
    ended = (result or {}).get("ended_at") or rec.ended
    if state in ACTIVE:
        ended = None
    now = time.time()
    end = ended if ended is not None else (now if state in ACTIVE else None)
    duration = None if end is None else round(max(0.0, end - (started or rec.created)), 3)
    hourly = d.usd_per_hour
    paid_until = end if end is not None else rec.ended
    cost = None if hourly is None or paid_until is None else round(hourly * max(0.0, paid_until - rec.created) / 3600,
                                                                   4)
    return JobStatus(job_id=rec.id, name=rec.name, state=str(state), exit_code=code, reason=why,
                     backend=rec.backend, where=_where(backend, handle, result), submitted=rec.created,
                     started=started, ended=ended, deadline=rec.deadline, duration_s=duration,
                     usd_per_hour=hourly, cost_usd=cost, attempt=d.attempt, max_attempts=d.max_restarts + 1,
                     log=_log_location(handle), summary=summary)


def down_job(job_id: str, wait: bool = True) -> JobStatus:
    """`launch down JOB` for the SDK: stop the job, tear down what it holds, and return how it ended (NotConfirmed
    when the end could not be confirmed; without `wait`, the state it is in once the cancel is requested)."""
    down(job_id, wait=wait)
    return job_status(job_id)
