"""The local backend end to end: the real `launch` CLI, the real agent, real processes and signals."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from launcher.layout import LAYOUT_DIRS
from .waiting import wait_for as _wait_for

PRINT_ENV = """
import json, os, sys
keys = ["DATAPOOL_ROOT", "EXPERIMENT", "EXPERIMENT_DIR", "JOB_ID", "LAUNCH_BACKEND", "CHECKPOINT_DIR", "MY_VAR"]
print(json.dumps({"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in keys}, "cwd": os.getcwd()}))
print("a line on stderr", file=sys.stderr)
sys.exit(int(os.environ.get("EXIT_WITH", "0")))
"""

# Writes a marker when SIGTERM/SIGINT arrives, then exits like a well-behaved runner (save for SAVE_S, exit 143).
SLOW = """
import os, signal, sys, time
from pathlib import Path
def stop(signum, frame):
    time.sleep(float(os.environ.get("SAVE_S", "0")))
    Path(os.environ["MARKER"]).write_text(signal.Signals(signum).name)
    sys.exit(143 if signum == signal.SIGTERM else 130)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
print("started", flush=True)
for i in range(600):
    print(f"tick {i}", flush=True)
    time.sleep(0.1)
"""

STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(600)
"""


def _job_dir(project, experiment="default"):
    jobs = project / "datapool" / "experiments" / experiment / "reports" / "jobs"
    (job,) = list(jobs.iterdir())
    return job


def test_runs_script_with_args_untouched_and_env_contract(launch, project):
    (project / "show.py").write_text(PRINT_ENV)
    out = launch("--experiment", "exp1", "--env", "MY_VAR=hello world", "show.py",
                 "--config", "a.yaml", "--help", "-x", "--backend", "modal")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[0])
    assert record["argv"] == ["--config", "a.yaml", "--help", "-x", "--backend", "modal"]
    env = record["env"]
    exp_dir = project / "datapool" / "experiments" / "exp1"
    assert env["DATAPOOL_ROOT"] == str(project / "datapool")
    assert env["EXPERIMENT"] == "exp1" and env["EXPERIMENT_DIR"] == str(exp_dir)
    assert env["LAUNCH_BACKEND"] == "local" and env["MY_VAR"] == "hello world"
    assert env["JOB_ID"].startswith("show-")
    assert env["CHECKPOINT_DIR"] == str(exp_dir / "model" / "show_checkpoints")
    assert record["cwd"] == str(project)
    for rel in LAYOUT_DIRS:
        assert (exp_dir / rel).is_dir(), rel
    job_dir = _job_dir(project, "exp1")
    assert job_dir.name == env["JOB_ID"]
    log = (job_dir / "log.txt").read_text()
    assert "a line on stderr" in log and '"argv"' in log
    assert "a line on stderr" in out.stderr  # teed to the terminal too
    result = json.loads((job_dir / "result.json").read_text())
    assert result["exit_code"] == 0 and result["reason"] == "exited" and result["job_id"] == env["JOB_ID"]
    assert result["ended_at"] >= result["started_at"] and result["host"]


def test_exit_code_propagates_and_registry_records_it(launch, project):
    (project / "show.py").write_text(PRINT_ENV)
    out = launch("--env", "EXIT_WITH=7", "show.py")
    assert out.returncode == 7
    jobs = launch("jobs")
    assert jobs.returncode == 0 and "failed" in jobs.stdout and "show-" in jobs.stdout
    job_id = _job_dir(project).name
    st = launch("status", job_id)
    assert st.stdout.splitlines()[0] == "failed (exit code 7)"


def test_datapool_file_url_is_the_root(launch, project, tmp_path):
    (project / "show.py").write_text(PRINT_ENV)
    pool = tmp_path / "pool"
    out = launch("--datapool", f"file://{pool}", "show.py")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["env"]["DATAPOOL_ROOT"] == str(pool)
    assert (pool / "experiments" / "default" / "reports" / "jobs").is_dir()
    assert not (project / "datapool").exists()


def test_datapool_from_env(launch, project, tmp_path):
    (project / "show.py").write_text(PRINT_ENV)
    pool = tmp_path / "envpool"
    out = launch("show.py", env={"LAUNCH_DATAPOOL": f"file://{pool}"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["env"]["DATAPOOL_ROOT"] == str(pool)


def test_dry_run_prints_plan_and_touches_nothing(launch, project, launcher_env):
    (project / "show.py").write_text(PRINT_ENV)
    out = launch("--dry-run", "--full", "--gpu", "A100", "--max-runtime", "2h", "--env", "A=1", "--secret", "MY_TOKEN",
                 "show.py", "--lr", "1e-3", env={"MY_TOKEN": "dry-run-secret-value"})
    assert out.returncode == 0, out.stderr
    plan = yaml.safe_load(out.stdout)
    assert plan["backend"] == "local" and plan["job_id"].startswith("show-")
    assert plan["job"]["gpu"] == "A100-40GB:1" and plan["job"]["args"] == ["--lr", "1e-3"]
    assert plan["job"]["max_runtime"] == 7200 and plan["deadline"]
    assert plan["request"]["argv"][1:3] == ["-m", "launcher.node.agent"]
    assert plan["request"]["secrets"] == ["MY_TOKEN"]
    assert "dry-run-secret-value" not in out.stdout + out.stderr  # secret names only, never values
    assert not Path(launcher_env["LAUNCHER_HOME"]).exists()
    assert not (project / "datapool").exists()


def test_secret_reaches_script_but_not_spec_plan_or_argv(launch, project, launcher_env):
    (project / "sec.py").write_text(
        "import os, pathlib\n"
        "print('len', len(os.environ['MY_TOKEN']))\n"
        "pathlib.Path('cmdlines.txt').write_bytes(b'\\n'.join(\n"
        "    pathlib.Path(f'/proc/{p}/cmdline').read_bytes() for p in (os.getpid(), os.getppid())))\n")
    secret = "s3cr3t-value-123456"
    out = launch("--secret", "MY_TOKEN", "sec.py", env={"MY_TOKEN": secret})
    assert out.returncode == 0, out.stderr
    assert "len 19" in out.stdout
    home = Path(launcher_env["LAUNCHER_HOME"])
    for f in [*home.rglob("*"), *(project / "datapool").rglob("*")]:
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    assert secret.encode() not in (project / "cmdlines.txt").read_bytes()


def test_detach_logs_follow_and_down(launch, project, launcher_env):
    (project / "slow.py").write_text(SLOW)
    marker = project / "signal.txt"
    out = launch("--detach", "--grace-period", "10", "slow.py", env={"MARKER": str(marker)})
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    assert launch("status", job_id).stdout.splitlines()[0] == "running"
    follower = subprocess.Popen([sys.executable, "-m", "launcher", "logs", job_id, "-f"], cwd=project,
                                env=launcher_env, stdout=subprocess.PIPE, text=True)
    assert _wait_for(lambda: (_job_dir(project) / "log.txt").exists()
                     and "tick 3" in (_job_dir(project) / "log.txt").read_text())
    down = launch("down", job_id)
    assert down.returncode == 0 and down.stdout.strip() == f"{job_id}: cancelled", down.stdout + down.stderr
    assert marker.read_text() == "SIGTERM"
    followed, _ = follower.communicate(timeout=30)  # -f ends by itself when the job ends
    assert "started" in followed and "tick 3" in followed
    result = json.loads((_job_dir(project) / "result.json").read_text())
    assert result["reason"] == "cancelled" and result["exit_code"] == 143
    assert launch("status", job_id).stdout.splitlines()[0] == "cancelled (exit code 143)"


def test_stubborn_script_is_killed_after_grace(launch, project):
    (project / "stubborn.py").write_text(STUBBORN)
    job_id = launch("--detach", "--grace-period", "1", "stubborn.py").stdout.strip()
    assert _wait_for(lambda: "ignoring" in launch("logs", job_id).stdout)
    assert launch("down", job_id).returncode == 0
    result = json.loads((_job_dir(project) / "result.json").read_text())
    assert result["reason"] == "cancelled" and result["exit_code"] == 128 + signal.SIGKILL


def test_max_runtime_stops_the_script(launch, project):
    (project / "slow.py").write_text(SLOW)
    marker = project / "signal.txt"
    out = launch("--max-runtime", "2", "--grace-period", "5", "slow.py", env={"MARKER": str(marker)})
    assert out.returncode == 143
    assert marker.read_text() == "SIGTERM"
    result = json.loads((_job_dir(project) / "result.json").read_text())
    # The max runtime counts from submission (one deadline for every backend), so the script ran a bit under 2 s.
    assert result["reason"] == "timeout" and 1 <= result["duration_s"] < 60
    assert "timeout" in launch("jobs").stdout


def test_ctrl_c_in_foreground_cancels_cleanly(project, launcher_env):
    (project / "slow.py").write_text(SLOW)
    marker = project / "signal.txt"
    # A terminal's foreground process has SIGINT at its default; the suite's may not: a non-interactive shell starts
    # a `cmd &` with SIGINT ignored, an ignored SIGINT is inherited, and Python then never raises KeyboardInterrupt.
    # Give the client what a terminal gives it.
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "slow.py"], cwd=project,
                            env={**launcher_env, "MARKER": str(marker), "SAVE_S": "2.5"},  # > the marker poll
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: (project / "datapool").exists() and any(
        "tick 2" in p.read_text() for p in (project / "datapool").rglob("log.txt")))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err  # the script's own exit after its save, not a SIGKILL's 137
    assert marker.read_text() == "SIGINT"
    assert json.loads((_job_dir(project) / "result.json").read_text())["reason"] == "cancelled"
    assert "cancelled" in err


def test_watch_follows_a_job_to_its_end_and_exits_with_its_outcome(launch, project):
    (project / "ok.py").write_text("import time; time.sleep(2)\n")
    (project / "bad.py").write_text("raise SystemExit(3)\n")
    ok = launch("--detach", "ok.py").stdout.strip()
    out = launch("watch", ok, "--every", "1s")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].endswith(f"{ok} succeeded"), out.stdout
    bad = launch("--detach", "bad.py").stdout.strip()
    out = launch("watch", bad, "--every", "1s")
    assert out.returncode == 1 and out.stdout.splitlines()[-1].endswith(f"{bad} failed"), out.stdout
    out = launch("watch", "no-such-job")
    assert out.returncode == 2 and out.stderr.startswith("error: unknown job 'no-such-job'"), out.stderr
    out = launch("watch", ok, "--every", "soon")
    assert out.returncode == 2 and out.stderr.startswith("error: bad --every 'soon'"), out.stderr


def test_down_expired_sweeps_jobs_past_their_deadline(launch, project, launcher_env):
    from launcher.registry import Registry

    (project / "slow.py").write_text(SLOW)
    marker = project / "signal.txt"
    fresh = launch("--detach", "--max-runtime", "1h", "slow.py", env={"MARKER": str(marker)}).stdout.strip()
    old = launch("--detach", "--max-runtime", "1h", "slow.py", env={"MARKER": str(marker)}).stdout.strip()
    reg = Registry(Path(launcher_env["LAUNCHER_HOME"]))
    reg.update(old, deadline=time.time() - 1)  # as if it had outlived its deadline
    out = launch("down", "--expired")
    assert out.returncode == 0 and out.stdout.strip() == old
    assert launch("status", old).stdout.startswith("cancelled")
    assert launch("status", fresh).stdout.splitlines()[0] == "running"
    assert launch("down", fresh).returncode == 0


def test_concurrent_launches_keep_the_registry_whole(project, launcher_env):
    (project / "show.py").write_text(PRINT_ENV)
    procs = [subprocess.Popen([sys.executable, "-m", "launcher", "show.py"], cwd=project, env=launcher_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    from launcher.registry import Registry

    records = Registry(Path(launcher_env["LAUNCHER_HOME"])).list()
    assert len(records) == 6 and len({r.id for r in records}) == 6
    assert {r.state for r in records} == {"succeeded"}


def test_profile_with_flag_override(launch, project):
    (project / "show.py").write_text(PRINT_ENV)
    (project / "local.yaml").write_text("experiment: from-profile\nenv: {MY_VAR: profile}\nmax_runtime: 1h\n")
    out = launch("--profile", "local.yaml", "--env", "MY_VAR=flag", "show.py")
    assert out.returncode == 0, out.stderr
    env = json.loads(out.stdout.splitlines()[0])["env"]
    assert env["EXPERIMENT"] == "from-profile" and env["MY_VAR"] == "flag"


def test_python_api(project, launcher_env, monkeypatch):
    monkeypatch.setenv("LAUNCHER_HOME", launcher_env["LAUNCHER_HOME"])
    monkeypatch.delenv("DATAPOOL_ROOT", raising=False)
    (project / "show.py").write_text(PRINT_ENV)
    from launcher import Job, dry_run, launch

    job = Job(script="show.py", args=["--x", "1"], workdir=str(project), env={"EXIT_WITH": "4"})
    p = dry_run(job)
    assert p.job_id.startswith("show-") and p.datapool["root"] == str(project / "datapool")
    run = launch(job)
    assert run.exit_code == 4 and run.state == "failed"


def test_script_dies_with_a_killed_agent_and_job_reads_lost(launch, project, launcher_env):
    from launcher.registry import Registry

    (project / "slow.py").write_text(SLOW)
    job_id = launch("--detach", "slow.py", env={"MARKER": str(project / "m")}).stdout.strip()
    home = Path(launcher_env["LAUNCHER_HOME"])
    assert _wait_for(lambda: (home / "jobs" / job_id / "script.pid").exists())
    script_pid = int((home / "jobs" / job_id / "script.pid").read_text().split()[0])
    agent_pid = Registry(home).get(job_id).handle["pid"]
    os.kill(agent_pid, signal.SIGKILL)
    assert _wait_for(lambda: not Path(f"/proc/{script_pid}").exists()
                     or "Z" == Path(f"/proc/{script_pid}/stat").read_text().rsplit(")", 1)[1].split()[0])
    assert launch("status", job_id).stdout.splitlines()[0] == "lost"
