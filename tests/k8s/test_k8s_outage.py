"""The k8s backend while its API server cannot be asked (issue 23), through a fault proxy between the client and kmock
(tests/faults.py; the node simulator and the store are reached directly, so the job goes on): `status` says
`unreachable` with a reason in bounded time and never `lost`, the registry keeps the job running, the real state comes
back after the outage; a followed pod log that is cut resumes at its byte offset with nothing printed twice; a
blackholed API server costs one read timeout, never a hang.

The outages are seconds long: LAUNCHER_NET_SCALE shortens the policy's timeouts for the looks made here.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from launcher import api, netpolicy
from launcher.backends.base import JobState
from launcher.backends.k8s.backend import K8sBackend
from launcher.backends.k8s.kube import Unreachable
from launcher.registry import Registry

from ..faults import FaultProxy
from ..outage import TICKS, assert_status_running, follow_through_drops
from ..motoserver import MOTO_ENV
from ..waiting import wait_for
from .cluster import NAMESPACE

SCALE = 0.05  # K8S_REQUEST_S (10 s, 60 s) -> (0.5 s, 3 s)
LOOK_BOUND_S = 12.0  # one look during an outage: a read timeout (3 s) and the store's read, with room for a busy CI



@pytest.fixture(scope="module")
def proxy(cluster):
    p = FaultProxy.before(cluster.url, name="client->kmock")
    yield p
    p.stop()


@pytest.fixture
def proxied(k8s, cluster, proxy, tmp_path, monkeypatch):
    """`k8s(...)` and this process both reach the API server through the proxy; the looks made here use the short
    policy. The job's pods (the simulator) and the store (moto) are not behind it."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"http://{proxy.address}"
    kubeconfig = tmp_path / "kubeconfig-proxied"
    kubeconfig.write_text(yaml.safe_dump(config))
    k8s.env["KUBECONFIG"] = str(kubeconfig)  # the same dict the fixture's subprocesses get
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("LAUNCHER_HOME", str(k8s.home))
    for k, v in MOTO_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("LAUNCHER_NET_SCALE", str(SCALE))
    proxy.heal()
    project = tmp_path / "project"
    project.mkdir()
    (project / "ticks.py").write_text(TICKS)
    k8s.project = project
    yield k8s
    proxy.heal()


def _detach(k8s, *args) -> str:
    out = k8s("--detach", "ticks.py", *args, cwd=k8s.project)
    assert out.returncode == 0, out.stdout + out.stderr
    job_id = out.stdout.strip().splitlines()[-1]
    assert wait_for(lambda: api.observe(job_id).state == JobState.RUNNING, timeout=90, poll=0.5), api.observe(job_id)
    return job_id


def _handle(job_id: str):
    rec = Registry().get(job_id)
    backend = K8sBackend()
    return backend, backend.handle(rec.id, rec.handle)


def _timed(fn):
    started = time.monotonic()
    try:
        return fn(), time.monotonic() - started
    except Exception as exc:  # noqa: BLE001 - returned for the test to check
        return exc, time.monotonic() - started


def test_status_is_unreachable_while_the_api_server_is_down_and_the_job_goes_on(proxied, proxy, tmp_path):
    until = tmp_path / "until"
    job_id = _detach(proxied, "5", "0.2", str(until))  # runs until the outages are over
    backend, handle = _handle(job_id)
    try:
        for fault in (proxy.blackhole, proxy.refuse, proxy.drop):
            fault()
            seen, took = _timed(lambda: api.observe(job_id))
            assert seen.state == JobState.UNREACHABLE, (fault.__name__, seen)
            assert seen.reason and "\n" not in seen.reason and "API server" in seen.reason, seen
            assert took < LOOK_BOUND_S, (fault.__name__, took)
            # What reconcile (status, jobs, the watcher, the sweeper) does with it: nothing is recorded.
            assert api.reconcile(job_id)[0] == JobState.UNREACHABLE
            assert Registry().get(job_id).state == "running"
            # Every other call is bounded too (blackholed: one read timeout; refused or reset: at once).
            raised, took = _timed(lambda: backend.still_running(handle))
            assert isinstance(raised, Unreachable) and took < LOOK_BOUND_S, (fault.__name__, raised, took)
            proxy.heal()
            assert api.observe(job_id).state == JobState.RUNNING  # the real state, at once after the outage
        proxy.blackhole()
        out = subprocess.run([sys.executable, "-m", "launcher", "status", job_id], capture_output=True, text=True,
                             env={**proxied.env, "LAUNCHER_NET_SCALE": str(SCALE)}, timeout=120)
        proxy.heal()
        assert_status_running(out)
        assert Registry().get(job_id).state == "running"
        until.touch()
        assert wait_for(lambda: api.reconcile(job_id)[0] == "succeeded", timeout=120, poll=1)
    finally:
        proxy.heal()
        if Registry().get(job_id).state in ("submitting", "pending", "running"):
            proxied("down", job_id, run_flags=False)


def test_a_cut_log_stream_resumes_at_its_offset_with_nothing_twice(proxied, proxy, cluster):
    job_id = _detach(proxied, "60", "0.1")
    backend, handle = _handle(job_id)
    # A drop resets this stream, and a reconnect for a second.
    got, drops = follow_through_drops(backend, handle, lambda: proxy.drop(for_s=1.0), Unreachable, marker=b"\n")
    assert drops == 3
    whole = _pod_log(cluster, job_id)
    assert got == whole
    assert all(whole.count(f"tick {i:03d} ".encode()) == 1 for i in range(60))


def test_a_followed_log_over_a_blackholed_connection_ends_within_its_read_timeout(proxied, proxy, cluster,
                                                                                  monkeypatch):
    monkeypatch.setattr(netpolicy, "K8S_LOG_READ_S", 40.0)  # scaled: 2 s without a byte ends a followed log
    job_id = _detach(proxied, "600", "0.2")  # a line every 0.2 s: only the blackhole makes it quiet
    backend, handle = _handle(job_id)
    try:
        stream = backend.logs(handle, follow=True)
        got = bytearray()
        for chunk in stream:
            got += chunk
            if b"tick 005" in got:
                break
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(Unreachable, match="broke off"):
            for _ in stream:
                pass
        assert time.monotonic() - started < 2 + LOOK_BOUND_S
        proxy.heal()
        resumed = b"".join(_first_bytes(backend.logs(handle, follow=True, offset=len(got)), 200))
        whole = _pod_log(cluster, job_id)
        assert whole[:len(got)] == got and whole[len(got):len(got) + len(resumed)] == resumed
    finally:
        proxy.heal()
        proxied("down", job_id, run_flags=False)


def _pod_log(cluster, job_id: str) -> bytes:
    """Rank 0's whole output as the kubelet (the simulator) wrote it."""
    pod = next(p["metadata"]["name"] for p in cluster.objects("Pod")
               if (p["metadata"].get("labels") or {}).get("launcher/job") == job_id)
    return (cluster.logs / NAMESPACE / f"{pod}.log").read_bytes()


def _first_bytes(stream, n: int):
    seen = 0
    for chunk in stream:
        yield chunk
        seen += len(chunk)
        if seen >= n:
            stream.close()
            return
