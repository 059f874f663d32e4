"""One `Target` per backend, so the same contract scenarios run against each (tests/backends/test_contract.py).

local: the agent as a subprocess here. ssh: a real OpenSSH sshd on 127.0.0.1 (this machine is the node), the
datapool store on a moto S3 server, the store credentials passed as --secret like a user would. ec2: boto3
against a moto server (EC2, SSM, S3), each instance's user-data run here by the node simulator. modal: the real
`modal` client against the fake control plane (tests/modal/fakemodal.py), which runs each spawned call here, the
datapool in a Modal volume it keeps in a folder.
k8s: the official `kubernetes` client against kmock (tests/k8s/kmockserver.py), the pod simulator
(tests/k8s/nodesim.py) running each Job's pods here, the store on moto with its credentials as --secret.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from ..ec2.ec2moto import GPU_AMI_PARAM, seed_ami_parameter, start_ec2_moto, without_aws
from ..ec2.nodesim import NodeSimulator
from ..k8s.cluster import IMAGE as K8S_IMAGE
from ..k8s.cluster import KmockCluster
from ..k8s.nodesim import NodeSimulator as PodSimulator
from ..modal.fakeserver import start_fake_modal
from ..motoserver import MOTO_ENV, moto_with_bucket
from ..slurm.target import slurm_target
from ..sshd import start_sshd

REPO = Path(__file__).resolve().parents[2]
AUDIT_HOOK = REPO / "tests" / "audit"  # its sitecustomize.py records sockets connected without a timeout
SOCKET_AUDIT = "socket-audit"
# slurm's cases share the session's one real cluster, so they run in one xdist worker (scripts/test.sh: loadgroup).
BACKENDS = ["local", "ssh", "ec2", "modal", "k8s", "toy", pytest.param("slurm", marks=pytest.mark.xdist_group("slurm"))]
BUCKET = "contract"


@dataclass
class Target:
    name: str
    project: Path
    env: dict[str, str]
    run_flags: list[str] = field(default_factory=list)
    store: object = None  # the moto server, for remote backends
    # A max runtime that leaves room for the node's boot (it counts from submission) yet ends the script: Modal's
    # container, its client's import and the bootstrap take longer than a box here does.
    short_max_runtime: str = "8s"

    def launch(self, *args: str, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
        """`launch [backend flags] ARGS` for a run; subcommands (logs, down, ...) go through `cli`."""
        return self.cli(*self.run_flags, *args, timeout=timeout, **kw)

    def cli(self, *args: str, timeout: float = 180, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=self.project,
                              env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout, **kw)

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "launcher", *self.run_flags, *args], cwd=self.project,
                                env=self.env, **kw)


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATAPOOL_ROOT", "EXPERIMENT", "CHECKPOINT_DIR", "LAUNCH_DATAPOOL", "AWS_PROFILE",
                        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")}
    audit = tmp_path / SOCKET_AUDIT
    audit.mkdir(exist_ok=True)
    env.update(LAUNCHER_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1", LAUNCHER_SOCKET_AUDIT=str(audit),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), str(AUDIT_HOOK), env.get("PYTHONPATH")) if p))
    return env


def no_socket_without_timeout(tmp_path: Path) -> None:
    """Fails when a process started with `base_env(tmp_path)` connected a socket with no timeout (the audit hook in
    tests/audit/sitecustomize.py wrote down where)."""
    found = sorted((tmp_path / SOCKET_AUDIT).glob("*.txt")) if (tmp_path / SOCKET_AUDIT).is_dir() else []
    assert not found, "a socket was connected without a timeout:\n" + found[0].read_text()[-3000:]


@pytest.fixture(autouse=True)
def _sockets_have_timeouts(tmp_path):
    yield
    no_socket_without_timeout(tmp_path)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from moto_with_bucket(tmp_path_factory, BUCKET)


def ssh_profile(tmp_path: Path, sshd, **ssh_overrides) -> tuple[Path, Path]:
    """(project, profile): an empty project and a profile naming the test's box (its node dir under tmp_path)."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    node = tmp_path / "node"
    node.mkdir(exist_ok=True)
    ssh = {"host": sshd.target, "identity": str(sshd.identity), "known_hosts": str(sshd.known_hosts),
           "python": sys.executable, "remote_dir": str(node), **ssh_overrides}
    profile = tmp_path / "ssh.yaml"
    profile.write_text(yaml.safe_dump({"backend": "ssh", "ssh": ssh}))
    return project, profile


def ssh_target(tmp_path: Path, sshd, moto, **ssh_overrides) -> Target:
    project, profile = ssh_profile(tmp_path, sshd, **ssh_overrides)
    env = {**base_env(tmp_path), **MOTO_ENV}
    flags = ["--profile", str(profile), "--datapool", f"s3://{BUCKET}/{tmp_path.name}", "--endpoint-url",
             moto.endpoint, "--secret", "AWS_ACCESS_KEY_ID", "--secret", "AWS_SECRET_ACCESS_KEY",
             "--push-interval", "1s"]
    return Target("ssh", project, env, flags, moto)


