"""The slurm backend while its login node cannot be reached (issue 23), through a fault proxy between the client and
the login node's sshd (tests/faults.py; the cluster and the S3 store are reached directly, so the job goes on):
`status` says `unreachable` with a reason in bounded time and never `lost`, the registry keeps the job running, the
real state comes back after the outage (the kept SSH connection that went silent is replaced). Its log is the
store's copy of log.txt, read by the caller from its offset: Slurm is never asked for it.

The outages are seconds long: LAUNCHER_NET_SCALE shortens the policy's timeouts for the looks made here.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from launcher import api
from launcher.backends.base import JobState
from launcher.backends.slurm.backend import SlurmBackend
from launcher.registry import Registry

from ..faults import FaultProxy
from ..outage import TICKS, assert_status_running
from ..motoserver import MOTO_ENV, start_moto
from ..sshd import start_sshd
from ..waiting import wait_for
from .target import slurm_profile

pytestmark = pytest.mark.xdist_group("slurm")

SCALE = 0.1  # SSH_CONNECT_S 10 s -> 1 s, SSH_COMMAND_S 60 s -> 6 s
LOOK_BOUND_S = 20.0  # one look during an outage: a command's timeout (6 s) and a reconnect, with room for a busy CI



@pytest.fixture(scope="module")
def login_node(tmp_path_factory):
    """This machine as the cluster's login node (a private sshd) behind a fault proxy; an s3 store on moto."""
    sshd = start_sshd(tmp_path_factory.mktemp("sshd"))
    proxy = FaultProxy((sshd.host, sshd.port), name="client->login sshd")
    known_hosts = tmp_path_factory.mktemp("known") / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{proxy.port} {sshd.host_key_pub}\n")
    moto = start_moto(tmp_path_factory.mktemp("moto"))
    moto.client().create_bucket(Bucket="slurm-outage")
    yield sshd, proxy, known_hosts, moto
    moto.stop()
    proxy.stop()
    sshd.stop()


def test_status_is_unreachable_while_the_login_node_is_down_and_the_job_goes_on(login_node, slurm_cluster, tmp_path,
                                                                                monkeypatch):
    from ..backends.conftest import base_env

    sshd, proxy, known_hosts, moto = login_node
    proxy.heal()
    project = tmp_path / "project"
    project.mkdir()
    (project / "ticks.py").write_text(TICKS)
    profile = slurm_profile(tmp_path, host=f"{sshd.user}@127.0.0.1:{proxy.port}", identity=str(sshd.identity),
                            known_hosts=str(known_hosts), slurm_env=slurm_cluster.env)
    env = {**{k: v for k, v in base_env(tmp_path).items() if not k.startswith("SLURM_")}, **MOTO_ENV}
    flags = ["--profile", str(profile), "--datapool", f"s3://slurm-outage/{tmp_path.name}", "--endpoint-url",
             moto.endpoint, "--secret", "AWS_ACCESS_KEY_ID", "--secret", "AWS_SECRET_ACCESS_KEY",
             "--push-interval", "1s"]
    until = tmp_path / "until"
    out = subprocess.run([sys.executable, "-m", "launcher", *flags, "--detach", "ticks.py", "5", "0.2", str(until)],
                         cwd=project, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    job_id = out.stdout.strip().splitlines()[-1]
    for k in ("LAUNCHER_HOME", *MOTO_ENV):
        monkeypatch.setenv(k, env[k])
    monkeypatch.setenv("LAUNCHER_NET_SCALE", str(SCALE))
    try:
        assert wait_for(lambda: api.observe(job_id).state == JobState.RUNNING, timeout=90, poll=0.5), \
            api.observe(job_id)
        # A kept connection outlives `refuse`: the open one is cut first (an sshd that restarts).
        faults = {"blackhole": proxy.blackhole, "drop": proxy.drop, "restart": lambda: (proxy.drop(), proxy.refuse())}
        for name, fault in faults.items():
            fault()
            started = time.monotonic()
            seen = api.observe(job_id)
            took = time.monotonic() - started
            assert seen.state == JobState.UNREACHABLE, (name, seen)
            assert seen.reason and "\n" not in seen.reason, seen
            assert took < LOOK_BOUND_S, (name, took)
            assert api.reconcile(job_id)[0] == JobState.UNREACHABLE  # waited out: nothing recorded
            assert Registry().get(job_id).state == "running"
            proxy.heal()
            assert api.observe(job_id).state == JobState.RUNNING, name  # the real state, at once
        proxy.blackhole()
        out = subprocess.run([sys.executable, "-m", "launcher", "status", job_id], cwd=project, capture_output=True,
                             text=True, env={**env, "LAUNCHER_NET_SCALE": str(SCALE)}, timeout=120)
        proxy.heal()
        assert_status_running(out)
        backend = SlurmBackend()
        handle = backend.handle(job_id, Registry().get(job_id).handle)
        assert backend.logs(handle, follow=True, offset=100) is None  # the store's copy, from the caller's offset
        until.touch()
        assert wait_for(lambda: api.reconcile(job_id)[0] == "succeeded", timeout=120, poll=1), api.observe(job_id)
    finally:
        proxy.heal()
        until.touch()
