"""A store outage costs time, not the job, on the ssh backend end to end (issue 23, item 4): a real sshd on 127.0.0.1
(this machine is the box), the store on a moto server that both the box and the client reach through a fault proxy
(the job's --endpoint-url is the proxy's address).

- an outage of several seconds while the script ends: the final push waits for the store; the job succeeds, exit 0;
- a store that never answers within --push-timeout: while the agent waits, `launch status` says `pushing (...)`;
  then the foreground exits 74 and `launch status` says push_failed, the outputs kept on the box and the command
  that finishes the job; once the store is back, `launch sync up --from-job JOB` pulls the outputs over SFTP,
  pushes them with the client's credentials and the job ends succeeded, its outputs and result in the store.

The box's agent runs with the real network policy (sshd passes it no LAUNCHER_NET_SCALE): outages here are refused
connections, which fail fast, and --push-timeout is a few seconds. Nothing asserts wall time.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from launcher.registry import Registry

from ..backends.conftest import base_env
from ..faults import FaultProxy
from .. import outage
from ..outage import CHECKPOINT_THEN_WAIT as SCRIPT
from ..motoserver import MOTO_ENV, moto_with_bucket

BUCKET = "outage"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from moto_with_bucket(tmp_path_factory, BUCKET)


@pytest.fixture
def proxy(moto):
    with FaultProxy.before(moto.endpoint, name="node->store") as p:
        yield p


class Box:
    """`launch` against the sshd, its store behind the proxy."""

    def __init__(self, tmp_path: Path, sshd, proxy: FaultProxy, moto):
        self.proxy, self.moto = proxy, moto
        self.project = tmp_path / "project"
        self.project.mkdir()
        (self.project / "train.py").write_text(SCRIPT)
        self.node = tmp_path / "node"
        self.node.mkdir()
        self.go = tmp_path / "go"
        profile = tmp_path / "ssh.yaml"
        profile.write_text(yaml.safe_dump({"backend": "ssh", "ssh": {
            "host": sshd.target, "identity": str(sshd.identity), "known_hosts": str(sshd.known_hosts),
            "python": sys.executable, "remote_dir": str(self.node)}}))
        self.prefix = f"{tmp_path.name}/experiments/e/"
        # base_env: the socket audit too (tests/ssh/conftest.py fails a test whose processes connected without one)
        env = {k: v for k, v in base_env(tmp_path).items() if k != "SSH_AUTH_SOCK"}
        self.env = {**env, **MOTO_ENV, "AWS_CONFIG_FILE": str(tmp_path / "none"),
                    "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
        self.flags = ["--profile", str(profile), "--experiment", "e", "--datapool", f"s3://{BUCKET}/{tmp_path.name}",
                      "--endpoint-url", f"http://{proxy.address}", "--secret", "AWS_ACCESS_KEY_ID",
                      "--secret", "AWS_SECRET_ACCESS_KEY", "--push-interval", "1s"]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=self.project, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *flags: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "launcher", *self.flags, *flags, "train.py", str(self.go)],
                                cwd=self.project, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def keys(self) -> set[str]:
        out = self.moto.client().list_objects_v2(Bucket=BUCKET, Prefix=self.prefix)
        return {o["Key"][len(self.prefix):] for o in out.get("Contents", [])}

    def job_id(self) -> str:
        return Registry(Path(self.env["LAUNCHER_HOME"])).list()[0].id

    def wait_started(self, proc: subprocess.Popen) -> None:
        """Until the checkpoint is in the store: the script runs on the box, waiting for `go`."""
        until = time.monotonic() + 120
        while "model/train_checkpoints/checkpoint-1/weights.bin" not in self.keys():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < until, sorted(self.keys())
            time.sleep(0.2)


@pytest.fixture
def box(tmp_path, sshd, proxy, moto):
    return Box(tmp_path, sshd, proxy, moto)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    return outage.finish(proc, timeout=180)


def test_an_outage_of_several_seconds_mid_job_is_survived(box):
    proc = box.start()
    box.wait_started(proc)
    box.proxy.refuse(for_s=6)  # the box and the client lose the store; it comes back by itself
    box.go.touch()  # the script ends inside the outage
    code, out, err = finish(proc)
    assert code == 0, err
    assert "done" in out
    job_id = box.job_id()
    assert {"model/hf/final/model.bin", f"reports/jobs/{job_id}/result.json"} <= box.keys()
    assert box.cli("status", job_id).stdout.startswith("succeeded (exit code 0)")
    agent_log = (box.node / "jobs" / job_id / "agent.log").read_text()
    assert "the store does not answer" in agent_log and "the store answers again" in agent_log, agent_log


def test_a_store_gone_past_the_push_timeout_ends_push_failed_and_sync_up_from_job_finishes_it(box):
    proc = box.start("--push-timeout", "10s")
    box.wait_started(proc)
    job_id = box.job_id()
    box.proxy.refuse()  # and it stays down past the push timeout
    box.go.touch()
    state = box.node / "jobs" / job_id
    until = time.monotonic() + 60
    while not (state / "pushing").exists():
        assert proc.poll() is None and time.monotonic() < until, "the agent never waited for the store"
        time.sleep(0.05)
    status = box.cli("status", job_id)  # the client cannot read the store either: the box answers
    assert status.stdout.startswith("pushing (store unreachable, retrying"), status.stdout + status.stderr
    code, out, err = finish(proc)
    assert code == 74, err  # EX_IOERR: the script ended (0), its outputs are not in the store
    assert "done" in out
    status = box.cli("status", job_id)
    assert status.returncode == 0 and status.stdout.startswith("push_failed"), status.stdout + status.stderr
    assert f"kept on the box in {box.node}/datapool/experiments/e" in status.stdout
    assert f"launch sync up --from-job {job_id}" in status.stdout
    assert f"reports/jobs/{job_id}/result.json" not in box.keys() and "model/hf/final/model.bin" not in box.keys()
    box.proxy.heal()
    recovered = box.cli("sync", "up", "--from-job", job_id)
    assert recovered.returncode == 0, recovered.stderr
    assert recovered.stdout.splitlines()[-1].startswith(f"{job_id}: succeeded (exit code 0)"), recovered.stdout
    assert {"model/hf/final/model.bin", "model/train_checkpoints/checkpoint-1/weights.bin",
            f"reports/jobs/{job_id}/log.txt", f"reports/jobs/{job_id}/result.json"} <= box.keys(), sorted(box.keys())
    result = json.loads(box.moto.client().get_object(
        Bucket=BUCKET, Key=f"{box.prefix}reports/jobs/{job_id}/result.json")["Body"].read())
    assert result["reason"] == "exited" and result["exit_code"] == 0
    assert result["recovered_by"] == "sync up --from-job"
    status = box.cli("status", job_id)
    assert status.stdout.splitlines()[0] == "succeeded (exit code 0)", status.stdout
    again = box.cli("sync", "up", "--from-job", job_id)  # no longer push_failed: one line, exit 2
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "not push_failed" in again.stderr, again.stderr
