"""The agent: the same code on every backend, on the node, between the machine and the user's script.

    python -m launcher.agent --spec /path/to/spec.json

It lays out the experiment's datapool, pulls inputs, runs the script under the env contract with its output teed
into reports/jobs/<job_id>/log.txt, pushes checkpoints while it runs, forwards SIGTERM/SIGINT (grace period, then
SIGKILL), enforces max_runtime, pushes outputs, and writes result.json last. Its exit code is the script's.

Secrets never pass through the spec file: they arrive in the agent's environment and are inherited by the script.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from .layout import create_layout, default_checkpoint_dir, job_report_dir

CANCEL_MARKER = "cancel-requested"  # written by `launch down` so a SIGTERM reads as a cancel, not a preemption


def atomic_write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def script_command(script: Path, args: list[str]) -> list[str]:
    if script.suffix == ".py":
        # -u: unbuffered, so the log shows progress as it happens, not at exit.
        return [sys.executable, "-u", str(script), *args]
    if script.suffix == ".sh":
        return ["bash", str(script), *args]
    return [str(script), *args]


class Tee(threading.Thread):
    """Copies one pipe of the script to our own stream and to the log file, chunk by chunk (keeps \\r bars)."""

    def __init__(self, fd: int, out, log, lock: threading.Lock):
        super().__init__(daemon=True)
        self.fd, self.out, self.log, self.lock = fd, out, log, lock

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            with self.lock:
                self.log.write(chunk)
                self.log.flush()
            try:
                self.out.write(chunk)
                self.out.flush()
            except (OSError, ValueError):
                pass  # our own terminal went away (detached client); the log still has everything
        os.close(self.fd)


class Agent:
    def __init__(self, spec: dict):
        self.spec = spec
        self.job_id: str = spec["job_id"]
        self.root = Path(spec["datapool_root"]).resolve()
        self.experiment: str = spec["experiment"]
        self.exp_dir = self.root / "experiments" / self.experiment
        self.report_dir = job_report_dir(self.exp_dir, self.job_id)
        self.state_dir = Path(spec["state_dir"]) if spec.get("state_dir") else None
        self.grace = float(spec.get("grace_period", 30))
        self.max_runtime = spec.get("max_runtime")
        self.proc = None
        self.reason: str | None = None
        self.kill_at: float | None = None
        self._lock = threading.Lock()

    # -- signals -------------------------------------------------------------------------------------------------

    def _on_signal(self, signum, _frame) -> None:
        if signum == signal.SIGINT:
            self.stop("cancelled", signal.SIGINT)
            return
        cancelled = self.state_dir is not None and (self.state_dir / CANCEL_MARKER).exists()
        self.stop("preempted" if self.spec.get("spot") and not cancelled else "cancelled", signal.SIGTERM)

    def stop(self, reason: str, sig: int = signal.SIGTERM) -> None:
        """Ask the script to stop; SIGKILL after the grace period. A second request kills at once."""
        with self._lock:
            if self.reason is not None:
                self.kill_at = time.time()
                return
            self.reason = reason
            self.kill_at = time.time() + self.grace
            proc = self.proc
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, sig)

    # -- the run -------------------------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        user_env = dict(self.spec.get("env") or {})
        ckpt = user_env.pop("CHECKPOINT_DIR", None) or self.spec.get("checkpoint_dir")
        ckpt_path = (self.exp_dir / ckpt) if ckpt else default_checkpoint_dir(self.exp_dir, Path(self.spec["script"]).stem)
        env.update(user_env)
        workdir = str(Path(self.spec["workdir"]).resolve())
        env.update({
            "DATAPOOL_ROOT": str(self.root),
            "EXPERIMENT": self.experiment,
            "EXPERIMENT_DIR": str(self.exp_dir),
            "JOB_ID": self.job_id,
            "LAUNCH_BACKEND": self.spec.get("backend", "local"),
            "CHECKPOINT_DIR": str(ckpt_path.resolve()),
            "PYTHONPATH": os.pathsep.join(p for p in (workdir, env.get("PYTHONPATH")) if p),
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def run(self) -> int:
        from .datapool.node import NodeDatapool

        started = time.time()
        create_layout(self.exp_dir)
        self.report_dir.mkdir(parents=True, exist_ok=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        pool = NodeDatapool(self.spec.get("store_url"), self.root, self.experiment,
                            float(self.spec.get("push_interval", 30)))
        env = self.env()
        exit_code, error = 1, None
        with open(self.report_dir / "log.txt", "ab") as log:
            try:
                pool.pull_inputs()
            except Exception as exc:  # noqa: BLE001 - any setup failure ends the job with a record, not a hang
                error = f"datapool pull failed: {exc}"
                self.reason = self.reason or "setup_failed"
            if self.reason is None:
                exit_code = self._run_script(env, log, pool, started)
            else:
                exit_code = 130 if self.reason == "cancelled" else 1
                log.write(f"[launcher] not started: {error or self.reason}\n".encode())
                sys.stderr.write(f"[launcher] error: script not started: {error or self.reason}\n")
        try:
            pool.final_push()
        except Exception as exc:  # noqa: BLE001
            error = error or f"datapool push failed: {exc}"
            sys.stderr.write(f"[launcher] error: {error}\n")
            exit_code = exit_code or 1
        result = {
            "job_id": self.job_id,
            "exit_code": exit_code,
            "reason": self.reason or "exited",
            "started_at": started,
            "ended_at": time.time(),
            "duration_s": round(time.time() - started, 3),
            "host": socket.gethostname(),
            "backend": self.spec.get("backend", "local"),
            "script": self.spec["script"],
            "args": self.spec.get("args", []),
            "metrics": self._last_metrics(started),
        }
        if error:
            result["error"] = error
        result_path = self.report_dir / "result.json"
        atomic_write_json(result_path, result)
        try:
            pool.push_file(result_path)
        except Exception as exc:  # noqa: BLE001 - the local result stands; say why the store lacks it
            sys.stderr.write(f"[launcher] error: result.json not pushed to the store: {exc}\n")
            exit_code = exit_code or 1
        return exit_code

    def _run_script(self, env: dict, log, pool, started: float) -> int:
        import subprocess

        workdir = Path(self.spec["workdir"]).resolve()
        cmd = script_command(workdir / self.spec["script"], list(self.spec.get("args") or []))
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        lock = threading.Lock()
        try:
            # Own session: signals reach the script's whole process tree (dataloader workers, torchrun children).
            proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out_w, stderr=err_w, start_new_session=True,
                                    preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        except OSError as exc:
            os.close(out_r), os.close(err_r)
            log.write(f"[launcher] cannot start {cmd[0]}: {exc}\n".encode())
            sys.stderr.write(f"error: cannot start the script: {exc}\n")
            return 127
        finally:
            os.close(out_w), os.close(err_w)
        with self._lock:
            self.proc = proc
            pending = self.reason
        if pending:  # a signal arrived while we were starting
            _signal_group(proc.pid, signal.SIGTERM)
        if self.state_dir is not None:
            (self.state_dir / "script.pid").write_text(str(proc.pid))
        tees = [Tee(out_r, sys.stdout.buffer, log, lock), Tee(err_r, sys.stderr.buffer, log, lock)]
        for t in tees:
            t.start()
        pool.start_pushing([Path(env["CHECKPOINT_DIR"]), self.exp_dir / "reports"])
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.time()
            if self.max_runtime and self.reason is None and now - started > self.max_runtime:
                log.write(f"[launcher] max_runtime {self.max_runtime}s reached: stopping the script\n".encode())
                self.stop("timeout")
            if self.kill_at is not None and now >= self.kill_at:
                _signal_group(proc.pid, signal.SIGKILL)
        # The script is gone; anything it left in its group (orphans holding our pipes) goes too.
        _signal_group(proc.pid, signal.SIGKILL)
        for t in tees:
            t.join(timeout=10)
        rc = proc.returncode
        return 128 - rc if rc < 0 else rc

    def _last_metrics(self, started: float) -> dict:
        """The last record of each metrics.jsonl the script wrote during this run, keyed by run name."""
        out = {}
        for path in sorted((self.exp_dir / "reports").glob("*/metrics.jsonl")):
            try:
                if path.stat().st_mtime < started:
                    continue
                lines = path.read_text().strip().splitlines()
                if lines:
                    out[path.parent.name] = json.loads(lines[-1])
            except (OSError, ValueError):
                continue
        return out


def _die_with_parent() -> None:
    """In the script's child process: if the agent dies (even by SIGKILL), the kernel kills the script too."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the backend's own teardown still applies


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="job spec JSON written by the backend")
    ns = parser.parse_args(argv)
    spec = json.loads(Path(ns.spec).read_text())
    return Agent(spec).run()


if __name__ == "__main__":
    sys.exit(main())
