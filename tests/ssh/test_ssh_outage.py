"""The client's network breaks while an ssh job runs (issue 23, items 2 and 3): a real sshd and a moto store, each
behind its own fault proxy (client->sshd, ->store). The job never notices; the client says what it knows and
ends with the script's exit code."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from launcher.registry import Registry

from ..backends.conftest import BUCKET, Target, base_env
from ..faults import FaultProxy
from ..outage import numbered, until_sigterm
from ..waiting import wait_for
from ..motoserver import MOTO_ENV, moto_with_bucket

LINES = 24
COUNT = numbered(LINES)
SLOW = until_sigterm(120)


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from moto_with_bucket(tmp_path_factory, BUCKET)


@pytest.fixture()
def net(tmp_path, sshd, moto):
    """The ssh target with its box behind `box` (client->sshd) and its store behind `store` (client and node ->
    moto: on one machine the two sides share the store's address)."""
    box = FaultProxy(("127.0.0.1", sshd.port), name="client->sshd")
    store = FaultProxy.before(moto.endpoint, name="->store")
    project = tmp_path / "project"
    project.mkdir()
    node = tmp_path / "node"
    node.mkdir()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{box.port} {sshd.host_key_pub}\n")
    ssh = {"host": f"root@127.0.0.1:{box.port}", "identity": str(sshd.identity), "known_hosts": str(known),
           "python": sys.executable, "remote_dir": str(node)}
    profile = tmp_path / "ssh.yaml"
    profile.write_text(yaml.safe_dump({"backend": "ssh", "ssh": ssh}))
    # Short network budgets: a quiet stream is probed after 3 s, reconnects back off from 0.1 s.
    env = {**base_env(tmp_path), **MOTO_ENV, "LAUNCHER_NET_SCALE": "0.2"}
    flags = ["--profile", str(profile), "--datapool", f"s3://{BUCKET}/{tmp_path.name}", "--endpoint-url",
             f"http://{store.address}", "--secret", "AWS_ACCESS_KEY_ID", "--secret", "AWS_SECRET_ACCESS_KEY",
             "--push-interval", "1s", "--grace-period", "5s"]
    target = Target("ssh", project, env, flags, moto)
    yield target, box, store
    box.stop()
    store.stop()


def _job_id(t: Target) -> str:
    return Registry(Path(t.env["LAUNCHER_HOME"])).list()[0].id


def test_foreground_rides_out_three_drops_and_prints_every_line_once(net):
    t, box, _ = net
    (t.project / "count.py").write_text(COUNT)
    proc = t.popen("count.py", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: Registry(Path(t.env["LAUNCHER_HOME"])).list(), timeout=60)
        time.sleep(3)  # the stream is up and has printed a few lines
        for _ in range(3):
            box.drop(for_s=1.0)  # every open connection cut; new ones too, for a second
            time.sleep(2.5)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    text = out.decode()
    assert proc.returncode == 0, err.decode()[-2000:]
    for i in range(LINES):
        assert text.count(f"line {i:02d}\n") == 1, (i, text, err.decode()[-2000:])
    assert sum("cut" in e for _, e in box.events) >= 3  # each drop cut the stream's connection
    assert b"Traceback" not in err
    assert b"log stream lost" in err


def test_status_jobs_and_down_while_the_box_is_unreachable(net):
    t, box, _ = net
    (t.project / "slow.py").write_text(SLOW)
    job_id = t.launch("--detach", "slow.py").stdout.strip()
    assert wait_for(lambda: "started" in t.cli("logs", job_id).stdout)
    box.refuse()  # the box cannot be reached from here; the job goes on, and so does its store
    status = t.cli("status", job_id)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("running (unreachable since "), status.stdout
    first = status.stdout.split("since ", 1)[1][:8]
    again = t.cli("status", job_id).stdout
    assert again.split("since ", 1)[1][:8] == first  # the first failed look is what it reports
    assert "unreachable" in t.cli("jobs").stdout
    down = t.cli("down", job_id, timeout=120)
    # The marker reached the node through the store; the agent stopped the script and pushed its result.
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == f"{job_id}: cancelled", down.stdout
    assert "cancel marker is in the store" in down.stderr
    assert t.cli("status", job_id).stdout.startswith("cancelled")
    box.heal()
    assert "unreachable" not in t.cli("jobs").stdout


def test_down_says_so_when_nothing_can_be_reached(net):
    t, box, store = net
    (t.project / "slow.py").write_text(SLOW)
    job_id = t.launch("--detach", "slow.py").stdout.strip()
    assert wait_for(lambda: "started" in t.cli("logs", job_id).stdout)
    box.refuse()
    store.refuse()
    down = t.cli("down", "--no-wait", job_id, timeout=120)
    assert down.returncode == 1, (down.stdout, down.stderr)
    assert down.stderr.strip().splitlines()[-1].startswith(f"error: {job_id}: not cancelled: "), down.stderr
    assert Registry(Path(t.env["LAUNCHER_HOME"])).get(job_id).state == "running"  # nothing recorded as ended
    box.heal()
    store.heal()
    nowait = t.cli("down", "--no-wait", job_id, timeout=120)
    assert nowait.returncode == 0, nowait.stderr
    assert t.cli("status", job_id).stdout.startswith("cancelled")


def test_ctrl_c_during_a_drop_cancels_once_the_store_answers(net):
    t, box, store = net
    (t.project / "slow.py").write_text(SLOW)
    proc = t.popen("slow.py", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: Registry(Path(t.env["LAUNCHER_HOME"])).list(), timeout=60)
        job_id = _job_id(t)
        assert wait_for(lambda: "started" in t.cli("logs", job_id).stdout)
        box.refuse()
        store.refuse(for_s=4.0)  # the marker write fails until then, and is retried
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert b"retrying the cancel marker" in err, err.decode()[-2000:]
    assert proc.returncode == 143, err.decode()[-2000:]  # the script's own exit code on SIGTERM
    box.heal()
    assert t.cli("status", job_id).stdout.startswith("cancelled")
