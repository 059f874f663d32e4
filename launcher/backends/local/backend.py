"""The local backend: the agent in a subprocess on this machine. CI smoke tests and laptop runs go through here."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from ...node import nodectl
from ...errors import UserError
from ...job import Job
from ...plan import Plan
from ...proc import ProcRef, write_ref
from ...registry import launcher_home
from ..base import Backend, Capabilities, Handle, HandleData, JobState, NodePaths, Observation, observed


class LocalHandle(HandleData):
    # The agent's state dir on this machine (pid files, spec, result); None in a record whose start never ran.
    state_dir: str | None = None
    pid: int | None = None  # the agent's process


class LocalBackend(Backend):
    name = "local"
    handle_type = LocalHandle
    where_fields = ("pid",)
    capabilities = Capabilities(remote=False, gpus=None, spot=False, max_nodes=1,
                                datapool_schemes=("file", "s3"), resources_enforced=False)

    def node_paths(self, job: Job, job_id: str, snapshot_sha: str | None) -> NodePaths:
        from ...planner import local_binding

        return NodePaths(workdir=str(Path(job.workdir).resolve()), datapool_root=local_binding(job)[0],
                         state_dir=str(launcher_home() / "jobs" / job_id))

    def render(self, plan: Plan) -> dict:
        return {
            "argv": [sys.executable, "-m", "launcher.node.agent", "--spec", f"{plan.spec.state_dir}/spec.json"],
            "cwd": plan.spec.workdir,
            "env": sorted(plan.job.env),
            "secrets": list(plan.job.secrets),
        }

    def price(self, job: Job) -> dict:
        return {"usd_per_hour": 0.0, "note": "your own machine"}

    def access_checks(self, options=None) -> list:
        from .access import checks

        return checks(options)

    def where(self, plan: Plan, *, online: bool = False) -> list[tuple[str, str]]:
        gpu = f"; --gpu {plan.job.gpu} asked, not checked" if plan.job.gpu else ""
        return [("where", "this machine, the agent in a subprocess"), ("machine", f"what it has{gpu}"),
                ("workdir", plan.spec.workdir)]

    def preflight(self, plan: Plan) -> None:
        _check_writable(Path(plan.spec.datapool_root), "datapool root")

    def start(self, plan: Plan, *, detach: bool) -> dict:
        state_dir = Path(plan.spec.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "spec.json").write_text(plan.spec.to_json())
        # Detached, the agent's own output (its errors before the log exists) goes to agent.log, not nowhere.
        log = state_dir / nodectl.AGENT_LOG if detach else None
        if threading.active_count() == 1 and hasattr(os, "fork"):
            pid = _fork_agent(plan.spec, plan.request["cwd"], log)
        else:  # a threaded host (a notebook using the Python API) must not fork: a fresh interpreter it is
            out = open(log, "ab") if log else None
            try:
                pid = subprocess.Popen(plan.request["argv"], cwd=plan.request["cwd"], stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=out, start_new_session=True).pid
            finally:
                if out is not None:
                    out.close()
        ref = ProcRef.of(pid)
        if ref is not None:
            write_ref(state_dir / nodectl.AGENT_PID, ref)
        self._pid = pid
        return {"pid": pid, "state_dir": str(state_dir)}

    def wait(self, handle: Handle, final_state, output) -> None:
        # The agent shares our terminal: its output is already on screen; just wait for it.
        pid = getattr(self, "_pid", None)
        if pid is not None:
            _wait_child(pid)
        else:
            while nodectl.agent_alive(Path(handle.data.state_dir)):
                time.sleep(0.2)

    def interrupt(self, handle: Handle) -> None:
        # The agent has its own session, so the terminal's Ctrl-C reaches it only through us.
        state_dir = Path(handle.data.state_dir)
        nodectl.request_cancel(state_dir)
        ref = nodectl.agent_ref(state_dir)
        if ref is not None:
            ref.signal(signal.SIGINT)

    def status(self, handle: Handle) -> Observation:
        if handle.data.state_dir is None:
            return Observation(JobState.LOST, None, "the job's record names no state dir: it never started here")
        st = nodectl.status(Path(handle.data.state_dir))
        if st["result"] is not None:
            return observed(st["result"])
        if st["alive"]:
            return Observation(JobState.RUNNING)
        return Observation(JobState.LOST, None, st["agent_log"] or "the agent ended without a result (killed?)")

    def logs(self, handle: Handle, follow: bool = False, offset: int = 0) -> Iterator[bytes] | None:
        return None  # the store's copy *is* the local file (joblog.tail_store_log reads it)

    def cancel(self, handle: Handle, grace: float | None = None) -> None:
        # The node runs the same policy itself (launcher/node/nodectl.py: marker, SIGTERM, grace, SIGKILL, confirm), in
        # one call: for ssh one connection instead of one per look.
        grace = handle.data.grace_period if grace is None else grace
        if handle.data.state_dir is not None:  # else nothing of it ever ran here
            nodectl.cancel(Path(handle.data.state_dir), grace)


def _wait_child(pid: int) -> None:
    """Until the forked agent exits, waking at least twice a second: a Ctrl-C the kernel hands to another thread of
    ours would never interrupt a blocking waitpid, and Python runs its handler only when the main thread wakes."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (old kernel): poll
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            time.sleep(0.1)
        return
    try:
        while not select.select([fd], [], [], 0.5)[0]:
            pass
        os.waitpid(pid, 0)
    finally:
        os.close(fd)


def _fork_agent(spec, cwd: str, log: Path | None) -> int:
    """The agent as a fork of this process: the same code as `python -m launcher.node.agent --spec`, without a second
    interpreter start and a second import of pydantic (about a third of a second of every local launch). The child
    gets its own session, like the spawned agent, so it outlives us and the terminal's Ctrl-C reaches it only
    through us."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()
        os.chdir(cwd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        if log is not None:
            out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(out, 1)
            os.dup2(out, 2)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from ...node.agent import run

        code = run(spec)  # the spec in hand: the same one written to spec.json, no need to read it back
    except BaseException:  # noqa: BLE001 - whatever happens, the child never returns into the client's code
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _check_writable(path: Path, what: str) -> None:
    """The datapool must be writable before the job is recorded: a detached job would otherwise die unseen."""
    from ...datapool.local import FILE_IN_THE_WAY, blocked_at

    blocked = (path, FILE_IN_THE_WAY) if path.exists() and not path.is_dir() else blocked_at(path)
    if blocked is None:
        return
    spot, why = blocked
    if why == FILE_IN_THE_WAY:
        raise UserError(f"{what} {path}: {spot} is a file, not a directory; pick another --datapool / DATAPOOL_ROOT")
    raise UserError(f"{what} {path} is not writable ({spot} is read-only); pick another --datapool / "
                    "DATAPOOL_ROOT or fix its permissions")
