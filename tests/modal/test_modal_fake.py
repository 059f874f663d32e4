"""The modal backend against the fake control plane (tests/modal/fakemodal.py): the real client sends what the plan
says (detached app, timeout, GPU, resources, volume mount, secret ids, retry policy, the image from the lock, the
snapshot as a mount), the captured call really runs (secrets in its environment, the datapool in the volume,
commits at each push point), `down` and the sweeper stop what they should, and data moves with `launch sync`.

The e2e scenarios shared by every backend (foreground, --detach + logs -f, down, timeout, sweeper) are in
tests/backends/test_contract.py; these run in-process where they can, so the client is imported once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher import api
from launcher.errors import UserError
from launcher.images import GPU_LOCK_FILE, LOCK_FILE, lock_hash
from launcher.job import Job
from launcher.registry import Registry

from .fakeserver import client_pointed_at, start_fake_modal

SECRET_VALUE = "s3cr3t-from-the-laptop-env"

CHECK_ENV = """
import os, pathlib
assert os.environ["LAUNCH_TEST_TOKEN"] == "%s", "the --secret value did not arrive"
assert os.environ["HF_TOKEN"] == "named-secret-value", "the named Modal secret did not arrive"
ckpt = pathlib.Path(os.environ["CHECKPOINT_DIR"]) / "step-1" / "weights.bin"
ckpt.parent.mkdir(parents=True, exist_ok=True)
ckpt.write_bytes(b"w" * 1000)
print("trained on", os.environ["LAUNCH_BACKEND"], "in", os.environ["DATAPOOL_ROOT"], flush=True)
""" % SECRET_VALUE

SLOW = """
import time
print("started", flush=True)
time.sleep(300)
"""


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    server = start_fake_modal(tmp_path_factory.mktemp("fakemodal"))
    server.add_secret("team-hf", {"HF_TOKEN": "named-secret-value"})
    with client_pointed_at(server):
        yield server
    server.stop()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATAPOOL_ROOT", raising=False)
    return tmp_path / "home"


def _job(tmp_path: Path, script: str, **fields) -> Job:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "job.py").write_text(script)
    return Job(script="job.py", workdir=str(project), backend="modal", push_interval="1s", **fields)


def _wait_final(job_id: str, timeout: float = 120) -> tuple[str, int | None]:
    end = time.time() + timeout
    while time.time() < end:
        state, code = api.status(job_id)
        if state not in ("submitting", "pending", "running"):
            return state, code
        time.sleep(1)
    raise AssertionError(f"{job_id} still {state} after {timeout} s")


def test_the_client_sends_the_plan_and_the_call_runs(fake, home, tmp_path, monkeypatch):
    from launcher.backends.modal import app as modal_app
    from launcher.backends.slots import fill

    monkeypatch.setenv("LAUNCH_TEST_TOKEN", SECRET_VALUE)
    fills = []
    monkeypatch.setattr(modal_app, "fill", lambda req, values: fills.append((req, values)) or fill(req, values))
    job = _job(tmp_path, CHECK_ENV, gpu="T4", cpus=2, memory="1Gi", disk="10Gi", max_runtime="1h",
               grace_period="10s", max_restarts=1, spot=True, secrets=["LAUNCH_TEST_TOKEN"],
               datapool="modal-volume://capture/pool", modal={"secrets": ["team-hf"]})
    run = api.launch(job, detach=True)
    submitted = time.time()
    app_id, call_id = run.handle.data.app_id, run.handle.data.call_id
    assert _wait_final(run.job_id) == ("succeeded", 0), api.reason(run.job_id)

    app = next(r["request"] for r in fake.rows("AppCreate") if r["response"]["app_id"] == app_id)
    assert app["app_state"] == "APP_STATE_DETACHED"  # the job outlives the laptop
    assert app["tags"] == {"launcher-job": run.job_id, "launcher-owner": app["tags"]["launcher-owner"],
                           "launcher-deadline": str(int(run.plan.deadline_at))}
    created = [r for r in fake.captured("FunctionCreate") if r["app_id"] == app_id]
    assert len(created) == 1
    fn = created[0]["function"]
    expected_timeout = run.plan.spec.deadman_at - submitted
    assert abs(fn["timeout_secs"] - expected_timeout) < 30  # the node's dead-man time, counted from submit
    # One render: what was sent is the plan's spec (what --dry-run prints) with the slots submit filled.
    [(req, values)] = fills
    assert req is run.plan.request and set(values) == {"timeout", "snapshot_file", "secret_launch_test_token"}
    sent = fill(run.plan.request, values)
    assert fn["timeout_secs"] == sent["function"]["timeout"] and fn["function_name"] == sent["function"]["name"]
    assert app["tags"] == sent["app"]["tags"] and values["snapshot_file"] == str(run.plan.snapshot.path)
    secrets = [r["env_dict"] for r in fake.captured("SecretGetOrCreate") if r.get("env_dict")]  # values redacted
    assert {k: "<redacted>" for k in sent["function"]["secrets"][0]["from_dict"]} in secrets
    res = fn["resources"]
    assert (res["gpu_config"]["gpu_type"], res.get("gpu_config", {}).get("count", 1)) == ("T4", 1)
    assert (res["milli_cpu"], res["memory_mb"], res["ephemeral_disk_mb"]) == (2000, 1024, 10 * 1024)
    assert fn["retry_policy"]["retries"] == 1
    assert api.attempts(run.job_id) is None  # Modal's retries rerun a preempted attempt; the client adds none on top
    assert fn["definition_type"] == "DEFINITION_TYPE_SERIALIZED"
    assert [m["mount_path"] for m in fn["volume_mounts"]] == ["/launcher-node/volume"]
    assert len(fn["secret_ids"]) == 2 and "st-named-team-hf" in fn["secret_ids"]
    # The image: the CUDA base, the lock installed from its own bytes, named by its hash.
    images = fake.captured("ImageGetOrCreate")
    commands = [c for r in images for c in r["image"].get("dockerfile_commands", [])]
    assert "FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04" in commands
    assert any("pip install" in c and "-r" in c for c in commands)
    assert f"ENV LAUNCH_IMAGE_LOCK={lock_hash()}" in commands
    import base64

    context = [base64.b64decode(f["data"]) for r in images for f in r["image"].get("context_files", [])]
    assert LOCK_FILE.read_bytes() in context
    assert GPU_LOCK_FILE.read_bytes() in context  # a GPU job: the gpu extra's lock on top, as the Dockerfile does
    # The code snapshot as a mount file at the path the bootstrap reads, the call spawned with the spec.
    mounts = [f["filename"] for r in fake.captured("MountGetOrCreate") if r.get("app_id") == app_id
              for f in r.get("files", [])]
    assert mounts == [f"/launcher-node/snapshots/{run.plan.snapshot.sha256}.tar.gz"]
    assert any(r["function_id"] and r["function_call_type"] for r in fake.captured("FunctionMap"))
    # The job ran in the volume: outputs, log and result are there; the agent committed while and after it ran.
    exp = fake.volume("capture") / "pool" / "experiments" / "default"
    assert (exp / "model" / "job_checkpoints" / "step-1" / "weights.bin").read_bytes() == b"w" * 1000
    result = json.loads((exp / "reports" / "jobs" / run.job_id / "result.json").read_text())
    assert (result["exit_code"], result["reason"], result["backend"]) == (0, "exited", "modal")
    assert "trained on modal in /" in (exp / "reports" / "jobs" / run.job_id / "log.txt").read_text()
    assert len(fake.captured("VolumeCommit")) >= 2
    assert b"trained on modal" in b"".join(api.logs(run.job_id))  # the app's logs
    # The secret's value went to Modal (as a Secret) and nowhere else: not the capture, the plan, the registry.
    assert SECRET_VALUE not in (fake.workdir / "captured.jsonl").read_text()
    assert SECRET_VALUE not in run.plan.to_yaml()
    assert SECRET_VALUE.encode() not in (home / "jobs.db").read_bytes()
    assert call_id.startswith("fc-")


def test_missing_named_secret_is_refused_before_any_app(fake, home, tmp_path):
    apps_before = len(fake.captured("AppCreate"))
    job = _job(tmp_path, "print('never')\n", datapool="modal-volume://capture/pool", spot=True,
               modal={"secrets": ["no-such-secret"]})
    with pytest.raises(UserError, match="no-such-secret") as err:
        api.launch(job, detach=True)
    assert "\n" not in str(err.value) and "modal secret create" in str(err.value)
    assert len(fake.captured("AppCreate")) == apps_before
    assert not (home / "jobs.db").exists() or Registry().list() == []


def test_down_cancels_the_call_and_stops_the_app_then_the_sweeper_has_nothing(fake, home, tmp_path):
    from launcher.backends.modal.backend import ModalBackend

    run = api.launch(_job(tmp_path, SLOW, datapool="modal-volume://capture/pool", spot=True, max_runtime="1h"),
                     detach=True)
    app_id, call_id = run.handle.data.app_id, run.handle.data.call_id
    end = time.time() + 90
    while b"started" not in b"".join(api.logs(run.job_id)):
        assert time.time() < end, "the job never started"
        time.sleep(1)
    # Registry or not, the sweeper finds it by its tags once its deadline has passed.
    later = run.plan.deadline_at + 1
    backend = ModalBackend()
    assert backend.sweep(time.time(), dry_run=True) == []
    # The app's state as the public listing names it (a detached app whose client left is `detached`).
    assert f"{app_id} ({run.job_id}, detached)" in backend.sweep(later, dry_run=True)
    assert api.down(run.job_id) == "cancelled"
    cancels = [r for r in fake.captured("FunctionCallCancel") if r["function_call_id"] == call_id]
    assert cancels and cancels[0]["terminate_containers"] is True
    assert app_id in [r["app_id"] for r in fake.captured("AppStop")]
    assert app_id not in " ".join(backend.sweep(later))  # a stopped app is not ended again


def test_sweeper_stops_expired_apps_the_registry_does_not_know(fake, home, tmp_path):
    from launcher.backends.modal.backend import ModalBackend

    run = api.launch(_job(tmp_path, SLOW, datapool="modal-volume://capture/pool", spot=True, max_runtime="1h"),
                     detach=True)
    (home / "jobs.db").unlink()  # another laptop's job, or a lost registry
    found = ModalBackend().sweep(run.plan.deadline_at + 1)
    assert f"{run.handle.data.app_id} ({run.job_id}, detached)" in found
    assert run.handle.data.app_id in [r["app_id"] for r in fake.captured("AppStop")]


def test_an_s3_datapool_works_through_the_agent(fake, home, tmp_path, monkeypatch):
    """No volume: the agent syncs with S3 as on the other backends; the node's keys arrive as --secret (the fake
    container inherits no AWS_* variable)."""
    from ..motoserver import MOTO_ENV, start_moto

    (tmp_path / "moto").mkdir()
    moto = start_moto(tmp_path / "moto")
    try:
        moto.client().create_bucket(Bucket="modal-s3")
        for k, v in MOTO_ENV.items():
            monkeypatch.setenv(k, v)
        script = "import os; print('pool at', os.environ['DATAPOOL_ROOT'], flush=True)\n"
        run = api.launch(_job(tmp_path, script, datapool="s3://modal-s3/pool", endpoint_url=moto.endpoint, spot=True,
                              secrets=["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]), detach=True)
        assert _wait_final(run.job_id) == ("succeeded", 0), api.reason(run.job_id)
        key = f"pool/experiments/default/reports/jobs/{run.job_id}/result.json"
        result = json.loads(moto.client().get_object(Bucket="modal-s3", Key=key)["Body"].read())
        assert (result["exit_code"], result["backend"]) == (0, "modal")
        assert not [r for r in fake.captured("FunctionCreate") if r["app_id"] == run.handle.data.app_id][0][
            "function"].get("volume_mounts")
    finally:
        moto.stop()


def test_sync_up_and_down_through_a_volume(fake, launch, launcher_env, tmp_path):
    env = {**launcher_env, **fake.env}
    up_root, down_root = tmp_path / "up", tmp_path / "down"
    data = up_root / "experiments" / "demo" / "data" / "raw" / "sft"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text('{"text": "hello"}\n' * 100)
    (data / "big.bin").write_bytes(os.urandom(300_000))
    url = "modal-volume://sync-pool/team"
    up = launch("sync", "up", "--datapool", url, "--experiment", "demo", "--root", str(up_root), env=env)
    assert up.returncode == 0, up.stderr
    stored = fake.volume("sync-pool") / "team" / "experiments" / "demo" / "data" / "raw" / "sft"
    assert (stored / "big.bin").read_bytes() == (data / "big.bin").read_bytes()
    down = launch("sync", "down", "--datapool", url, "--experiment", "demo", "--root", str(down_root), env=env)
    assert down.returncode == 0, down.stderr
    back = down_root / "experiments" / "demo" / "data" / "raw" / "sft"
    assert sorted(p.name for p in back.iterdir()) == ["big.bin", "train.jsonl"]
    assert (back / "big.bin").read_bytes() == (data / "big.bin").read_bytes()


def test_no_token_is_one_line_and_nothing_is_made(fake, launcher_env, project, tmp_path):
    (project / "train.py").write_text("print('never')\n")
    env = {k: v for k, v in {**launcher_env, "MODAL_SERVER_URL": fake.url, "HOME": str(tmp_path)}.items()
           if not k.startswith("MODAL_TOKEN")}
    apps_before = len(fake.captured("AppCreate"))
    out = subprocess.run([sys.executable, "-m", "launcher", "--backend", "modal", "--datapool", "modal-volume://p",
                          "train.py"], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "modal token new" in lines[0], out.stderr
    assert len(fake.captured("AppCreate")) == apps_before
    assert not (Path(launcher_env["LAUNCHER_HOME"]) / "jobs.db").exists()