@pytest.fixture(scope="module")
def ec2_cloud(tmp_path_factory):
    """An EC2 account on moto (bucket, AMI parameter) and its hosts: the node simulator runs each instance's
    user-data on this machine."""
    server = start_ec2_moto(tmp_path_factory.mktemp("ec2moto"))
    server.client("s3").create_bucket(Bucket=BUCKET)
    seed_ami_parameter(server.client("ec2"), server.client("ssm"))
    hosts = tmp_path_factory.mktemp("hosts")
    env = {**without_aws(os.environ), **server.aws_env(hosts)}
    with NodeSimulator(server.endpoint, server.region, hosts, env):
        yield server
    server.stop()


def ec2_target(tmp_path: Path, server) -> Target:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    profile = tmp_path / "ec2.yaml"
    profile.write_text(yaml.safe_dump({"backend": "ec2", "ec2": {"region": server.region, "ami": GPU_AMI_PARAM,
                                                                 "python": sys.executable}}))
    env = {**without_aws(base_env(tmp_path)), **server.aws_env(tmp_path)}
    flags = ["--profile", str(profile), "--gpu", "A10G", "--datapool", f"s3://{BUCKET}/{tmp_path.name}",
             "--endpoint-url", server.endpoint, "--push-interval", "1s"]
    return Target("ec2", project, env, flags, server, short_max_runtime="20s")


@pytest.fixture(scope="module")
def fake_modal(tmp_path_factory):
    """The fake Modal control plane (tests/modal/fakemodal.py): the real client talks to it, it runs the calls."""
    server = start_fake_modal(tmp_path_factory.mktemp("fakemodal"))
    yield server
    server.stop()


def modal_target(tmp_path: Path, server) -> Target:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    env = {**base_env(tmp_path), **server.env}
    flags = ["--backend", "modal", "--datapool", f"modal-volume://contract/{tmp_path.name}", "--push-interval", "1s",
             "--spot"]  # --spot: no non-preemptible note, as a GPU job would run
    return Target("modal", project, env, flags, server, short_max_runtime="25s")


@pytest.fixture(scope="module")
def k8s_cloud(tmp_path_factory, moto):
    """kmock as the API server, the pod simulator (tests/k8s/nodesim.py) running each Job's pods here; the store
    on the module's moto server, its credentials passed as --secret (a Secret owned by the Job)."""
    cluster = KmockCluster(tmp_path_factory.mktemp("kmock"))
    with PodSimulator(cluster, tmp_path_factory.mktemp("pods")):
        yield cluster
    cluster.stop()


def k8s_target(tmp_path: Path, cluster, moto) -> Target:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    env = {**base_env(tmp_path), **MOTO_ENV, **cluster.env()}
    flags = ["--backend", "k8s", "--image", K8S_IMAGE, "--datapool", f"s3://{BUCKET}/{tmp_path.name}",
             "--endpoint-url", moto.endpoint, "--secret", "AWS_ACCESS_KEY_ID", "--secret", "AWS_SECRET_ACCESS_KEY",
             "--push-interval", "1s"]
    # The max runtime counts from submission: the client's upload, the pod's start and its bootstrap come first.
    return Target("k8s", project, env, flags, moto, short_max_runtime="25s")


@pytest.fixture(params=BACKENDS)
def target(request, tmp_path) -> Target:
    if request.param == "k8s":
        return k8s_target(tmp_path, request.getfixturevalue("k8s_cloud"), request.getfixturevalue("moto"))
    if request.param == "local":
        project = tmp_path / "project"
        project.mkdir()
        return Target("local", project, base_env(tmp_path))
    if request.param == "slurm":  # a real two-node cluster (tests/slurm/cluster.py), sbatch on this machine
        return slurm_target(tmp_path, request.getfixturevalue("slurm_cluster"))
    if request.param == "toy":  # a backend from tests/ alone (tests/backends/test_boundary.py)
        project = tmp_path / "project"
        project.mkdir()
        env = base_env(tmp_path)
        env.update(LAUNCHER_BACKENDS="toy=toy_backend",
                   PYTHONPATH=os.pathsep.join([str(Path(__file__).parent / "plugins"), env["PYTHONPATH"]]))
        return Target("toy", project, env, ["--backend", "toy"])
    if request.param == "ec2":
        return ec2_target(tmp_path, request.getfixturevalue("ec2_cloud"))
    if request.param == "modal":
        return modal_target(tmp_path, request.getfixturevalue("fake_modal"))
    return ssh_target(tmp_path, request.getfixturevalue("sshd"), request.getfixturevalue("moto"))
