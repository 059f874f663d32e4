"""The backend contract: the same scenarios for every backend, each against its real part (conftest.Target).

run in the foreground with the script's exit code; detach + `logs -f`; `down` -> cancelled; --max-runtime ->
timeout; the client killed -> the job goes on; the sweeper ends what outlived its deadline.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from launcher.registry import Registry
from launcher.spec import CANCEL_POLL_S
from ..waiting import wait_for

PRINT_EXIT = """
import os, sys
print(f"hello from {os.environ['JOB_ID']} on {os.environ['LAUNCH_BACKEND']}", flush=True)
sys.exit(int(os.environ.get("EXIT_WITH", "0")))
"""

TICKS = """
import time
for i in range(8):
    print(f"tick {i}", flush=True)
    time.sleep(0.25)
print("done", flush=True)
"""

# A well-behaved runner: on SIGTERM it saves (SAVE_S seconds), notes the signal and exits 143.
SLOW = """
import os, signal, sys, time
from pathlib import Path
def stop(signum, frame):
    time.sleep(float(os.environ.get("SAVE_S", "0")))
    Path(os.environ["MARKER"]).write_text(signal.Signals(signum).name)
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("started", flush=True)
for i in range(1200):
    time.sleep(0.1)
"""


def state_of(target, job_id) -> str:
    return target.cli("status", job_id).stdout.split("\n")[0].split(" ")[0]


def test_foreground_run_returns_the_scripts_exit_code(target):
    (target.project / "hello.py").write_text(PRINT_EXIT)
    out = target.launch("--env", "EXIT_WITH=3", "hello.py")
    assert out.returncode == 3, out.stderr
    assert f"on {target.name}" in out.stdout
    job_id = out.stdout.split("hello from ")[1].split()[0]
    assert target.cli("status", job_id).stdout.startswith("failed (exit code 3)")


def test_detach_then_logs_follow_to_the_end(target):
    (target.project / "ticks.py").write_text(TICKS)
    out = target.launch("--detach", "ticks.py")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    follow = target.cli("logs", job_id, "-f")
    assert follow.returncode == 0, follow.stderr
    assert [f"tick {i}" for i in range(8)] + ["done"] == [
        line for line in follow.stdout.splitlines() if line.startswith(("tick", "done"))]
    assert wait_for(lambda: state_of(target, job_id) == "succeeded")
    assert "tick 7" in target.cli("logs", job_id).stdout


def test_down_cancels_a_running_job(target, tmp_path):
    (target.project / "slow.py").write_text(SLOW)
    marker = tmp_path / "signal.txt"
    # The script's save outlasts the agent's look at the cancel marker (CANCEL_POLL_S): the grace period (30 s
    # by default) is the script's, however often the marker is seen.
    job_id = target.launch("--detach", "--env", f"MARKER={marker}", "--env", f"SAVE_S={CANCEL_POLL_S + 2}",
                           "slow.py").stdout.strip()
    assert wait_for(lambda: "started" in target.cli("logs", job_id).stdout)
    down = target.cli("down", job_id)
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == f"{job_id}: cancelled"
    assert marker.read_text() == "SIGTERM"  # the handler ran to its end
    status = target.cli("status", job_id).stdout
    assert status.startswith("cancelled") and "143" in status.splitlines()[0], status


def test_max_runtime_ends_in_timeout(target, tmp_path):
    (target.project / "slow.py").write_text(SLOW)
    marker = tmp_path / "signal.txt"
    # The max runtime counts from submission, so it includes a remote node's boot: room for that here.
    out = target.launch("--max-runtime", target.short_max_runtime, "--grace-period", "5s", "--env", f"MARKER={marker}",
                        "slow.py")
    assert out.returncode == 143, out.stderr
    assert marker.read_text() == "SIGTERM"
    job_id = Registry(Path(target.env["LAUNCHER_HOME"])).list()[0].id
    assert target.cli("status", job_id).stdout.startswith("timeout")


def test_client_killed_the_job_goes_on(target):
    (target.project / "ticks.py").write_text(TICKS)
    client = target.popen("ticks.py", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = client.stdout.readline()  # the job is running once its output reaches us
    assert b"tick 0" in first
    client.kill()
    client.wait()
    job_id = Registry(Path(target.env["LAUNCHER_HOME"])).list()[0].id
    assert wait_for(lambda: state_of(target, job_id) == "succeeded")
    assert "done" in target.cli("logs", job_id).stdout


def test_sweeper_ends_jobs_past_their_deadline(target, tmp_path):
    (target.project / "slow.py").write_text(SLOW)
    marker = tmp_path / "signal.txt"
    fresh = target.launch("--detach", "--max-runtime", "1h", "--env", f"MARKER={marker}", "slow.py").stdout.strip()
    old = target.launch("--detach", "--max-runtime", "1h", "--env", f"MARKER={marker}", "slow.py").stdout.strip()
    assert wait_for(lambda: "started" in target.cli("logs", old).stdout)
    Registry(Path(target.env["LAUNCHER_HOME"])).update(old, deadline=time.time() - 1)
    swept = target.cli("down", "--expired")
    assert swept.returncode == 0 and swept.stdout.split() == [old], swept.stderr
    assert target.cli("status", old).stdout.startswith("cancelled")
    assert state_of(target, fresh) in ("pending", "running")
    assert target.cli("down", fresh).returncode == 0


def test_plan_shows_the_one_deadline(target):
    import yaml

    (target.project / "hello.py").write_text(PRINT_EXIT)
    plan = yaml.safe_load(target.launch("--dry-run", "--full", "--max-runtime", "2h", "hello.py").stdout)
    deadline = plan["deadline_at"]
    assert plan["agent_spec"]["deadline_at"] == deadline
    assert deadline - time.time() > 2 * 3600  # max runtime + grace + push reserve, from now
