"""The ec2 backend while EC2 cannot be asked (issue 23), through a fault proxy between the client and moto's EC2
(tests/faults.py; the simulated nodes and the S3 store reach moto directly, so the job goes on): `status` says
`unreachable` with a reason in bounded time and never `lost`, the registry keeps the job running, the real state
comes back after the outage. And the live log over SSH (the node's log.txt) that is cut resumes at its byte offset
(`tail -c +N`) with nothing printed twice, through a second proxy in front of the node's sshd.

The outages are seconds long: LAUNCHER_NET_SCALE shortens the policy's timeouts for the looks made here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from launcher import api
from launcher.backends.base import JobState
from launcher.backends.ec2.backend import Ec2Backend
from launcher.registry import Registry
from launcher.sshclient import RemoteError

from ..faults import FaultProxy
from ..outage import TICKS, assert_status_running, follow_through_drops
from ..waiting import wait_for
from .ec2moto import GPU_AMI_PARAM, seed_ami_parameter
from .nodesim import NodeSimulator

BUCKET = "ec2-outage"
SCALE = 0.03  # EC2_CONNECT_S / EC2_READ_S (10 s / 60 s) -> 0.3 s / 1.8 s, three attempts
LOOK_BOUND_S = 20.0  # one look during an outage: three attempts and their backoff, with room for a busy CI



@pytest.fixture(scope="module")
def cloud(ec2_moto, tmp_path_factory):
    ec2_moto.client("s3").create_bucket(Bucket=BUCKET)
    seed_ami_parameter(ec2_moto.client("ec2"), ec2_moto.client("ssm"))
    scratch = tmp_path_factory.mktemp("hosts")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **ec2_moto.aws_env(scratch)}
    with NodeSimulator(ec2_moto.endpoint, ec2_moto.region, scratch, env) as sim:
        yield sim


@pytest.fixture(scope="module")
def proxy(ec2_moto):
    p = FaultProxy.before(ec2_moto.endpoint, name="client->moto (EC2)")
    yield p
    p.stop()


@pytest.fixture
def proxied(cloud, ec2_moto, ec2_env, proxy, project, tmp_path, monkeypatch):
    """`launch` and this process ask EC2 through the proxy; the store (--endpoint-url) is moto itself."""
    env = {**ec2_env, "AWS_ENDPOINT_URL": f"http://{proxy.address}"}
    for k in [k for k in env if k.startswith("AWS_") or k == "LAUNCHER_HOME"]:
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("LAUNCHER_NET_SCALE", str(SCALE))
    (project / "ticks.py").write_text(TICKS)
    profile = tmp_path / "ec2.yaml"
    profile.write_text(yaml.safe_dump({"backend": "ec2", "ec2": {"region": "us-east-1", "ami": GPU_AMI_PARAM,
                                                                 "python": sys.executable}}))
    flags = ["--profile", str(profile), "--gpu", "A10G", "--datapool", f"s3://{BUCKET}/{tmp_path.name}",
             "--endpoint-url", ec2_moto.endpoint, "--push-interval", "1s"]

    def cli(*args, extra_env=None):
        return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=project, env={**env, **(extra_env or {})},
                              capture_output=True, text=True, timeout=180)

    cli.env, cli.flags, cli.profile = env, flags, profile
    proxy.heal()
    yield cli
    proxy.heal()


def _timed(fn):
    started = time.monotonic()
    try:
        return fn(), time.monotonic() - started
    except Exception as exc:  # noqa: BLE001 - returned for the test to check
        return exc, time.monotonic() - started


def _running(job_id: str) -> bool:
    return api.observe(job_id).state == JobState.RUNNING


def test_status_is_unreachable_while_ec2_cannot_be_asked_and_the_job_goes_on(proxied, proxy, tmp_path):
    until = tmp_path / "until"
    out = proxied(*proxied.flags, "--detach", "ticks.py", "5", "0.2", str(until))
    assert out.returncode == 0, out.stdout + out.stderr
    job_id = out.stdout.strip().splitlines()[-1]
    try:
        assert wait_for(lambda: _running(job_id), timeout=90, poll=0.5), api.observe(job_id)
        faults = {"blackhole": proxy.blackhole, "drop": proxy.drop, "refuse": proxy.refuse}
        for name, fault in faults.items():
            fault()
            seen, took = _timed(lambda: api.observe(job_id))
            assert seen.state == JobState.UNREACHABLE, (name, seen)
            assert seen.reason and "\n" not in seen.reason and "EC2" in seen.reason, seen
            assert took < LOOK_BOUND_S, (name, took)
            assert api.reconcile(job_id)[0] == JobState.UNREACHABLE  # waited out: nothing recorded
            assert Registry().get(job_id).state == "running"
            proxy.heal()
            assert _running(job_id), (name, api.observe(job_id))  # the real state, at once
        proxy.blackhole()
        out = proxied("status", job_id, extra_env={"LAUNCHER_NET_SCALE": str(SCALE)})
        proxy.heal()
        assert_status_running(out)
        assert Registry().get(job_id).state == "running"
        until.touch()
        assert wait_for(lambda: api.reconcile(job_id)[0] == "succeeded", timeout=120, poll=1), api.observe(job_id)
    finally:
        proxy.heal()
        until.touch()
        if Registry().get(job_id).state in ("submitting", "pending", "running"):
            proxied("down", job_id)


def test_the_live_log_over_ssh_resumes_at_its_offset_after_a_drop(proxied, cloud, ec2_moto, project, tmp_path,
                                                                   monkeypatch):
    from ..sshd import keygen

    key = keygen(tmp_path / "id_ed25519")
    cloud.authorized_keys.write_text(Path(f"{key}.pub").read_text())
    key_name = f"me-{tmp_path.name[-10:]}"
    ec2_moto.client("ec2").import_key_pair(KeyName=key_name, PublicKeyMaterial=Path(f"{key}.pub").read_bytes())
    proxied.profile.write_text(yaml.safe_dump({"backend": "ec2", "ec2": {
        "region": "us-east-1", "ami": GPU_AMI_PARAM, "python": sys.executable, "key_name": key_name,
        "key_path": str(key), "ssh_user": "root", "ssh_from": "127.0.0.1/32"}}))
    until = tmp_path / "until"
    flags = list(proxied.flags)
    flags[flags.index("--push-interval") + 1] = "10m"  # the store's copy comes only at the end: the log is live
    out = proxied(*flags, "--detach", "ticks.py", "60", "0.1", str(until))
    assert out.returncode == 0, out.stdout + out.stderr
    job_id = out.stdout.strip().splitlines()[-1]
    sshd = None
    try:
        iid = Registry().get(job_id).handle["instance"]
        assert wait_for(lambda: cloud.ssh_hosts.exists() and iid in cloud.ssh_hosts.read_text(), timeout=90)
        host, _, port = json.loads(cloud.ssh_hosts.read_text())[iid].rpartition(":")
        sshd = FaultProxy((host, int(port)), name="client->node sshd")
        hosts = tmp_path / "ssh-hosts-proxied.json"
        hosts.write_text(json.dumps({iid: sshd.address}))
        monkeypatch.setenv("LAUNCHER_EC2_SSH_HOSTS", str(hosts))
        backend = Ec2Backend()
        assert backend.stream_is_store_log
        handle = backend.handle(job_id, Registry().get(job_id).handle)
        log = cloud.node_dir(iid) / "base" / "datapool" / "experiments" / "default" / "reports" / "jobs" / job_id

        def ended(offset: int) -> bytes | None:  # the node powered off: the rest is in its store copy
            return (log / "log.txt").read_bytes()[offset:] if (log / "result.json").is_file() else None

        # A drop resets this connection, and a reconnect for a second; the stream ends when tail --pid does, with
        # the agent. Reconnects under a loaded CI can take a while: bounded in time, not tries (a hang cannot pass).
        got, drops = follow_through_drops(
            backend, handle, lambda: sshd.drop(for_s=1.0), RemoteError, max_tries=None, give_up_s=180,
            on_chunk=lambda got, drops: drops == 3 and got.count(b"tick ") >= 45 and until.touch(), ended=ended)
        assert drops == 3
        whole = (log / "log.txt").read_bytes()
        assert got == whole
        assert all(whole.count(f"tick {i:03d} ".encode()) == 1 for i in range(60))
    finally:
        until.touch()
        if sshd is not None:
            sshd.stop()
        if Registry().get(job_id).state in ("submitting", "pending", "running"):
            proxied("down", job_id)
