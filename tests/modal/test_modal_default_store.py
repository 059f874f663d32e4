"""No --datapool on modal: the job uses the workspace's `launcher-datapool` volume, made on first use (issue 24,
item 5), against the fake control plane with the real client."""
from __future__ import annotations

from pathlib import Path

import pytest

from launcher import api
from launcher.backends.modal.backend import DEFAULT_VOLUME_URL
from launcher.job import Job

from .fakeserver import client_pointed_at, start_fake_modal

WORK = """
import os, pathlib
ckpt = pathlib.Path(os.environ["CHECKPOINT_DIR"]) / "step-1" / "weights.bin"
ckpt.parent.mkdir(parents=True, exist_ok=True)
ckpt.write_bytes(b"w" * 100)
print("pool is", os.environ["DATAPOOL_ROOT"], flush=True)
"""


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    server = start_fake_modal(tmp_path_factory.mktemp("fakemodal"))
    with client_pointed_at(server):
        yield server
    server.stop()


@pytest.fixture
def home(tmp_path, monkeypatch):
    for k in ("LAUNCHER_DATAPOOL", "LAUNCH_DATAPOOL", "DATAPOOL_ROOT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LAUNCHER_PROFILE", "")
    return tmp_path / "home"


def _job(tmp_path: Path) -> Job:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "job.py").write_text(WORK)
    return Job(script="job.py", workdir=str(project), backend="modal", push_interval="1s", spot=True,
               max_runtime="1h")


def test_the_plan_names_the_default_volume_and_creates_nothing(fake, home, tmp_path):
    before = len(fake.rows())
    plan = api.plan(_job(tmp_path))
    assert plan.datapool["store"] == DEFAULT_VOLUME_URL == "modal-volume://launcher-datapool"
    assert "no --datapool: the modal default store, made on first use" in plan.notes
    assert len(fake.rows()) == before  # offline: not one call


def test_a_launch_without_a_datapool_makes_the_volume_once_and_runs_in_it(fake, home, tmp_path, capfd):
    assert not fake.volume("launcher-datapool").exists()
    run = api.launch(_job(tmp_path), detach=True)
    assert "created the modal default store modal-volume://launcher-datapool" in capfd.readouterr().err
    assert fake.volume("launcher-datapool").is_dir()
    assert run.wait(timeout=120).state == "succeeded", api.reason(run.job_id)
    exp = fake.volume("launcher-datapool") / "experiments" / "default"
    assert (exp / "model" / "job_checkpoints" / "step-1" / "weights.bin").read_bytes() == b"w" * 100
    assert (exp / "reports" / "jobs" / run.job_id / "result.json").exists()
    # The second job finds it: nothing is made again.
    run2 = api.launch(_job(tmp_path), detach=True)
    assert "created the" not in capfd.readouterr().err
    assert run2.wait(timeout=120).state == "succeeded", api.reason(run2.job_id)
    assert (exp / "reports" / "jobs" / run2.job_id / "result.json").exists()
