"""The local backend: the agent in a subprocess on this machine. CI smoke tests and laptop runs go through here."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from ..agent import CANCEL_MARKER
from ..datapool.node import INPUTS, OUTPUTS
from ..errors import UserError
from ..job import Job
from ..layout import job_report_dir
from ..plan import Plan, new_job_id
from ..registry import Registry, launcher_home
from .base import Backend, Handle, state_from_result

DEFAULT_ROOT = "datapool"


def datapool_binding(job: Job) -> tuple[Path, str | None]:
    """(root on this machine, store URL to sync with or None). A file:// store *is* the root: nothing to copy."""
    if job.datapool and urlparse(job.datapool).scheme == "file":
        return Path(urlparse(job.datapool).path), None
    root = Path(os.environ.get("DATAPOOL_ROOT") or Path(job.workdir) / DEFAULT_ROOT)
    return root.resolve(), job.datapool


def _agent_alive(pid: int, job_id: str) -> bool:
    """True if pid is still *our* agent for this job (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if b"launcher.agent" not in cmdline or job_id.encode() not in cmdline:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class LocalBackend(Backend):
    name = "local"

    def plan(self, job: Job) -> Plan:
        job.check_script()
        if job.gpu:
            # Honest about it rather than silently ignoring the request.
            note = f"gpu {job.gpu} requested: the local backend uses whatever devices this machine has"
        else:
            note = None
        root, store = datapool_binding(job)
        job_id = new_job_id(job)
        state_dir = launcher_home() / "jobs" / job_id
        exp = f"experiments/{job.experiment}"
        plan = Plan(
            backend=self.name,
            job_id=job_id,
            job=job,
            request={
                "argv": [sys.executable, "-m", "launcher.agent", "--spec", str(state_dir / "spec.json")],
                "cwd": str(Path(job.workdir).resolve()),
                "env": sorted(job.env),
                "secrets": list(job.secrets),
            },
            datapool={
                "root": str(root),
                "store": store,
                "pull": [f"{exp}/{p}" for p in INPUTS] if store else [],
                "push": [f"{exp}/{p}" for p in OUTPUTS] if store else [],
            },
            price={"usd_per_hour": 0.0, "note": "your own machine"},
        )
        if note:
            plan.notes.append(note)
        return plan

    def _spec(self, plan: Plan) -> dict:
        job = plan.job
        return {
            "job_id": plan.job_id,
            "backend": self.name,
            "script": job.script,
            "args": job.args,
            "workdir": str(Path(job.workdir).resolve()),
            "env": job.env,
            "experiment": job.experiment,
            "datapool_root": plan.datapool["root"],
            "store_url": plan.datapool["store"],
            "max_runtime": job.max_runtime,
            "grace_period": job.grace_period,
            "push_interval": job.push_interval,
            "spot": job.spot,
            "run_name": job.run_name,
            "state_dir": str(Path(plan.request["argv"][-1]).parent),
        }

    def submit(self, plan: Plan, *, detach: bool = False) -> Handle:
        job = plan.job
        missing = [s for s in job.secrets if s not in os.environ]
        if missing:
            raise UserError(f"secret {missing[0]} is not set in your environment; export {missing[0]}=... "
                            f"(the value never goes into the plan or the job record)")
        if plan.datapool["store"]:
            _probe_store(plan.datapool["store"], job.experiment)
        spec = self._spec(plan)
        state_dir = Path(spec["state_dir"])
        state_dir.mkdir(parents=True, exist_ok=True)
        spec_path = state_dir / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        exp_dir = Path(spec["datapool_root"]) / "experiments" / job.experiment
        report_dir = job_report_dir(exp_dir, plan.job_id)
        out = subprocess.DEVNULL if detach else None
        proc = subprocess.Popen(plan.request["argv"], cwd=plan.request["cwd"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True)
        handle = Handle(plan.job_id, self.name, {
            "pid": proc.pid,
            "state_dir": str(state_dir),
            "log": str(report_dir / "log.txt"),
            "result": str(report_dir / "result.json"),
            "grace_period": job.grace_period,
        })
        Registry().add(plan.job_id, job.run_name, self.name, plan.deadline, handle.data)
        self._proc = proc
        return handle

    def wait(self, handle: Handle) -> int:
        proc = getattr(self, "_proc", None)
        pid = handle.data["pid"]
        interrupts = 0
        while True:
            try:
                if proc is not None:
                    proc.wait()
                else:
                    while _agent_alive(pid, handle.job_id):
                        time.sleep(0.2)
                break
            except KeyboardInterrupt:
                # The agent has its own session, so Ctrl-C reaches it only through us: first a clean cancel,
                # a second Ctrl-C kills.
                interrupts += 1
                if interrupts == 1:
                    sys.stderr.write("\n[launcher] cancelling (Ctrl-C again to kill)\n")
                    _touch(Path(handle.data["state_dir"]) / CANCEL_MARKER)
                    _kill(pid, signal.SIGINT)
                else:
                    self._kill_all(handle)
        state, code = self.status(handle)
        Registry().finish(handle.job_id, state, code)
        return code if code is not None else 1

    def status(self, handle: Handle) -> tuple[str, int | None]:
        result = Path(handle.data["result"])
        if result.exists():
            data = json.loads(result.read_text())
            return state_from_result(data), data.get("exit_code")
        if _agent_alive(handle.data["pid"], handle.job_id):
            return "running", None
        return "lost", None

    def logs(self, handle: Handle, follow: bool = False) -> Iterator[bytes]:
        log = Path(handle.data["log"])
        deadline = time.time() + 30
        while follow and not log.exists() and time.time() < deadline and self.status(handle)[0] == "running":
            time.sleep(0.2)
        if not log.exists():
            return
        with open(log, "rb") as f:
            while True:
                chunk = f.read(65536)
                if chunk:
                    yield chunk
                    continue
                if not follow or self.status(handle)[0] != "running":
                    rest = f.read()
                    if rest:
                        yield rest
                    return
                time.sleep(0.2)

    def cancel(self, handle: Handle) -> None:
        pid = handle.data["pid"]
        if _agent_alive(pid, handle.job_id):
            _touch(Path(handle.data["state_dir"]) / CANCEL_MARKER)
            _kill(pid, signal.SIGTERM)
            deadline = time.time() + float(handle.data.get("grace_period", 30)) + 10
            while _agent_alive(pid, handle.job_id) and time.time() < deadline:
                time.sleep(0.1)
        self._kill_all(handle)
        state, code = self.status(handle)
        if state == "lost":
            state = "cancelled"
        Registry().finish(handle.job_id, state, code)

    def _kill_all(self, handle: Handle) -> None:
        """Last resort: kill the agent's and the script's process groups, whatever state they are in."""
        if _agent_alive(handle.data["pid"], handle.job_id):
            _killpg(handle.data["pid"], signal.SIGKILL)
        script_pid = Path(handle.data["state_dir"]) / "script.pid"
        # After a clean end the script's pid may belong to someone else by now: only kill an unfinished job's.
        if script_pid.exists() and not Path(handle.data["result"]).exists():
            _killpg(int(script_pid.read_text()), signal.SIGKILL)


def _probe_store(url: str, experiment: str) -> None:
    """A missing bucket or missing credentials is the user's to fix: say so now, before any record or process."""
    from ..datapool import open_store

    store = open_store(url, f"experiments/{experiment}", readonly=True)
    try:
        store.probe()
    finally:
        store.close()


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
