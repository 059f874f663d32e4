"""`launch relay up / status / down` with the shipped example stack on the local backend: the commander's keeper
launches the worker, replaces it after a kill -9 (nobody's laptop loop involved), and `down` ends it all."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

from launcher.relay.client import RelayClient

from ..motoserver import free_port
from ..waiting import wait_for
from .workers import Workers, mock_project

REPO = Path(__file__).resolve().parents[2]


def write_stack(tmp_path: Path, project: Path, **changes) -> tuple[Path, dict]:
    stack = yaml.safe_load((REPO / "configs" / "relay" / "mock-local.yaml").read_text())
    port = free_port()
    stack["commander"] = {"local": {"host": "127.0.0.1", "port": port}, "public_url": f"http://127.0.0.1:{port}"}
    stack["mock"] = {"steps": 30, "checkpoint_every": 5, "step_seconds": 0.2}
    stack["ttl"] = 4
    stack["datapool"] = (tmp_path / "pool").as_uri()
    stack.update(changes)
    path = project / "stack.yaml"
    path.write_text(yaml.safe_dump(stack))
    return path, stack


def test_up_relaunches_a_killed_worker_from_the_commander_and_down_ends_it_all(tmp_path, project, relay_env,
                                                                                relay_secret):
    mock_project(project)
    path, stack = write_stack(tmp_path, project)
    cli = Workers(project, relay_env, "", stack["run"])  # its cli() runs `launch` in the project
    up = cli.cli("relay", "up", str(path), timeout=120)
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    assert summary["run"] == "relay-demo" and len(summary["workers"]) == 1
    first = summary["workers"][0]["job_id"]
    assert summary["workers"][0]["backend"] == "local"
    assert first in cli.cli("jobs").stdout  # recorded where `launch jobs/logs/down` look
    url = summary["commander_url"]
    client = RelayClient(url, relay_secret)
    try:
        assert wait_for(lambda: (client.run("relay-demo")["checkpoint"] or {}).get("step", 0) >= 5, timeout=60), \
            cli.log(first)
        cli.kill9(first)
        # The keeper sees the lease expire and the job end, and launches the next worker itself.
        assert wait_for(lambda: len(client.run("relay-demo")["workers"]) == 2, timeout=60), \
            client.run("relay-demo", events=50)["events"]
        assert wait_for(lambda: client.run("relay-demo")["finished"], timeout=90)
        status = cli.cli("relay", "status", "--json")
        assert status.returncode == 0, status.stderr
        run = json.loads(status.stdout)["runs"][0]
        assert run["handoffs"] == 1 and run["checkpoint"]["step"] == 30 and run["epoch"] == 2
        second = run["workers"][1]["job_id"]
        assert wait_for(lambda: cli.status(second) == "succeeded", timeout=30), cli.log(second)
        text = cli.cli("relay", "status").stdout
        assert "relay-demo: finished" in text and "hand-offs 1" in text and second in text
        assert wait_for(lambda: client.run("relay-demo")["workers"][0]["state"] != "submitted", timeout=30)
        kinds = [e["kind"] for e in client.run("relay-demo", events=100)["events"]]
        assert kinds.count("worker_launched") == 2 and kinds.count("acquired") == 2
    finally:
        down = cli.cli("relay", "down", str(path))
    assert down.returncode == 0, down.stderr
    assert "stopped the commander" in down.stderr
    record = json.loads((Path(relay_env["LAUNCHER_HOME"]) / "relay" / "relay-demo.json").read_text())
    pid = record["commander"]["pid"]
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()
                    .lower(), timeout=20)
    assert relay_secret not in path.read_text() + json.dumps(record)
    assert relay_secret not in (Path(relay_env["LAUNCHER_HOME"]) / "relay" / "relay-demo.db").read_bytes().decode(
        errors="replace")


def test_down_of_a_running_run_ends_its_worker(tmp_path, project, relay_env, relay_secret):
    mock_project(project)
    path, stack = write_stack(tmp_path, project, mock={"steps": 1000, "checkpoint_every": 5, "step_seconds": 0.2})
    cli = Workers(project, relay_env, "", stack["run"])
    up = cli.cli("relay", "up", str(path), timeout=120)
    assert up.returncode == 0, up.stderr
    job = json.loads(up.stdout)["workers"][0]["job_id"]
    assert wait_for(lambda: cli.status(job) == "running", timeout=30)
    down = cli.cli("relay", "down", "relay-demo")  # by run id: `relay up` remembered where its commander is
    assert down.returncode == 0, down.stderr
    assert f"worker {job} (local): cancelled" in down.stderr
    assert cli.status(job) == "cancelled"


def test_command_and_the_seed_command_env_replace_the_trainer(tmp_path, project):
    from launcher.relay.stack import Stack

    base = {"run": "r", "commander": {"url": "http://127.0.0.1:1"}}
    job = Stack(**base, worker={"command": "python train.py --resume $CHECKPOINT_DIR"}).job_template()
    assert job["script"] == "runners/shell_run.sh" and job["args"] == ["python train.py --resume $CHECKPOINT_DIR"]
    seed = Stack(**base, mode="sft", worker={"env": {"SLIME_SFT_CMD": "bash sft.sh"}}).job_template()
    assert seed["script"] == "runners/shell_run.sh" and seed["args"] == ["bash sft.sh"]
    sft = Stack(**base, mode="sft", config="configs/sft/smoke.yaml", lium={"ttl": "3h"},
                workers={"count": 2}).job_template()
    assert sft["script"] == "runners/sft_run.py" and sft["args"] == ["--config", "configs/sft/smoke.yaml"]
    assert sft["max_runtime"] == "3h"


def test_shell_run_runs_its_command_with_the_agents_python(tmp_path, project, launch):
    (project / "runners").mkdir()
    (project / "runners" / "shell_run.sh").write_bytes((REPO / "runners" / "shell_run.sh").read_bytes())
    out = launch("runners/shell_run.sh", 'python -c "import sys; print(sys.executable)"; echo "$UNSET_VAR done"')
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [sys.executable, " done"]


def test_up_refuses_a_store_that_a_listed_backend_cannot_reach(tmp_path, project, relay_env):
    mock_project(project)
    ssh_entry = {"backend": "ssh", "ssh": {"host": "box.example"}}
    path, _ = write_stack(tmp_path, project, backends=[{"backend": "local"}, ssh_entry])  # a file:// datapool
    cli = Workers(project, relay_env, "", "relay-demo")
    out = cli.cli("relay", "up", str(path))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: stack backends[1] (ssh)") and "cannot be reached" in out.stderr
    assert not (Path(relay_env["LAUNCHER_HOME"]) / "relay").exists()  # no commander, no record
    assert "no jobs yet" in cli.cli("jobs").stdout


def test_up_shows_what_standbys_cost(tmp_path, project, relay_env, relay_secret):
    mock_project(project)
    path, stack = write_stack(tmp_path, project, worker={"count": 2, "push_interval": "1s"},
                              mock={"steps": 1000, "checkpoint_every": 5, "step_seconds": 0.2})
    cli = Workers(project, relay_env, "", stack["run"])
    up = cli.cli("relay", "up", str(path), timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        summary = json.loads(up.stdout)
        assert summary["standbys"] == 1 and len(summary["workers"]) == 2
        assert summary["standby_usd_per_hour"] == 0.0  # priced as the first entry: the local backend costs nothing
        client = RelayClient(summary["commander_url"], relay_secret)
        assert wait_for(lambda: client.run("relay-demo")["holder"] is not None, timeout=60)
        held = client.run("relay-demo")
        assert held["holder"] in [w["job_id"] for w in summary["workers"]]  # one holds it, the other waits
    finally:
        assert cli.cli("relay", "down", str(path)).returncode == 0
