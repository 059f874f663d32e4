"""A remote launch shows its phases as they happen (launcher/progress.py), and the node's setup.log and agent.log
reach the job's store folder, where `launch logs JOB --setup` reads them after the node is gone.

Each backend against its real part (conftest.py's targets): the CLI runs with stderr a pipe, so the phases come
as plain lines, parsed here.
"""
from __future__ import annotations

import json

import pytest

from launcher.progress import PLAIN_LINE, phase_names

# The first output comes a moment after the script starts: the phases before it are all there by then (the node
# pushes its setup.log before the script starts; the client reads what is left of it at the first output).
SCRIPT = """
import os
print(f"first line of {os.environ['JOB_ID']}", flush=True)
print("second line", flush=True)
"""

ALL = ["snapshot", "request sent", "waiting for the machine", "node setup", "first log line"]
# ssh: the box is there already, so nothing waits for a machine; the rest as everywhere.
EXPECTED = {"ssh": ["snapshot", "request sent", "node setup", "first log line"], "ec2": ALL, "k8s": ALL,
            "modal": ALL}


@pytest.fixture(params=sorted(EXPECTED))
def remote(request, tmp_path):
    from . import conftest

    if request.param == "ssh":
        return conftest.ssh_target(tmp_path, request.getfixturevalue("sshd"), request.getfixturevalue("moto"))
    if request.param == "ec2":
        return conftest.ec2_target(tmp_path, request.getfixturevalue("ec2_cloud"))
    if request.param == "k8s":
        return conftest.k8s_target(tmp_path, request.getfixturevalue("k8s_cloud"), request.getfixturevalue("moto"))
    return conftest.modal_target(tmp_path, request.getfixturevalue("fake_modal"))


def progress_lines(stderr: str) -> list[tuple[str, str]]:
    return [(m[2], m[3] or "") for m in map(PLAIN_LINE.match, stderr.splitlines()) if m]


def test_a_foreground_launch_shows_its_phases_in_order(remote):
    (remote.project / "hello.py").write_text(SCRIPT)
    out = remote.launch("hello.py")
    assert out.returncode == 0, out.stderr
    assert phase_names(out.stderr) == EXPECTED[remote.name], out.stderr
    lines = progress_lines(out.stderr)
    details = dict(reversed(lines))  # each phase's first detail
    snapshot = [d for p, d in lines if p == "snapshot"]
    # Built, then placed where the node reads it (uploaded, or found there already, or sent with the request).
    assert len(snapshot) == 2 and " files, " in snapshot[0], snapshot
    assert any(w in snapshot[1] for w in ("uploaded", "already", "sent with")), snapshot
    setup = [d for p, d in lines if p == "node setup"]
    assert "python" in setup and "pulling the datapool inputs" in setup, setup  # the bootstrap's, then the agent's
    assert details["request sent"], lines
    if "waiting for the machine" in details:
        assert details["waiting for the machine"], lines  # in the backend's words
    # stdout is the job's own output, untouched by the phases; none of them after it started.
    assert out.stdout.splitlines()[:2] == [out.stdout.splitlines()[0], "second line"]
    assert not PLAIN_LINE.match(out.stdout.splitlines()[0]) and out.stdout.startswith("first line of ")
    assert lines[-1][0] == "first log line"


def test_setup_and_agent_logs_reach_the_store_and_logs_setup_prints_them(remote):
    (remote.project / "hello.py").write_text(SCRIPT)
    out = remote.launch("--detach", "--json", "hello.py")
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["job_id"]  # --json stays parseable beside the phases on stderr
    assert phase_names(out.stderr) == ["snapshot", "request sent"], out.stderr  # detached: it does not wait
    follow = remote.cli("logs", job_id, "-f")
    assert "second line" in follow.stdout, follow.stderr
    setup = remote.cli("logs", job_id, "--setup")
    assert setup.returncode == 0, setup.stderr
    text = setup.stdout
    assert text.startswith("==> setup.log <==\n") and "\n==> agent.log <==\n" in text, text
    setup_log = text.split("==> agent.log <==")[0]
    for step in ("arming the dead-man switch", "] python", "] agent", "pulling the datapool inputs",
                 "starting the script", "script ended (0)"):
        assert step in setup_log, (step, text)
    assert "first line of" in text.split("==> agent.log <==")[1]  # the agent's own output: the script's too
