"""`commander: ssh:` — `relay up` starts the commander as a detached job on an always-on box (a real sshd here),
checks it answers at public_url, and the commander there launches the workers; their records reach this
machine's registry through `relay status`, and `relay down` stops the commander job."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from ..motoserver import MOTO_ENV, free_port
from ..waiting import wait_for
from .conftest import BUCKET
from .workers import Workers, mock_project

REPO = Path(__file__).resolve().parents[2]


def test_commander_on_an_ssh_box(tmp_path, project, relay_env, relay_secret, sshd, moto):
    mock_project(project)
    (project / "runners" / "shell_run.sh").write_bytes((REPO / "runners" / "shell_run.sh").read_bytes())
    port = free_port()
    box_home = tmp_path / "box-home"  # the box's own ~/.launcher: its registry, the commander's state
    stack = {
        "run": "boxed", "mode": "mock", "mock": {"steps": 15, "checkpoint_every": 5, "step_seconds": 0.1},
        "experiment": "boxed", "ttl": 6, "datapool": f"s3://{BUCKET}/{tmp_path.name}", "endpoint_url": moto.endpoint,
        "commander": {
            "ssh": {"host": sshd.target, "identity": str(sshd.identity), "known_hosts": str(sshd.known_hosts),
                    "python": sys.executable, "remote_dir": str(tmp_path / "box"), "port": port,
                    "listen_host": "127.0.0.1", "state_path": str(box_home / "relay.db"),
                    "env": {"LAUNCHER_HOME": str(box_home)}},
            "public_url": f"http://127.0.0.1:{port}"},
        "worker": {"secrets": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"], "push_interval": "1s"},
        "backends": [{"backend": "local"}],
    }
    path = project / "stack.yaml"
    path.write_text(yaml.safe_dump(stack))
    cli = Workers(project, {**relay_env, **MOTO_ENV}, f"http://127.0.0.1:{port}", "boxed")
    up = cli.cli("relay", "up", str(path), timeout=180)
    assert up.returncode == 0, up.stderr
    assert "commander job" in up.stderr
    summary = json.loads(up.stdout)
    worker = summary["workers"][0]["job_id"]
    try:
        assert wait_for(lambda: json.loads(cli.cli("relay", "status", "--json").stdout)["runs"][0]["finished"],
                        timeout=120), cli.cli("relay", "status").stdout
        assert (box_home / "relay.db").is_file()  # the state lives on the box
        assert worker in cli.cli("jobs").stdout  # copied here: `launch jobs/logs/down` find it
        assert wait_for(lambda: cli.status(worker) == "succeeded", timeout=60), cli.log(worker)
        assert "mock: done at step 15" in cli.log(worker)
    finally:
        down = cli.cli("relay", "down", str(path), timeout=120)
    assert down.returncode == 0, down.stderr
    assert "commander job" in down.stderr and "cancelled" in down.stderr
    assert relay_secret not in up.stdout + up.stderr + path.read_text()
