"""A store outage costs time, not the job (issue 23, item 4), at the agent: the real `launch` on the local backend with
an s3:// datapool, so the agent syncs ./datapool with a moto server reached through a fault proxy (node -> store).

- an outage while the script runs and ends: periodic pushes retry quietly (one warning per outage), the final push
  waits for the store and the job succeeds with its outputs in the store;
- a script that failed on its own during an outage keeps its own ending (failed, its exit code);
- a store that never answers within --push-timeout: the job ends push_failed (exit 74), never failed; the result
  kept on the node says so, with the script's exit code and where the outputs are, and the `pushing` marker was
  there while the agent waited; the command the message gives pushes the outputs once the store is back;
- a store that swallows requests (blackhole) cannot hold the final push past its deadline;
- a pipeline step that ended push_failed is not done.

Durations are scaled down with LAUNCHER_NET_SCALE and a short --push-timeout; nothing here asserts wall time.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.registry import Registry

from .backends.conftest import base_env, no_socket_without_timeout
from .faults import FaultProxy
from . import outage
from .outage import CHECKPOINT_THEN_WAIT as SCRIPT
from .motoserver import MOTO_ENV, moto_with_bucket

BUCKET = "outage"


@pytest.fixture(autouse=True)
def _sockets_have_timeouts(tmp_path):
    yield
    no_socket_without_timeout(tmp_path)


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from moto_with_bucket(tmp_path_factory, BUCKET)


@pytest.fixture
def proxy(moto):
    with FaultProxy.before(moto.endpoint, name="node->store") as p:
        yield p


@pytest.fixture
def job(tmp_path, proxy, moto):
    return Job(tmp_path, proxy, moto)


class Job:
    """One `launch` of SCRIPT on the local backend, its store behind the proxy."""

    def __init__(self, tmp_path: Path, proxy: FaultProxy, moto):
        self.tmp, self.proxy, self.moto = tmp_path, proxy, moto
        self.project = tmp_path / "project"
        self.project.mkdir()
        (self.project / "train.py").write_text(SCRIPT)
        self.go = tmp_path / "go"
        self.prefix = f"{tmp_path.name}/experiments/e/"
        # base_env: the socket audit too (the fixture below fails a test whose processes connected without one)
        self.env = {**base_env(tmp_path), **MOTO_ENV, "LAUNCHER_NET_SCALE": "0.2",
                    "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
        self.flags = ["--experiment", "e", "--datapool", f"s3://{BUCKET}/{tmp_path.name}",
                      "--endpoint-url", f"http://{proxy.address}", "--push-interval", "1s"]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=self.project, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *flags: str, exit_code: int = 0) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "launcher", *self.flags, *flags, "train.py", str(self.go),
                                 str(exit_code)], cwd=self.project, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def keys(self) -> set[str]:
        out = self.moto.client().list_objects_v2(Bucket=BUCKET, Prefix=self.prefix)
        return {o["Key"][len(self.prefix):] for o in out.get("Contents", [])}

    def record(self):
        return Registry(Path(self.env["LAUNCHER_HOME"])).list()[0]

    def wait_started(self, proc: subprocess.Popen | None = None) -> None:
        """Until the checkpoint is in the store (the periodic push works): the script runs, waiting for `go`."""
        until = time.monotonic() + 60
        while "model/train_checkpoints/checkpoint-1/weights.bin" not in self.keys():
            assert proc is None or proc.poll() is None, proc.communicate()
            assert time.monotonic() < until, sorted(self.keys())
            time.sleep(0.1)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    return outage.finish(proc, timeout=120)


def test_an_outage_mid_job_costs_time_not_the_job(job):
    proc = job.start()
    job.wait_started(proc)
    job.proxy.refuse()
    time.sleep(3)  # several periodic pushes fail while the script still runs
    job.go.touch()  # the script ends inside the outage: the final push has to wait for the store
    state_dir = Path(job.record().handle["state_dir"])
    until = time.monotonic() + 60
    while not (state_dir / "pushing").exists():
        assert proc.poll() is None and time.monotonic() < until, "the final push never waited"
        time.sleep(0.05)
    assert (state_dir / "pushing").read_text().startswith("store unreachable, retrying")
    job.proxy.heal()
    code, out, err = finish(proc)
    assert code == 0, err
    assert "done" in out
    assert err.count("periodic datapool push failed") == 1, err  # once per outage, not once per try
    assert "the store does not answer" in err and "the store answers again" in err
    keys = job.keys()
    assert {"model/hf/final/model.bin", f"reports/jobs/{job.record().id}/result.json"} <= keys, sorted(keys)
    result = json.loads(job.moto.client().get_object(
        Bucket=BUCKET, Key=f"{job.prefix}reports/jobs/{job.record().id}/result.json")["Body"].read())
    assert result["reason"] == "exited" and result["exit_code"] == 0
    assert not (state_dir / "pushing").exists()
    assert job.cli("status", job.record().id).stdout.startswith("succeeded")


def test_a_failed_script_keeps_its_own_ending_after_a_retried_push(job):
    proc = job.start(exit_code=3)
    job.wait_started(proc)
    job.proxy.refuse(for_s=3)  # heals by itself
    job.go.touch()
    code, _, err = finish(proc)
    assert code == 3, err
    assert job.cli("status", job.record().id).stdout.startswith("failed (exit code 3)")


def test_a_store_that_never_returns_ends_push_failed_not_failed(job):
    proc = job.start("--push-timeout", "3s")
    job.wait_started(proc)
    job.proxy.refuse()
    job.go.touch()
    state_dir = Path(job.record().handle["state_dir"])
    seen_pushing = False
    while proc.poll() is None:
        seen_pushing = seen_pushing or (state_dir / "pushing").exists()
        time.sleep(0.05)
    code, out, err = finish(proc)
    assert code == 74, err  # EX_IOERR: the script ended, its outputs are not in the store
    assert seen_pushing and not (state_dir / "pushing").exists()
    job_id = job.record().id
    result = json.loads((state_dir / "result.json").read_text())
    assert result["reason"] == "push_failed" and result["exit_code"] == 0  # the script's own exit code
    assert "--push-timeout 3s" in result["error"] and "on this machine" in result["error"]
    assert json.loads((job.project / "datapool/experiments/e/reports/jobs" / job_id / "result.json").read_text()) \
        == result  # the report dir's copy says the same
    assert f"reports/jobs/{job_id}/result.json" not in job.keys()  # a result in the store means complete outputs
    status = job.cli("status", job_id)
    assert status.stdout.startswith("push_failed"), status.stdout + status.stderr
    assert "launch sync up --root" in status.stdout
    assert job.record().state == "push_failed"
    # This backend keeps no node to fetch from: --from-job says so in one line (its message gave the way instead).
    refused = job.cli("sync", "up", "--from-job", job_id)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    mixed = job.cli("sync", "up", "--from-job", job_id, "--experiment", "e")
    assert mixed.returncode == 2 and "drop --experiment" in mixed.stderr, mixed.stderr
    # The command the message gives pushes the outputs once the store is back.
    job.proxy.heal()
    command = re.search(r"`(launch sync up [^`]+)`", result["error"])[1]
    pushed = job.cli(*shlex.split(command)[1:], "--endpoint-url", f"http://{job.proxy.address}")
    assert pushed.returncode == 0, pushed.stderr
    assert "model/hf/final/model.bin" in job.keys()


def test_a_blackholed_store_cannot_hold_the_final_push_past_its_deadline(job):
    """Connections accepted and never answered (a dead route): each request is cut at the push deadline, so the
    agent still ends (push_failed) instead of waiting out the S3 request timeout and its retries."""
    job.env["LAUNCHER_NET_SCALE"] = "1"  # real request timeouts (120 s): only the deadline can end the wait
    proc = job.start("--detach", "--push-timeout", "3s")
    code, out, err = finish(proc)
    assert code == 0, err
    job_id = out.strip()
    job.wait_started()
    job.proxy.blackhole()
    job.go.touch()
    state_dir = Path(job.record().handle["state_dir"])
    until = time.monotonic() + 90
    while not (state_dir / "result.json").exists():
        assert time.monotonic() < until, "the agent never gave up on the blackholed store"
        time.sleep(0.2)
    result = json.loads((state_dir / "result.json").read_text())
    assert result["reason"] == "push_failed", result
    job.proxy.heal()
    assert job.cli("status", job_id).stdout.startswith("push_failed")


def test_a_pipeline_step_that_ended_push_failed_is_not_done():
    from launcher.pipeline.state import why_not_done

    rec = {"state": "push_failed", "config_hash": "h", "inputs": {"prepare": None, "steps": {}}}
    assert why_not_done(rec, "h", {"prepare": None, "steps": {}}, []) == "last run push_failed"


def test_a_recovered_push_failed_step_counts_as_done(tmp_path, monkeypatch):
    """After `launch sync up --from-job` the job's record says succeeded; the pipeline's step record follows it on the
    next run (so the step is skipped, not run again)."""
    from launcher.pipeline.run import _refreshed
    from launcher.pipeline.state import why_not_done
    from launcher.registry import Registry

    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    reg = Registry()
    reg.add("train-abc123", "train", "ssh", None, {}, state="running")
    reg.finish("train-abc123", "push_failed", 0)
    saved = {}

    class Store:
        def save(self, step_id, rec):
            saved[step_id] = dict(rec)

    rec = {"state": "push_failed", "job_id": "train-abc123", "config_hash": "h",
           "inputs": {"prepare": None, "steps": {}}}
    assert _refreshed(Store(), "train", dict(rec))["state"] == "push_failed" and not saved  # not recovered yet
    assert reg.recover("train-abc123", "succeeded", 0)
    fresh = _refreshed(Store(), "train", dict(rec))
    assert fresh["state"] == "succeeded" and saved["train"]["state"] == "succeeded"
    assert why_not_done(fresh, "h", {"prepare": None, "steps": {}}, []) is None
