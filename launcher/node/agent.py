"""The agent: the same code on every backend, on the node, between the machine and the user's script.

    python -m launcher.node.agent --spec /path/to/spec.json
    python -m launcher.node.agent --spec spec.json --setup-failed STEP --stderr-file FILE   (the node bootstrap's report)

The spec is a launcher.spec.AgentSpec. The agent lays out the experiment's datapool, pulls inputs, runs the script
under the env contract with its output teed into reports/jobs/<job_id>/log.txt, pushes checkpoints while it runs,
forwards SIGTERM/SIGINT (grace period, then SIGKILL), stops the script at the spec's stop time (deadline_at less
grace and push timeout), polls the store for the cancel marker, pushes outputs, and writes result.json last. Its
exit code is the script's. If the agent itself dies (SIGKILL, OOM), a watchdog process kills the script's whole
process group, grandchildren included.

A store that does not answer costs time, not the job: the final push (outputs, then result.json) is tried again
with backoff for the spec's push_timeout after the script ended, the state dir holding a `pushing` file meanwhile.
If the store never answers, result.json (kept on the node) says `push_failed` and where the outputs are, and the
agent exits PUSH_FAILED_EXIT (74), which backends that see only the agent's exit code read as push_failed.

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

from ..fastmodels import without_plugins
from . import multinode
from .layout import NODE_LOGS, create_layout, default_checkpoint_dir, job_report_dir
from ..pipeline import onnode as pipeline_step
from ..proc import ProcRef, write_ref

with without_plugins():
    from ..spec import CANCEL_MARKER, CANCEL_POLL_S, PUSH_FAILED_EXIT, PUSHING_MARKER, AgentSpec

# Runs beside the agent in its own session: blocks on a pipe whose write end only the agent holds. EOF without the
# agent's all-clear byte means the agent died, so the script's group goes too (PR_SET_PDEATHSIG reaches only the
# script's own process, not its children), if $1 is still the process that started at $2. A shell, not Python:
# it starts in a millisecond, beside a script that is starting too (POSIX sh: dash's kill takes no `--`).
WATCHDOG = """
read -r ok
[ "$ok" = x ] && exit 0
[ "$(sed -E 's/^.*\\) //' /proc/$1/stat 2>/dev/null | cut -d' ' -f20)" = "$2" ] && kill -KILL "-$1"
"""


def platform_restarts(environ) -> tuple[int, int]:
    """A batch system that reruns the job's script itself (Slurm's --requeue, the slurm backend's batch script):
    (restarts so far, restarts allowed). The same spec runs again: its attempt is the spec's plus the restarts.
    Only where that batch script says so (LAUNCH_MAX_RESTARTS): a local job launched inside an allocation is not."""
    if "LAUNCH_MAX_RESTARTS" not in environ:
        return 0, 0
    return int(environ.get("SLURM_RESTART_COUNT") or 0), int(environ["LAUNCH_MAX_RESTARTS"] or 0)


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
    def __init__(self, spec: AgentSpec):
        self.spec = spec
        self.job_id = spec.job_id
        self.root = Path(spec.datapool_root).resolve()
        self.experiment = spec.experiment
        self.exp_dir = self.root / "experiments" / self.experiment
        self.report_dir = job_report_dir(self.exp_dir, self.job_id)
        self.state_dir = Path(spec.state_dir).resolve()
        self.grace = float(spec.grace_period)
        self.stop_at = spec.stop_at
        self.log_name = multinode.log_name(os.environ)  # log.txt; log-rank<R>.txt on other ranks
        self.restarts, self.max_restarts = platform_restarts(os.environ)
        self.attempt = spec.attempt + self.restarts
        self.proc = None
        self.relay = None  # a RelaySession while this job holds a relay run's lease
        self.reason: str | None = None
        self.kill_at: float | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    # -- signals -------------------------------------------------------------------------------------------------

    def _on_signal(self, signum, _frame) -> None:
        if signum == signal.SIGINT:
            self.stop("cancelled", signal.SIGINT)
            return
        cancelled = (self.state_dir / CANCEL_MARKER).exists()
        # down's own SIGTERM after the marker was seen is the same request, not a second one: no SIGKILL for it.
        self.stop("preempted" if self.spec.preemptible and not cancelled else "cancelled", signal.SIGTERM,
                  repeat_kills=not cancelled)

    def stop(self, reason: str, sig: int = signal.SIGTERM, *, repeat_kills: bool = True) -> None:
        """Ask the script to stop; SIGKILL after the grace period. A second request kills at once, unless it is
        one that does not repeat itself on purpose (`repeat_kills=False`: the deadline, a cancel marker seen again
        or after `down`'s own signal): the grace period is the script's."""
        with self._lock:
            if self.reason is not None:
                if repeat_kills:
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
        user_env = dict(self.spec.env)
        ckpt = user_env.pop("CHECKPOINT_DIR", None)
        ckpt_path = (self.exp_dir / ckpt) if ckpt else default_checkpoint_dir(self.exp_dir, Path(self.spec.script).stem)
        if self.relay is not None:  # the run's epoch folder, seeded with its committed checkpoint
            ckpt_path = self.relay.checkpoint_dir
            user_env.update(RELAY_RUN_ID=self.relay.run_id, RELAY_EPOCH=str(self.relay.epoch),
                            RELAY_WORKER_ID=self.relay.worker)
        env.update(user_env)
        workdir = str(Path(self.spec.workdir).resolve())
        env.update({
            "DATAPOOL_ROOT": str(self.root),
            "EXPERIMENT": self.experiment,
            "EXPERIMENT_DIR": str(self.exp_dir),
            "JOB_ID": self.job_id,
            "LAUNCH_BACKEND": self.spec.backend,
            "CHECKPOINT_DIR": str(ckpt_path.resolve()),
            "LAUNCH_ATTEMPT": str(self.attempt),
            "PYTHONPATH": os.pathsep.join(p for p in (workdir, env.get("PYTHONPATH")) if p),
            # `python` in a shell script is the agent's own interpreter (the node's venv), as if it were activated.
            "PATH": os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH")) if p),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(multinode.rank_env(env))  # NODE_RANK on a multi-node pod
        env.update(pipeline_step.step_env(env, self.exp_dir))  # a pipeline step's STEP_ENV_PATH, made absolute
        return env

    def run(self) -> int:
        started = time.time()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        exit_code, error = 1, None
        try:
            create_layout(self.exp_dir)
            self.report_dir.mkdir(parents=True, exist_ok=True)
            open(self.report_dir / self.log_name, "ab").close()
        except OSError as exc:
            # No datapool, no log: stderr (agent.log when detached) and the state dir's result say why.
            error = f"datapool {self.root} not writable: {exc}"
            sys.stderr.write(f"[launcher] error: {error}\n")
            return self._finish(None, 1, started, error, "setup_failed")
        pool = multinode.datapool_for_rank(node_datapool(self.spec, self.root), os.environ,
                                           self.report_dir / self.log_name)  # only rank 0 pushes outputs
        # The client shows the node's setup steps from the store while it waits for the first output: this one is
        # pushed when a pull follows (which can be long), else with the script's start.
        self._node_logs(pool, "pulling the datapool inputs")
        if self.spec.relay is not None:
            held = self._acquire_relay()
            if held is not True:
                code, error = held
                return self._finish(pool, code, started, error, self.reason or "exited")
        env = self.env()
        if self.restarts and multinode.is_primary(os.environ):
            self._set_aside_result()
        try:
            # A relaunch after a preemption resumes: its checkpoints and its report folder come back from the
            # store (so log.txt goes on where the last attempt left it: the log is opened after the pull).
            extra = (([Path(env["CHECKPOINT_DIR"]), self.report_dir] if self.attempt > 1 else [])
                     + pipeline_step.step_inputs(env, self.exp_dir))  # earlier steps' outputs it reads
            if extra or _store_has_inputs(pool):
                self._node_logs(pool, None, push=True, wait=False)
                pool.pull_inputs(extra)
            if self.relay is not None:
                # The committed checkpoint, and the reports of the workers before this one (metrics.jsonl goes on
                # where they left it; other jobs' folders under reports/jobs/ stay in the store).
                pointer = self.relay.pointer_path()
                pool.pull_paths([self.exp_dir / "reports", *([pointer] if pointer else [])],
                                exclude=["reports/jobs/*"])
                self.relay.seed()
        except Exception as exc:  # noqa: BLE001 - any setup failure ends the job with a record, not a hang
            error = f"datapool pull failed: {exc}"
            self.reason = self.reason or "setup_failed"
        with open(self.report_dir / self.log_name, "ab") as log:
            if self.reason is None:
                watcher = threading.Thread(target=self._watch_cancel, name="cancel-poll", daemon=True)
                watcher.start()
                # Pushed beside the script's start, not before it: the job does not wait for the store.
                self._node_logs(pool, "starting the script", push=True, wait=False)
                exit_code = self._run_script(env, log, pool)
            else:
                exit_code = 130 if self.reason == "cancelled" else 1
                log.write(f"[launcher] not started: {error or self.reason}\n".encode())
                sys.stderr.write(f"[launcher] error: script not started: {error or self.reason}\n")
        self._done.set()
        self._node_logs(pool, f"script ended ({exit_code}); pushing the outputs")  # the final push takes them
        # The script has ended: the final push (outputs, then result.json) may take push_timeout, retried with
        # backoff while the store does not answer (the deadline kept that much room after the stop time).
        push_deadline = time.time() + self.spec.push_timeout
        if hasattr(pool, "set_deadline"):
            pool.set_deadline(push_deadline)
        push_error = self._push_until(pool.final_push, push_deadline, "the outputs")
        if self.relay is not None:
            # After the final push: the last checkpoint is in the store, so it can be committed, then the run is
            # finished or released. A relay error is recorded; it never changes the script's exit code.
            relay_error = self.relay.end(exit_code, self.reason, pool.push_path)
            error = error or relay_error
        return self._finish(pool, exit_code, started, error, self.reason or "exited", push_deadline=push_deadline,
                            push_error=push_error)

    def _push_until(self, push, deadline: float, what: str) -> str | None:
        """`push()` until it works or `deadline` (time.time()) passes, with backoff (netpolicy.PUSH_BACKOFF) between
        tries: None once it worked, else the last error. While it waits the state dir holds the `pushing` marker
        (one line: why), which the ssh backend's status shows."""
        from .. import netpolicy
        from ..datapool.node import one_line

        attempt, last = 0, None
        until = time.strftime("%H:%M:%S UTC", time.gmtime(deadline))
        while True:
            try:
                push()
                if attempt:
                    self._say(f"the store answers again: {what} pushed after {attempt} failed tries")
                return None
            except Exception as exc:  # noqa: BLE001 - any failure to reach the store is tried again until the deadline
                if not (isinstance(exc, TimeoutError) and last and time.time() >= deadline):
                    last = one_line(exc)  # a request cut by the deadline says less than the error before it
            wait = netpolicy.backoff(attempt, netpolicy.PUSH_BACKOFF)
            if time.time() + wait >= deadline:
                return last
            if not attempt:
                self._say(f"warning: the store does not answer ({last}); pushing {what} is retried until {until} "
                          "(--push-timeout)")
            self._mark_pushing(f"store unreachable, retrying until {until}: {last}")
            attempt += 1
            time.sleep(wait)

    def _say(self, message: str) -> None:
        """A line for the agent's stderr and the job's log (the node's copy: `launch logs` over ssh shows it)."""
        line = f"[launcher] {message}\n"
        sys.stderr.write(line)
        try:
            with open(self.report_dir / self.log_name, "ab") as log:
                log.write(line.encode())
        except OSError:
            pass

    def _node_logs(self, pool, step: str | None, *, push: bool = False, wait: bool = True) -> None:
        """A remote node's setup.log (the bootstrap's steps, then the agent's) and agent.log (the agent's own
        output), kept in its state dir, copied into the job's report folder, so they reach the store with reports/
        and outlive the node (`launch logs JOB --setup`). `step` (if any) is added to setup.log first; `push`: now,
        not with the next push (`wait=False`: on a thread of its own, so the job does not wait for the store; the
        pool's lock orders it before the pull and the pushes). Only where a bootstrap ran (a setup.log exists), on
        rank 0; never fails the job."""
        import shutil

        setup = self.state_dir / NODE_LOGS[0]
        if not setup.is_file() or not multinode.is_primary(os.environ):
            return
        try:
            if step is not None:
                with open(setup, "a") as f:
                    f.write(f"[agent {time.strftime('%H:%M:%S', time.gmtime())}] {step}\n")
            for name in NODE_LOGS:
                if (self.state_dir / name).is_file():
                    shutil.copyfile(self.state_dir / name, self.report_dir / name)
        except Exception as exc:  # noqa: BLE001 - the job's own log and result do not depend on these copies
            sys.stderr.write(f"[launcher] warning: setup.log not copied to the store now: {exc}\n")
            return
        if push:
            if wait:
                self._push_setup_log(pool)
            else:
                threading.Thread(target=self._push_setup_log, args=(pool,), name="setup-log-push",
                                 daemon=True).start()

    def _push_setup_log(self, pool) -> None:
        try:
            pool.push_file(self.report_dir / NODE_LOGS[0])
        except Exception as exc:  # noqa: BLE001 - the job's own log and result do not depend on these copies
            sys.stderr.write(f"[launcher] warning: setup.log not copied to the store now: {exc}\n")

    def _mark_pushing(self, why: str) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_dir / f".{PUSHING_MARKER}.tmp"
            tmp.write_text(why.replace("\n", " ") + "\n")
            os.replace(tmp, self.state_dir / PUSHING_MARKER)
        except OSError:
            pass

    def _unmark_pushing(self) -> None:
        try:
            (self.state_dir / PUSHING_MARKER).unlink()
        except OSError:
            pass

    def _acquire_relay(self):
        """Holds the relay run's lease before anything else: True, or (exit code, error) when there is nothing to
        run (the run is finished: 0; a cancel or the deadline while waiting: the stop's code; a refusal: 1)."""
        from ..relay.client import RelayError
        from ..relay.worker import RelaySession

        binding = self.spec.relay
        log_path = self.report_dir / self.log_name
        # The agent talks to the commander and the Hub itself: it takes these from the job's env as the script does
        # (a relative CA file is one of the project's files, which travel with the job).
        for name in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "RELAY_CA_FILE"):
            if name in self.spec.env:
                value = self.spec.env[name]
                if name == "RELAY_CA_FILE":
                    value = str(Path(self.spec.workdir).resolve() / value)  # an absolute one stays as it is
                os.environ[name] = value

        def say(message: str) -> None:  # the job's log (what `launch logs` shows) and the agent's stderr
            line = f"[launcher] relay: {message}\n"
            sys.stderr.write(line)
            with open(log_path, "ab") as log:
                log.write(line.encode())

        session = RelaySession(binding, binding.worker_id or self.job_id, self.exp_dir, self.grace, say=say)

        def give_up() -> bool:
            if self.reason is None and self.stop_at is not None and time.time() >= self.stop_at:
                self.reason = "timeout"
            return self.reason is not None or (self.state_dir / CANCEL_MARKER).exists()

        try:
            held = session.acquire(give_up)
        except RelayError as exc:  # a wrong secret, an unknown run: waiting will not help
            say(f"error: {exc}")
            self.reason = "setup_failed"
            return 1, f"relay: {exc}"
        if not held:
            if self.reason is None and (self.state_dir / CANCEL_MARKER).exists():
                self.reason = "cancelled"
            return (0, None) if self.reason is None else (130 if self.reason == "cancelled" else 1, None)
        self.relay = session
        if self.grace > session.ttl / 3:
            # The commander's lease is shorter than the one this job was planned with: the script's grace shrinks
            # to fit it, so a cut-off worker still stops in time.
            self.grace = session.ttl / 3
            session.grace = self.grace
            say(f"grace period cut to {self.grace:g} s to fit the run's {session.ttl:g} s lease")
        return True

    def _finish(self, pool, exit_code: int, started: float, error: str | None, reason: str, *,
                push_deadline: float | None = None, push_error: str | None = None) -> int:
        """result.json, written atomically: in the report dir, pushed last (retried until `push_deadline`), and a
        copy in the state dir. `push_error`: the outputs could not be pushed by then (so result.json is not sent:
        a result in the store means complete outputs). A script that ran and whose outputs or result never reached
        the store ends `push_failed` (its exit code kept, where the outputs are in `error`) and the agent exits
        PUSH_FAILED_EXIT."""
        ended = time.time()
        result = {
            "job_id": self.job_id,
            "exit_code": exit_code,
            "reason": reason,
            "started_at": started,
            "ended_at": ended,
            "duration_s": round(ended - started, 3),
            "host": socket.gethostname(),
            "backend": self.spec.backend,
            "script": self.spec.script,
            "args": self.spec.args,
            "metrics": self._last_metrics(started),
        }
        if error:
            result["error"] = error
        name = "result.json"
        if reason == "preempted" and self.restarts < self.max_restarts:
            # The batch system reruns this job itself: this attempt's record is history, not how the job ended.
            name = f"result.attempt-{self.attempt}.json"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if pool is not None:
            result_path = self.report_dir / name
            atomic_write_json(result_path, result)
            if push_error is None:
                deadline = push_deadline if push_deadline is not None else time.time() + self.spec.push_timeout
                if hasattr(pool, "set_deadline"):
                    pool.set_deadline(deadline)
                push_error = self._push_until(lambda: pool.push_file(result_path), deadline, "result.json")
            if push_error is not None:
                if reason == "setup_failed":  # the script never ran: nothing of it to keep, the setup failure stands
                    result["error"] = f"{error or reason}; result.json not pushed to the store: {push_error}"
                    exit_code = exit_code or 1
                else:
                    if reason != "exited":
                        result["stopped_by"] = reason  # a timeout, cancel or preemption before the push failed
                    result["reason"] = "push_failed"
                    result["error"] = push_failed_message(self.spec, self.root, self.exp_dir, push_error) + (
                        f"; before that: {error}" if error else "")
                    name = "result.json"
                    result_path = self.report_dir / name
                    exit_code = PUSH_FAILED_EXIT
                sys.stderr.write(f"[launcher] error: {result['error']}\n")
                atomic_write_json(result_path, result)
        atomic_write_json(self.state_dir / name, result)
        self._unmark_pushing()
        return exit_code

    def _set_aside_result(self) -> None:
        """A rerun by the batch system: an earlier attempt's result.json (if one got there) becomes
        result.attempt-N.json, so the store answers for this attempt."""
        from ..jobstore import JobStore

        if not self.spec.store_url:
            return
        store = JobStore(self.spec.store_url, self.root, self.experiment, self.job_id, self.spec.endpoint_url)
        try:
            previous = store.read("result.json")
            if previous is not None:
                store.write(f"result.attempt-{self.attempt - 1}.json", previous)
                store.remove("result.json")
        except Exception as exc:  # noqa: BLE001 - the new attempt's result replaces it at the end anyway
            sys.stderr.write(f"[launcher] warning: earlier result not set aside: {exc}\n")
        finally:
            store.close()

    def _watch_cancel(self) -> None:
        """`launch down` from any machine leaves a marker in the store (and, on this machine, the state dir)."""
        from ..jobstore import JobStore

        store = JobStore(self.spec.store_url, self.root, self.experiment, self.job_id, self.spec.endpoint_url) \
            if self.spec.store_url else None
        while not self._done.wait(CANCEL_POLL_S if store else 1.0):
            try:
                marked = (self.state_dir / CANCEL_MARKER).exists() or (store is not None and store.exists(CANCEL_MARKER))
            except Exception:  # noqa: BLE001 - an unreachable store is asked again next round
                marked = False
            if marked:
                self.stop("cancelled", repeat_kills=False)  # the marker stays: one request, however often seen
                break
        if store is not None:
            store.close()

    def _run_script(self, env: dict, log, pool) -> int:
        import subprocess

        workdir = Path(self.spec.workdir).resolve()
        cmd = multinode.wrap(script_command(workdir / self.spec.script, list(self.spec.args)), env)
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
        ref = ProcRef.of(proc.pid)
        watchdog = self._start_watchdog(ref)
        if ref is not None:
            write_ref(self.state_dir / "script.pid", ref)
        tees = [Tee(out_r, sys.stdout.buffer, log, lock), Tee(err_r, sys.stderr.buffer, log, lock)]
        for t in tees:
            t.start()
        pool.start_pushing([Path(env["CHECKPOINT_DIR"]), self.exp_dir / "reports"])
        if self.relay is not None:
            # A new checkpoint is looked for every second (a folder listing) and committed as soon as it is pushed:
            # what a successor redoes is bounded by the checkpoint interval, not by the push interval.
            self.relay.start(lambda why: self.stop(why, repeat_kills=False), pool.push_path,
                             commit_every=min(1.0, float(self.spec.push_interval)))
        exited = _exit_waiter(proc)
        while True:
            if exited(0.2):
                break
            now = time.time()
            if self.stop_at is not None and self.reason is None and now >= self.stop_at:
                with lock:  # the tees write the same log
                    log.write(f"[launcher] max runtime reached (deadline {self.spec.deadline_at:.0f}): "
                              "stopping the script\n".encode())
                    log.flush()
                self.stop("timeout", repeat_kills=False)
            if self.kill_at is not None and now >= self.kill_at:
                _signal_group(proc.pid, signal.SIGKILL)
        # The script is gone; anything it left in its group (orphans holding our pipes) goes too.
        _signal_group(proc.pid, signal.SIGKILL)
        if watchdog is not None:
            try:
                os.write(watchdog, b"x")  # all clear: the group is already dealt with
            except OSError:
                pass  # the watchdog is gone already (Slurm's requeue or scancel SIGTERMs every process of a job)
            os.close(watchdog)
        for t in tees:
            t.join(timeout=10)
        rc = proc.returncode
        return 128 - rc if rc < 0 else rc

    def _start_watchdog(self, ref: ProcRef | None) -> int | None:
        """Returns the pipe's write end; the agent holds it until the script is gone."""
        import subprocess

        if ref is None or sys.platform != "linux":
            return None
        r, w = os.pipe()
        try:
            subprocess.Popen(["sh", "-c", WATCHDOG, "watchdog", str(ref.pid), str(ref.start)], stdin=r,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            os.close(w)
            return None
        finally:
            os.close(r)
        return w

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


def push_failed_message(spec: AgentSpec, root: Path, exp_dir: Path, last_error: str) -> str:
    """What a push_failed job tells its user: what happened, and where the outputs are on this backend."""
    from ..units import format_duration

    head = (f"the store did not answer for --push-timeout {format_duration(spec.push_timeout)} ({last_error}): the "
            "script ended (exit code kept) but its outputs are not in the store")
    exp = spec.experiment
    where = {
        "ssh": f"they are kept on the box in {exp_dir}; from your machine, `launch sync up --from-job {spec.job_id}` "
               "pulls them over SFTP and pushes them with your credentials",
        "slurm": f"they are kept in the node's datapool folder on the cluster's shared filesystem: {exp_dir}",
        "ec2": f"they were on the instance in {exp_dir}: it is kept to the job's deadline only with "
               "--keep-on-failure (copy them from there before it ends); otherwise they went with it",
        "k8s": f"they were in the pod's emptyDir ({exp_dir}) and went with the pod",
        "modal": "they went with the Modal container",
        "local": f"they are in {exp_dir} on this machine; `launch sync up --root {root} --experiment {exp} "
                 f"--datapool {spec.store_url}` pushes them",
    }.get(spec.backend, f"they are on the node in {exp_dir}")
    return f"{head}; {where}"


def _exit_waiter(proc):
    """`exited(timeout)`: True once the script has ended, waiting at most `timeout`. A pidfd wakes us the moment it
    ends; without one (not Linux 5.3+), Popen.wait polls with sleeps of up to 50 ms."""
    import select
    import subprocess

    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        fd = None

    def exited(timeout: float) -> bool:
        if fd is not None:
            select.select([fd], [], [], timeout)
            done = proc.poll() is not None
            if done:
                os.close(fd)
            return done
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    return exited


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


class _RootIsTheStore:
    """No store to sync with: the datapool root on this machine is the store (and the sync engine stays unloaded)."""

    def pull_inputs(self, resume=()) -> None: ...
    def start_pushing(self, paths) -> None: ...
    def final_push(self) -> None: ...
    def push_file(self, path) -> None: ...
    def pull_paths(self, paths, exclude=()) -> None: ...
    def push_path(self, path) -> None: ...


def _store_has_inputs(pool) -> bool:
    """Whether the pull could bring anything: the experiment's data/ or model/base/ holds an object in the store.
    A job without inputs (a fresh experiment, a script that reads none) skips the pull, which lists the whole
    experiment (every job's reports too) and walks the node's copy. Only an S3 store is asked, with the first
    page of a LIST narrowed to each folder; any other store pulls as before."""
    url = getattr(pool, "store_url", None)  # a NodeDatapool's; the other pools pull nothing from a store
    if not url or not url.startswith("s3://"):
        return True
    from ..datapool import open_store
    from .layout import PULLED

    store = open_store(url, pool.sub)  # a store that does not answer fails here as the pull would: setup_failed
    try:
        base = f"{store.prefix}/" if store.prefix else ""
        return any(next(iter(store.http.list_objects(store.bucket, base + folder)), None) is not None
                   for folder in PULLED)
    finally:
        store.close()


def node_datapool(spec: AgentSpec, root: Path):
    from ..datapool import mount_only

    if spec.store_url is None or mount_only(spec.store_url):  # the mounted claim is the store
        return _RootIsTheStore()
    if spec.store_url.startswith("modal-volume://"):  # mounted at the root on the Modal node: commits, no copies
        from ..datapool.modal_volume import MountedVolume

        return MountedVolume(spec.store_url, float(spec.push_interval))
    from ..datapool.node import NodeDatapool

    return NodeDatapool(spec.store_url, root, spec.experiment, float(spec.push_interval))


def apply_network(spec: AgentSpec) -> None:
    """The store endpoint and the node's own network (the job's `node:` section) into this process's environment:
    the store's transport and the script's boto3 / requests alike read them there."""
    if spec.endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = spec.endpoint_url
    for names, value in ((("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"), spec.https_proxy),
                         (("NO_PROXY", "no_proxy"), spec.no_proxy)):
        if value:
            os.environ.update(dict.fromkeys(names, value))
    if spec.ca_bundle:
        path = Path(spec.state_dir).resolve() / "ca-bundle.pem"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(spec.ca_bundle)
        os.environ["AWS_CA_BUNDLE"] = str(path)


def report_setup_failure(spec: AgentSpec, step: str, stderr_file: Path | None) -> int:
    """The node bootstrap failed before the agent could run: write result.json (setup_failed, the step, the last
    stderr lines) where status looks for it, the store included."""
    apply_network(spec)
    agent = Agent(spec)
    tail = ""
    if stderr_file is not None:
        try:
            tail = "\n".join(stderr_file.read_text(errors="replace").strip().splitlines()[-20:])
        except OSError:
            pass
    error = f"setup failed at step '{step}'" + (f": {tail}" if tail else "")
    pool = None
    try:
        agent.report_dir.mkdir(parents=True, exist_ok=True)
        pool = node_datapool(spec, agent.root)
    except OSError:
        pass
    if pool is not None:  # what the node did up to the failure, for `launch logs JOB --setup`
        agent._node_logs(pool, f"step {step} failed: reporting it", push=True)
    agent._finish(pool, 1, time.time(), error, "setup_failed")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.node.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the AgentSpec JSON written by the backend")
    parser.add_argument("--setup-failed", metavar="STEP", help="report a node setup failure instead of running")
    parser.add_argument("--stderr-file", type=Path, help="with --setup-failed: the failing step's stderr")
    ns = parser.parse_args(argv)
    spec = AgentSpec.from_json(Path(ns.spec).read_text())
    if ns.setup_failed:
        return report_setup_failure(spec, ns.setup_failed, ns.stderr_file)
    return run(spec)


def run(spec: AgentSpec) -> int:
    """The agent for `spec` in this process (the local backend's forked agent starts here, spec in hand)."""
    apply_network(spec)  # the store's transport and the script's boto3 alike
    return Agent(spec).run()


if __name__ == "__main__":
    code = main()
    if code == PUSH_FAILED_EXIT:
        # The result is written; a request still hanging on the silent store (a sync worker thread, which the
        # interpreter would wait for) must not hold the node past the deadline.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
