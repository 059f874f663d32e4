"""Defects of the local backend, each through the real `launch` CLI with real processes and signals: a reused pid
is never signalled, the script's whole tree dies with a killed agent, the sweeper reaps lost jobs once, an
unwritable datapool is refused before anything is recorded, and a detached agent's early error reaches the user.

(Job-id lookup with `%` or an empty id is covered through the CLI by tests/test_registry.py.)
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launcher.proc import start_time
from launcher.registry import Registry
from . import unprivileged as nobody
from .unprivileged import nobody_tmp  # noqa: F401 - a fixture
from .user_errors import one_error_line as _one_error_line
from .waiting import wait_for as _wait_for

NOBODY = 65534

SLOW = """
import time
print("started", flush=True)
for i in range(3000):
    time.sleep(0.1)
"""

# The grandchild (`sleep 300`) is two forks below the script, in the script's process group; PR_SET_PDEATHSIG on
# the script alone would not reach it.
GRANDCHILD = """
import os, subprocess, time
subprocess.Popen(["bash", "-c", 'sleep 300 & echo "$!" > "$GC_PID.tmp" && mv "$GC_PID.tmp" "$GC_PID"; wait'])
for i in range(3000):
    time.sleep(0.1)
"""


def _dead(pid: int) -> bool:
    # PID 1 here does not reap orphans: a zombie is as dead as it gets.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


@pytest.fixture
def home(launcher_env) -> Path:
    return Path(launcher_env["LAUNCHER_HOME"])


@pytest.fixture
def bystanders():
    """Processes of our own, each in its own session (so its pid is also its process group id); killed after."""
    procs: list[subprocess.Popen] = []

    def _start(*argv: str) -> subprocess.Popen:
        p = subprocess.Popen(list(argv or ("sleep", "60")), start_new_session=True)
        procs.append(p)
        assert _wait_for(lambda: start_time(p.pid) is not None)
        return p

    yield _start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def _lost_job(launch, project: Path, home: Path) -> str:
    """A detached job whose agent was SIGKILLed and whose script died with it: `launch status` reads lost."""
    (project / "slow.py").write_text(SLOW)
    r = launch("--detach", "--max-runtime", "1h", "slow.py")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    state = home / "jobs" / job_id
    assert _wait_for(lambda: (state / "script.pid").exists())
    script = int((state / "script.pid").read_text().split()[0])
    os.kill(int((state / "agent.pid").read_text().split()[0]), signal.SIGKILL)
    assert _wait_for(lambda: _dead(script))
    st = launch("status", job_id)
    assert st.stdout.splitlines()[0] == "lost", st.stdout + st.stderr
    return job_id


def test_down_of_a_lost_job_never_signals_a_reused_pid(launch, project, home, bystanders):
    job_id = _lost_job(launch, project, home)
    state = home / "jobs" / job_id
    other = bystanders()
    real = start_time(other.pid)
    # What the pid files would say had the kernel handed the job's old pids to `other`: the pid matches, the
    # start time (the job's process's, long gone) does not; and the bare pid of files written before start times.
    for content in (f"{other.pid} {real + 1}\n", f"{other.pid}\n"):
        for name in ("agent.pid", "script.pid", "deadman.pid"):
            (state / name).write_text(content)
        r = launch("down", job_id)
        assert r.returncode == 0 and r.stdout.strip() == f"{job_id}: lost", r.stdout + r.stderr
        time.sleep(0.2)  # a signal, had one been sent, has landed
        assert other.poll() is None and start_time(other.pid) == real, f"down killed a stranger ({content!r})"


def test_a_killed_agent_takes_the_scripts_grandchildren_with_it(launch, project, home):
    (project / "tree.py").write_text(GRANDCHILD)
    gc_file = project / "grandchild.pid"
    r = launch("--detach", "tree.py", env={"GC_PID": str(gc_file)})
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert _wait_for(lambda: gc_file.exists())
    grandchild = int(gc_file.read_text())
    gc_start = start_time(grandchild)
    try:
        assert gc_start is not None
        os.kill(int((home / "jobs" / job_id / "agent.pid").read_text().split()[0]), signal.SIGKILL)
        assert _wait_for(lambda: _dead(grandchild)), "the grandchild outlived the killed agent"
        assert launch("status", job_id).stdout.splitlines()[0] == "lost"
    finally:
        if gc_start is not None and start_time(grandchild) == gc_start:
            os.kill(grandchild, signal.SIGKILL)


def test_the_sweeper_reaps_a_lost_job_past_its_deadline_once(launch, project, home, bystanders):
    job_id = _lost_job(launch, project, home)
    Registry(home).update(job_id, deadline=time.time() - 1)
    # Stands in for what a lost job can leave behind (a worker holding a GPU): ours, by pid and start time.
    leftover = bystanders()
    (home / "jobs" / job_id / "script.pid").write_text(f"{leftover.pid} {start_time(leftover.pid)}\n")
    r = launch("down", "--expired")
    assert r.returncode == 0 and r.stdout.strip() == job_id, r.stdout + r.stderr
    assert leftover.wait(timeout=30) == -signal.SIGKILL
    r = launch("down", "--expired")
    assert r.returncode == 0 and r.stdout.strip() == "no expired jobs", r.stdout + r.stderr
    assert launch("status", job_id).stdout.splitlines()[0] == "lost"


def test_the_sweeper_reaps_a_job_that_turns_out_lost_during_the_sweep(launch, project, home, bystanders):
    # The record still says running (nobody asked since the agent died): the same sweep must reap it, not take
    # "lost" for "ended by itself" and leave its leftovers to the next sweep.
    (project / "slow.py").write_text(SLOW)
    job_id = launch("--detach", "--max-runtime", "1h", "slow.py").stdout.strip()
    state = home / "jobs" / job_id
    assert _wait_for(lambda: (state / "script.pid").exists())
    script = int((state / "script.pid").read_text().split()[0])
    os.kill(int((state / "agent.pid").read_text().split()[0]), signal.SIGKILL)
    assert _wait_for(lambda: _dead(script))
    assert Registry(home).get(job_id).state == "running"
    Registry(home).update(job_id, deadline=time.time() - 1)
    leftover = bystanders()
    (state / "script.pid").write_text(f"{leftover.pid} {start_time(leftover.pid)}\n")
    r = launch("down", "--expired")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == job_id, r.stdout
    assert leftover.wait(timeout=30) == -signal.SIGKILL


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detach"])
def test_a_datapool_through_a_regular_file_is_refused_before_any_record(launch, project, home, tmp_path, detach):
    (project / "slow.py").write_text(SLOW)
    blocker = tmp_path / "f"
    blocker.write_text("not a directory\n")
    pool = blocker / "pool"
    r = launch(*(["--detach"] if detach else []), "--datapool", f"file://{pool}", "slow.py")
    _one_error_line(r, str(pool))
    jobs = launch("jobs")
    assert jobs.returncode == 0 and "no jobs yet" in jobs.stdout, jobs.stdout
    assert not (home / "jobs").exists()
    assert blocker.read_text() == "not a directory\n"


def test_a_read_only_datapool_root_is_refused_before_any_record(nobody_tmp, launcher_env):
    # Root ignores permission bits: `launch` runs as nobody, from a copy of the launcher and its packages, in a
    # folder nobody reaches (tests/unprivileged.py), so this holds from any checkout (a root user's 0700 home too).
    if os.geteuid() != 0:
        pytest.skip("needs root to run the launcher as another user against a root-owned directory")
    project = nobody_tmp / "project"
    project.mkdir()
    (project / "slow.py").write_text(SLOW)
    home = nobody_tmp / "nobody-home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    root = nobody_tmp / "ro-pool"
    root.mkdir()
    root.chmod(0o555)
    env = {**launcher_env, "LAUNCHER_HOME": str(home), "HOME": str(home)}
    for pool in (root, root / "pool"):  # the root itself, and a root still to be made inside it
        for detach in (False, True):
            r = nobody.run(["-m", "launcher", *(["--detach"] if detach else []), "--datapool", f"file://{pool}",
                            "slow.py"], env, project)
            _one_error_line(r, str(pool), "not writable")
    assert list(root.iterdir()) == []
    assert not (home / "jobs.db").exists() and not (home / "jobs").exists()


def test_a_detached_agents_early_error_reaches_agent_log_and_status(launch, project, home, tmp_path):
    # A stray file where the experiments folder goes: the root itself is a writable directory (the submit-time
    # check passes), and the agent fails as it lays the experiment out, before any log.txt exists.
    (project / "slow.py").write_text(SLOW)
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "experiments").write_text("stray\n")
    r = launch("--detach", "--datapool", f"file://{pool}", "slow.py")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    state = home / "jobs" / job_id
    assert _wait_for(lambda: (state / "result.json").exists() and "running" not in launch("status", job_id).stdout)
    st = launch("status", job_id)
    assert st.returncode == 0 and st.stdout.splitlines()[0] == "failed (exit code 1)", st.stdout + st.stderr
    agent_log = (state / "agent.log").read_text()
    reason = [ln for ln in st.stdout.splitlines() if ln.startswith("reason:")]
    assert str(pool) in agent_log, agent_log
    assert reason and str(pool) in reason[0], st.stdout
