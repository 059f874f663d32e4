"""The modal backend while its control plane cannot be asked (issue 23), through a fault proxy between the client and
the fake Modal server (tests/faults.py; the container and the volume are the server's own, so the job goes on):
`status` says `unreachable` with a reason within MODAL_CALL_S and never `lost`, the registry keeps the job running,
the real state comes back after the outage; a followed app log that is cut resumes at its byte offset with nothing
printed twice.

The store is S3 (moto, reached directly): with a modal-volume:// datapool the store is the control plane too, and
an outage of it is the store's outage as well.

The outages are seconds long: LAUNCHER_NET_SCALE shortens MODAL_CALL_S (30 s -> 3 s) for the looks made here.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher import api
from launcher.backends.base import JobState
from launcher.backends.modal import app as modal_app
from launcher.backends.modal.backend import ModalBackend
from launcher.job import Job
from launcher.registry import Registry

from ..faults import FaultProxy
from ..outage import TICKS, assert_status_running, follow_through_drops
from ..motoserver import MOTO_ENV, start_moto
from ..waiting import wait_for
from .fakeserver import client_pointed_at, start_fake_modal

BUCKET = "modal-outage"
SCALE = 0.1  # MODAL_CALL_S 30 s -> 3 s
LOOK_BOUND_S = 12.0  # one look during an outage: MODAL_CALL_S (3 s) and the store's read, with room for a busy CI


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    server = start_fake_modal(tmp_path_factory.mktemp("fakemodal"))
    proxy = FaultProxy.before(server.url, name="client->fake Modal")
    server.proxy = proxy
    server.moto = start_moto(tmp_path_factory.mktemp("moto"))
    server.moto.client().create_bucket(Bucket=BUCKET)
    with client_pointed_at(server, f"http://{proxy.address}"):
        yield server
    server.moto.stop()
    proxy.stop()
    server.stop()


@pytest.fixture
def proxy(fake):
    fake.proxy.heal()
    yield fake.proxy
    fake.proxy.heal()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LAUNCHER_NET_SCALE", str(SCALE))
    monkeypatch.delenv("DATAPOOL_ROOT", raising=False)
    for k, v in MOTO_ENV.items():
        monkeypatch.setenv(k, v)
    return tmp_path / "home"


def _launch(fake, tmp_path: Path, *args: str):
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "job.py").write_text(TICKS)
    job = Job(script="job.py", args=list(args), workdir=str(project), backend="modal", push_interval="1s",
              datapool=f"s3://{BUCKET}/{tmp_path.name}", endpoint_url=fake.moto.endpoint, spot=True, max_runtime="10m",
              secrets=["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    run = api.launch(job, detach=True)
    assert wait_for(lambda: b"tick 000" in b"".join(api.logs(run.job_id)), timeout=90, poll=0.5), "never started"
    return run


def _timed(fn):
    started = time.monotonic()
    try:
        return fn(), time.monotonic() - started
    except Exception as exc:  # noqa: BLE001 - returned for the test to check
        return exc, time.monotonic() - started


def test_status_is_unreachable_while_the_control_plane_is_down_and_the_job_goes_on(fake, proxy, home, tmp_path):
    until = tmp_path / "until"
    run = _launch(fake, tmp_path, "3", "0.2", str(until))
    job_id = run.job_id
    try:
        assert api.observe(job_id).state == JobState.RUNNING
        # The client keeps its connection: `refuse` alone would leave it working, so the open one is cut first
        # (a control plane that restarts).
        faults = {"blackhole": proxy.blackhole, "drop": proxy.drop, "restart": lambda: (proxy.drop(), proxy.refuse())}
        for name, fault in faults.items():
            fault()
            seen, took = _timed(lambda: api.observe(job_id))
            assert seen.state == JobState.UNREACHABLE, (name, seen)
            assert seen.reason and "\n" not in seen.reason and "Modal" in seen.reason, seen
            assert took < LOOK_BOUND_S, (name, took)
            assert api.reconcile(job_id)[0] == JobState.UNREACHABLE  # waited out: nothing recorded
            assert Registry().get(job_id).state == "running"
            proxy.heal()
            # The real state once the control plane answers again (the client's connection may need a moment).
            assert wait_for(lambda: api.observe(job_id).state == JobState.RUNNING, timeout=30, poll=0.5), \
                (name, api.observe(job_id))
        proxy.blackhole()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(Path(__file__).parents[2]),
                                                                        os.environ.get("PYTHONPATH"))))}
        out = subprocess.run([sys.executable, "-m", "launcher", "status", job_id], env=env, capture_output=True,
                             text=True, timeout=120)
        proxy.heal()
        assert_status_running(out)
        assert Registry().get(job_id).state == "running"
        until.touch()
        assert wait_for(lambda: api.reconcile(job_id)[0] == "succeeded", timeout=90, poll=1), api.observe(job_id)
    finally:
        proxy.heal()
        until.touch()
        if Registry().get(job_id).state in ("submitting", "pending", "running"):
            api.down(job_id)


def test_a_cut_log_stream_resumes_at_its_offset_with_nothing_twice(fake, proxy, home, tmp_path):
    run = _launch(fake, tmp_path, "60", "0.1")
    backend = ModalBackend()
    handle = backend.handle(run.job_id, Registry().get(run.job_id).handle)
    # A drop resets this stream, and a reconnect for a second.
    got, drops = follow_through_drops(backend, handle, lambda: proxy.drop(for_s=1.0), modal_app.Unreachable)
    assert drops == 3
    whole = b"".join(backend.logs(handle, follow=False))  # read again from the start
    assert got == whole
    assert all(whole.count(f"tick {i:03d} ".encode()) == 1 for i in range(60))
    # Another process has no entry ids to go on: the stream from the start, the offset skipped.
    modal_app._RESUME.clear()
    cut = len(whole) // 3
    assert b"".join(backend.logs(handle, follow=False, offset=cut)) == whole[cut:]


def test_an_error_from_the_network_stack_is_no_answer_about_the_call():
    """A dropped connection can surface as a bare AttributeError from grpclib (the connection went away under it):
    that says nothing about the call, unlike an error the function call itself ended with."""
    def raised(filename: str, exc: str) -> BaseException:
        try:
            exec(compile(f"raise {exc}", filename, "exec"))
        except BaseException as e:  # noqa: BLE001
            return e

    grpclib_bug = raised("/venv/site-packages/grpclib/protocol.py", "AttributeError(\"no attribute '_transport'\")")
    assert modal_app.unreachable(grpclib_bug).startswith("cannot reach Modal: AttributeError")
    assert modal_app.unreachable(raised("/venv/site-packages/modal/_functions.py", "RuntimeError('boom')")) is None
    assert modal_app.unreachable(modal_app.Unreachable("no answer")) == "no answer"
