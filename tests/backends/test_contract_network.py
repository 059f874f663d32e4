"""The contract's "network drops mid-job" case, on every remote backend (issue 23): the client's path to the
backend goes through a fault proxy (tests/faults.py): client->sshd, client->EC2 API, client->fake Modal,
client->kmock, client->the Slurm login node's sshd. The node's own paths (to the store, to the cluster) stay up, so
the job goes on; what the client shows and how it exits is the contract:

* a foreground run whose connection drops three times exits with the script's code, every line printed once;
* `status` while the backend cannot be reached is `running (unreachable since HH:MM:SS: <why>)`, exit 0;
* `down` while it cannot be reached writes the marker; the node acts on it; `down` confirms the end, exit 0 (on
  modal, whose store is a volume behind the same control plane, it says in one line that nothing reached the job,
  exit 1, and ends it once Modal answers).

LAUNCHER_NET_SCALE shortens the network policy's timeouts for the client (launcher/netpolicy.py).
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from launcher.registry import Registry

from ..faults import FaultProxy
from ..outage import numbered, until_sigterm
from ..waiting import wait_for
from ..slurm.target import slurm_profile
from ..sshd import start_sshd
from .conftest import BUCKET, MOTO_ENV, Target, base_env, ec2_target, k8s_target, modal_target, ssh_target

NET_BACKENDS = ["ssh", "ec2", "modal", "k8s", pytest.param("slurm", marks=pytest.mark.xdist_group("slurm"))]
SCALE = "0.2"

LINES = 30
COUNT = numbered(LINES)
SLOW = until_sigterm(180)


@pytest.fixture(scope="module")
def login_sshd(tmp_path_factory):
    """For slurm: this machine as the cluster's login node (the client submits over SSH)."""
    server = start_sshd(tmp_path_factory.mktemp("login-sshd"))
    yield server
    server.stop()


@pytest.fixture(params=NET_BACKENDS)
def net_target(request, tmp_path):
    """(the backend's contract Target with its client-side path through `proxy`, proxy)."""
    name = request.param
    if name in ("ssh", "slurm"):
        sshd = request.getfixturevalue("sshd" if name == "ssh" else "login_sshd")
        proxy = FaultProxy(("127.0.0.1", sshd.port), name=f"client->{name} sshd")
        known = tmp_path / "proxy_known_hosts"
        known.write_text(f"[127.0.0.1]:{proxy.port} {sshd.host_key_pub}\n")
        host = f"{sshd.user}@127.0.0.1:{proxy.port}"
        if name == "ssh":
            t = ssh_target(tmp_path, sshd, request.getfixturevalue("moto"), host=host, known_hosts=str(known))
        else:
            cluster, moto = request.getfixturevalue("slurm_cluster"), request.getfixturevalue("moto")
            profile = slurm_profile(tmp_path, host=host, identity=str(sshd.identity), known_hosts=str(known),
                                    slurm_env=cluster.env)
            project = tmp_path / "project"
            project.mkdir(exist_ok=True)
            env = {**{k: v for k, v in base_env(tmp_path).items() if not k.startswith("SLURM_")}, **MOTO_ENV}
            t = Target("slurm", project, env, [
                "--profile", str(profile), "--datapool", f"s3://{BUCKET}/{tmp_path.name}", "--endpoint-url",
                moto.endpoint, "--secret", "AWS_ACCESS_KEY_ID", "--secret", "AWS_SECRET_ACCESS_KEY",
                "--push-interval", "1s"], moto, short_max_runtime="15s")
    elif name == "ec2":
        server = request.getfixturevalue("ec2_cloud")
        t = ec2_target(tmp_path, server)
        proxy = FaultProxy.before(server.endpoint, name="client->EC2 API")
        t.env["AWS_ENDPOINT_URL"] = f"http://{proxy.address}"  # the store keeps its own --endpoint-url
    elif name == "modal":
        server = request.getfixturevalue("fake_modal")
        t = modal_target(tmp_path, server)
        proxy = FaultProxy.before(server.url, name="client->fake Modal")
        t.env["MODAL_SERVER_URL"] = f"http://{proxy.address}"
    else:
        cluster = request.getfixturevalue("k8s_cloud")
        t = k8s_target(tmp_path, cluster, request.getfixturevalue("moto"))
        proxy = FaultProxy.before(cluster.url, name="client->kmock")
        config = yaml.safe_load(cluster.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = f"http://{proxy.address}"
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        t.env["KUBECONFIG"] = str(kubeconfig)
    t.env["LAUNCHER_NET_SCALE"] = SCALE
    yield t, proxy
    proxy.stop()
    if name == "slurm":
        request.getfixturevalue("slurm_cluster").cancel_all()


def _started(t: Target, job_id: str) -> bool:
    return "started" in t.cli("logs", job_id).stdout


def test_foreground_rides_out_three_drops(net_target):
    t, proxy = net_target
    (t.project / "count.py").write_text(COUNT)
    proc = t.popen("count.py", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        home = Path(t.env["LAUNCHER_HOME"])
        assert wait_for(lambda: (home / "jobs.db").exists() and Registry(home).list()
                         and Registry(home).list()[0].state == "running", timeout=180)
        time.sleep(2)
        for _ in range(3):
            proxy.drop(for_s=1.0)
            time.sleep(2.5)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    text, err = out.decode(), err.decode()
    assert proc.returncode == 0, err[-3000:]
    for i in range(LINES):
        assert text.count(f"line {i:02d}\n") == 1, (i, text[-1500:], err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    assert any("cut" in e or "reset" in e for _, e in proxy.events)  # the drops hit the client's connections


def test_status_while_unreachable_then_down_through_the_store(net_target):
    t, proxy = net_target
    (t.project / "slow.py").write_text(SLOW)
    out = t.launch("--detach", "slow.py", timeout=240)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip().splitlines()[-1]
    assert wait_for(lambda: _started(t, job_id), timeout=180)
    proxy.refuse()  # the backend cannot be reached from here; the node and its store go on
    status = t.cli("status", job_id, timeout=120)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("running (unreachable since "), status.stdout + status.stderr
    down = t.cli("down", job_id, timeout=400)
    if t.name == "modal":
        # The job's store is a Modal volume, reached through the same control plane: nothing can take the marker,
        # and `down` says so in one line, exit 1, and records nothing. Once Modal answers, `down` ends it.
        assert down.returncode == 1, down.stdout + down.stderr
        assert down.stderr.strip().splitlines()[-1].startswith(f"error: {job_id}: not cancelled: "), down.stderr
        assert Registry(Path(t.env["LAUNCHER_HOME"])).get(job_id).state == "running"
        proxy.heal()
        down = t.cli("down", job_id, timeout=400)
        assert down.returncode == 0 and down.stdout.strip() == f"{job_id}: cancelled", down.stdout + down.stderr
        return
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.strip() == f"{job_id}: cancelled", down.stdout + down.stderr
    assert "cancel marker is in the store" in down.stderr
    proxy.heal()
    assert t.cli("status", job_id).stdout.startswith("cancelled")
