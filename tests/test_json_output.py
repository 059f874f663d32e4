"""Machine-readable output and the everyday job commands (issue 24, items 3 and 4): `--json` / `-o json` on `jobs`,
`status`, `pipeline status`, `relay status` and `launch --detach`, every one parsed; a piped `jobs` table with no
rule and at most 80 columns; `status`'s first line as scripts parse it, then the new lines; `jobs --all/--state/
--backend`, `logs --tail N`, `down A B`, `down --all --state running -y` (and its refusal without a terminal)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .pipeline.conftest import script_config, write_project
from .relay.conftest import commander, relay_env, relay_secret  # noqa: F401 - fixtures used below

LONG_NAME = "a-run-name-as-long-as-the-id-allows-xyzw"  # 40 characters: the longest stem a job id keeps
RULES = set("─━│┃┌┐└┘├┤┬┴┼═║╭╮╯╰")

SCRIPT = """\
import sys, time
print("one"); print("two"); print("three", flush=True)
if len(sys.argv) > 1 and sys.argv[1] == "sleep":
    time.sleep(120)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "sleep" else 0)
"""


@pytest.fixture
def two_jobs(launch, project):
    """A succeeded job with the longest name and a failed one (exit 3): [succeeded id, failed id]."""
    (project / "ok.py").write_text(SCRIPT)
    done = launch("--name", LONG_NAME, "--detach", "--json", "ok.py", "0")
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)["job_id"]
    assert launch("ok.py", "3").returncode == 3
    ids = [j["job_id"] for j in json.loads(launch("jobs", "--json").stdout)]
    failed = next(i for i in ids if i != first)
    _wait(lambda: json.loads(launch("status", first, "--json").stdout)["state"] == "succeeded")
    return [first, failed]


def _wait(cond, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def test_detach_json_gives_the_job_id(launch, project):
    (project / "ok.py").write_text(SCRIPT)
    for flags in (["--json"], ["-o", "json"]):
        out = launch("--detach", *flags, "ok.py")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["job_id"].startswith("ok-") and data["backend"] == "local"
        assert f"started {data['job_id']}" in out.stderr  # the line for people stays on stderr


def test_jobs_json_parses_with_every_field(launch, two_jobs):
    for flags in (["--json"], ["-o", "json"]):
        out = launch("jobs", *flags)
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert [r["job_id"] for r in rows] == [two_jobs[1], two_jobs[0]]  # newest first
        failed, done = rows
        assert (done["state"], done["exit_code"], done["name"]) == ("succeeded", 0, LONG_NAME)
        assert (failed["state"], failed["exit_code"], failed["active"]) == ("failed", 3, False)
        for r in rows:
            assert r["backend"] == "local" and r["cost_usd"] == 0.0 and r["usd_per_hour"] == 0.0
            assert r["submitted"].endswith("+00:00") and r["ended"] and r["log"].endswith("/log.txt")
            assert r["summary"] == f"{r['state']} (exit code {r['exit_code']})"


def test_jobs_piped_has_no_rule_and_fits_80_columns(launch, two_jobs, launcher_env):
    launcher_env.pop("COLUMNS", None)
    out = launch("jobs")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, out.stdout
    assert not RULES & set(out.stdout), out.stdout
    assert "\x1b[" not in out.stdout  # no colour either
    assert lines[0].split()[:2] == ["ID", "STATE"]  # the widest layout that fits the 47-character id
    for job_id in two_jobs:
        assert any(job_id in line for line in lines)
    wide = launch("jobs", env={"COLUMNS": "200"}).stdout.splitlines()  # COLUMNS still says how wide
    assert wide[0].split() == ["ID", "NAME", "BACKEND", "STATE", "EXIT", "CREATED", "DURATION", "DEADLINE"]


def test_jobs_filters_state_backend_and_all(launch, two_jobs, project):
    def ids(*args):
        out = launch("jobs", "--json", *args)
        assert out.returncode == 0, out.stderr
        return [r["job_id"] for r in json.loads(out.stdout)]

    done, failed = two_jobs
    assert ids("--state", "failed") == [failed]
    assert ids("--state", "succeeded,failed") == [failed, done]
    assert ids("--state", "succeeded", "--state", "failed") == [failed, done]
    assert ids("--backend", "local") == [failed, done]
    assert ids("--backend", "ssh") == []
    assert ids("--limit", "1") == [failed]
    assert ids("--limit", "1", "--all") == [failed, done]
    assert "no jobs match" in launch("jobs", "--state", "running").stdout
    bad = launch("jobs", "--state", "runing")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown job state 'runing'" in bad.stderr


def test_status_keeps_its_first_line_and_adds_the_rest(launch, two_jobs):
    done, failed = two_jobs
    out = launch("status", failed)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "failed (exit code 3)"
    text = "\n".join(lines[1:])
    assert "backend: local (this machine, pid " in text
    assert "submitted 20" in text and "started 20" in text and "ended 20" in text
    assert "duration: " in text and "cost so far: $0.00 ($0.00/h)" in text
    assert f"log: {Path(json.loads(launch('status', failed, '--json').stdout)['log'])}" in text
    assert f"reports/jobs/{failed}/log.txt" in text
    assert launch("status", done).stdout.splitlines()[0] == "succeeded (exit code 0)"

    data = json.loads(launch("status", failed, "-o", "json").stdout)
    assert (data["job_id"], data["state"], data["exit_code"], data["backend"]) == (failed, "failed", 3, "local")
    assert data["started"] and data["ended"] and data["duration_s"] >= 0 and data["cost_usd"] == 0.0
    assert data["attempt"] == 1 and data["max_attempts"] == 1 and data["where"].startswith("this machine")


def test_status_of_a_cancelled_job_says_why_and_a_running_one_says_so_far(launch, project):
    (project / "ok.py").write_text(SCRIPT)
    job_id = json.loads(launch("--detach", "--json", "ok.py", "sleep").stdout)["job_id"]
    _wait(lambda: launch("status", job_id).stdout.startswith("running"))
    _wait(lambda: "three" in launch("logs", job_id).stdout)
    running = launch("status", job_id).stdout.splitlines()
    assert running[0] == "running" and any(line.startswith("duration: ") for line in running)
    assert json.loads(launch("status", job_id, "--json").stdout)["active"] is True
    assert launch("down", job_id).returncode == 0
    out = launch("status", job_id).stdout.splitlines()
    assert out[0].startswith("cancelled"), out


def test_logs_tail(launch, two_jobs):
    done = two_jobs[0]
    assert launch("logs", done).stdout.splitlines() == ["one", "two", "three"]
    assert launch("logs", done, "--tail", "2").stdout.splitlines() == ["two", "three"]
    assert launch("logs", done, "-n", "1").stdout == "three\n"
    assert launch("logs", done, "--tail", "0").stdout == ""
    assert launch("logs", done, "--tail", "2", "-f").stdout.splitlines() == ["two", "three"]  # it has ended


def _sleepers(launch, project, n: int) -> list[str]:
    (project / "ok.py").write_text(SCRIPT)
    ids = [json.loads(launch("--detach", "--json", "ok.py", "sleep").stdout)["job_id"] for _ in range(n)]
    for job_id in ids:
        _wait(lambda: launch("status", job_id).stdout.startswith("running"))
    return ids


def test_down_takes_several_ids(launch, project):
    a, b, c = _sleepers(launch, project, 3)
    unknown = launch("down", a, "no-such-job")
    assert unknown.returncode == 2 and "unknown job 'no-such-job'" in unknown.stderr
    assert launch("status", a).stdout.startswith("running")  # nothing was ended
    out = launch("down", a, b)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{a}: cancelled", f"{b}: cancelled"]
    assert launch("status", c).stdout.startswith("running")
    assert launch("down", c).returncode == 0


def test_down_all_asks_unless_yes_and_refuses_without_a_terminal(launch, project):
    a, b = _sleepers(launch, project, 2)
    (project / "quick.py").write_text("print('done')\n")
    assert launch("quick.py").returncode == 0  # a finished job: --all never touches it

    refused = launch("down", "--all", "--state", "running")  # no -y, and stdin/stdout are no terminal
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "-y" in lines[0] and "2 job(s)" in lines[0]
    states = {r["job_id"]: r["state"] for r in json.loads(launch("jobs", "--json").stdout)}
    assert states[a] == states[b] == "running"  # nothing cancelled

    listed = launch("down", "--all", "--dry-run")
    assert listed.returncode == 0 and set(listed.stdout.split()) == {a, b}
    assert launch("down", "--all", "--backend", "ssh", "-y").stdout.strip() == "no active jobs match"

    out = launch("down", "--all", "--state", "running", "-y")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines()) == sorted([f"{a}: cancelled", f"{b}: cancelled"])
    states = json.loads(launch("jobs", "--json").stdout)
    assert sorted(r["state"] for r in states) == ["cancelled", "cancelled", "succeeded"]
    assert launch("down", "--all", "-y").stdout.strip() == "no active jobs match"
    both = launch("down", a, "--all")
    assert both.returncode == 2 and "give JOB ids, --all or --expired" in both.stderr


def test_pipeline_status_json(launch, project, tmp_path):
    pool = tmp_path / "pool"
    steps = [{"id": f"script_{i}", "type": "script"} for i in range(2)]
    configs = {"script_0.py": script_config("script_0", "red"),
               "script_1.py": script_config("script_1", "green", prev="script_0", FAIL=True)}
    path = write_project(project, steps, configs, {"DATAPOOL": f"file://{pool}"}, fmt="py")
    assert launch("pipeline", "-c", str(path), timeout=300).returncode == 3
    for flags in (["--json"], ["-o", "json"]):
        out = launch("pipeline", "status", "-c", str(path), *flags)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        steps_seen = {s["step"]: s for s in data["steps"]}
        assert steps_seen["script_0"]["state"] == "succeeded" and steps_seen["script_1"]["state"] == "failed"
        assert steps_seen["script_1"]["job_id"] and steps_seen["script_0"]["type"] == "script"
        assert data["cost_usd"] == 0.0 and data["pipeline"] == str(path)


def test_relay_status_o_json(launch, relay_env, commander):  # noqa: F811 - the fixtures imported above
    commander.client().register("shown", {}, 60)
    for flags in (["--json"], ["-o", "json"]):
        out = launch("relay", "status", "--commander-url", commander.url, *flags, env=relay_env)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["commander_url"] == commander.url and [r["run_id"] for r in data["runs"]] == ["shown"]


def test_status_cost_so_far_is_price_times_hours_from_the_handle(launch, launcher_env):
    from launcher.registry import Registry

    registry = Registry(Path(launcher_env["LAUNCHER_HOME"]))
    registry.add("priced-aaaaaa", "priced", "local", None, {"usd_per_hour": 3.6, "max_restarts": 2, "attempt": 2},
                 state="running")
    created = registry.get("priced-aaaaaa").created
    registry.finish("priced-aaaaaa", "failed", 1, ended=created + 1800)  # half an hour
    out = launch("status", "priced-aaaaaa")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "failed (exit code 1)"
    assert "cost so far: $1.80 ($3.60/h)" in lines and "duration: 30m00s" in lines, lines
    assert "attempt: 2 of at most 3 (--max-restarts 2)" in lines
    data = json.loads(launch("status", "priced-aaaaaa", "--json").stdout)
    assert (data["cost_usd"], data["usd_per_hour"], data["attempt"], data["max_attempts"]) == (1.8, 3.6, 2, 3)
    assert data["duration_s"] == 1800


@pytest.mark.parametrize("code", ["0", "3"])
def test_a_foreground_launch_with_json_prints_only_the_final_status_on_stdout(launch, project, code):
    """`launch -o json SCRIPT` in the foreground: the job's output goes to stderr, stdout is one JSON document, the
    job's final status; the exit code is the script's."""
    (project / "ok.py").write_text(SCRIPT)
    r = launch("-o", "json", "ok.py", code)
    assert r.returncode == int(code), r.stderr
    status = json.loads(r.stdout)
    assert status["state"] == ("succeeded" if code == "0" else "failed") and status["exit_code"] == int(code)
    assert status["backend"] == "local" and status["job_id"] and status["log"]
    assert "one\ntwo\nthree\n" in r.stderr and "one" not in r.stdout
