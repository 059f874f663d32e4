"""Relay workers for tests: real `launch --detach --relay ...` jobs running the mock trainer, and what they left
(metrics.jsonl lines, the job's agent process to kill)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from launcher.registry import Registry

REPO = Path(__file__).resolve().parents[2]


def mock_project(project: Path) -> Path:
    """A project holding the mock trainer, as a user's would."""
    (project / "runners").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "runners" / "mock_run.py", project / "runners" / "mock_run.py")
    return project


@dataclass
class Workers:
    project: Path
    env: dict
    commander_url: str
    run: str
    flags: tuple = ()  # datapool/backend flags every worker gets
    steps: int = 40
    every: int = 5
    step_seconds: float = 0.2

    def cli(self, *args: str, flags: tuple | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=self.project, env=self.env,
                              capture_output=True, text=True, timeout=timeout, **kw)

    def launch(self, *backend_flags: str, extra: tuple = ()) -> str:
        out = self.cli("--detach", *self.flags, *backend_flags, "--relay", self.commander_url, "--run-id", self.run,
                       "--push-interval", "1s", *extra, "runners/mock_run.py", "--steps", str(self.steps),
                       "--checkpoint-every", str(self.every), "--step-seconds", str(self.step_seconds),
                       "--run-name", self.run)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()[0]

    def record(self, job_id: str):
        return Registry(Path(self.env["LAUNCHER_HOME"])).get(job_id)

    def kill9(self, job_id: str) -> None:
        """The machine is gone: the agent dies by SIGKILL (its watchdog takes the script's group with it)."""
        pid = self.record(job_id).handle["pid"]
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass

    def signal_all(self, job_id: str, sig: int) -> None:
        """Signal the agent's and the script's process groups (SIGSTOP / SIGCONT a whole worker)."""
        handle = self.record(job_id).handle
        groups = {os.getpgid(handle["pid"])}
        script_pid = Path(handle["state_dir"]) / "script.pid"
        if script_pid.exists():
            groups.add(os.getpgid(int(script_pid.read_text().split()[0])))
        for g in groups:
            os.killpg(g, sig)

    def status(self, job_id: str) -> str:
        out = self.cli("status", job_id)
        return out.stdout.split()[0] if out.stdout else out.stderr

    def log(self, job_id: str) -> str:
        return self.cli("logs", job_id).stdout


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def stop_and_lease_end(commander, metrics_path: Path, run: str) -> tuple[float, float]:
    """(when the mock trainer ran its last step, when the commander would have let the run's lease go): a worker
    cut off from the commander must have the first well before the second."""
    import sqlite3

    with sqlite3.connect(commander.state_path) as db:
        lease_until = db.execute("SELECT lease_until FROM runs WHERE run_id = ?", (run,)).fetchone()[0]
    return metrics(metrics_path)[-1]["time"], lease_until
