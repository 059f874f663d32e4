"""S3 behind real networks: a proxy on 127.0.0.1 that the client's transfers go through (CONNECT for https,
absolute-URI requests for http), NO_PROXY, a TLS endpoint (a TLS terminator with a test CA in front of moto)
trusted through AWS_CA_BUNDLE, and what of the network reaches the node's AgentSpec (only the job's `node:`
section and the S3 endpoint; never this machine's proxy)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.datapool.errors import DatapoolUserError

from ..netparts import Proxy, TlsFront, ca_and_cert
from .helpers import BUCKET, REPO, read_tree, run_sync, write_tree

FILES = {"experiments/demo/data/raw/a.txt": b"alpha\n", "experiments/demo/model/base/w.bin": os.urandom(9000)}


@pytest.fixture
def proxy():
    p = Proxy()
    yield p
    p.close()


@pytest.fixture
def tls(s3, tmp_path):
    ca, cert, key = ca_and_cert(tmp_path)
    front = TlsFront(s3.endpoint, cert, key)
    front.ca = ca
    yield front
    front.close()


def _roundtrip(tmp_path: Path, endpoint: str) -> None:
    up, down = tmp_path / "up", tmp_path / "down"
    write_tree(up, FILES)
    run_sync("up", up, f"s3://{BUCKET}/pool", endpoint)
    run_sync("down", down, f"s3://{BUCKET}/pool", endpoint)
    assert read_tree(down) == FILES


def test_http_transfers_go_through_the_proxy(s3, proxy, tmp_path, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    _roundtrip(tmp_path, s3.endpoint)
    puts = [line for line in proxy.seen if line.startswith(f"PUT {s3.endpoint}/{BUCKET}/pool/experiments/demo/")]
    assert len(puts) == len(FILES), proxy.seen
    assert any(line.startswith(f"GET {s3.endpoint}/{BUCKET}/?") for line in proxy.seen), proxy.seen  # the LIST


def test_no_proxy_bypasses_it(s3, proxy, tmp_path, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    _roundtrip(tmp_path, s3.endpoint)
    assert proxy.seen == []


def test_https_through_a_connect_tunnel_with_a_custom_ca(s3, tls, proxy, tmp_path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tls.ca))
    _roundtrip(tmp_path, tls.endpoint)
    host = tls.endpoint.split("://", 1)[1]
    assert proxy.seen and all(line.startswith(f"CONNECT {host} HTTP/") for line in proxy.seen), proxy.seen
    assert any(method == "PUT" for method, _, _ in s3.requests())  # and they reached the store


def test_a_tls_endpoint_with_an_unknown_ca_is_one_line(s3, tls, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    write_tree(tmp_path / "up", FILES)
    with pytest.raises(DatapoolUserError) as err:
        run_sync("up", tmp_path / "up", f"s3://{BUCKET}/pool", tls.endpoint)
    assert "not trusted" in str(err.value) and "AWS_CA_BUNDLE" in str(err.value)
    # The CLI: one error line, exit 2, nothing retried for minutes.
    env = {**os.environ, "AWS_ENDPOINT_URL": tls.endpoint, "PYTHONPATH": str(REPO)}
    env.pop("AWS_CA_BUNDLE", None)
    proc = subprocess.run([sys.executable, "-m", "launcher", "sync", "up", "--datapool", f"s3://{BUCKET}/pool",
                           "--root", str(tmp_path / "up")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "AWS_CA_BUNDLE" in lines[0], proc.stderr


def test_a_bad_ca_bundle_is_one_line(s3, tls, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    write_tree(tmp_path / "up", FILES)
    with pytest.raises(DatapoolUserError, match="AWS_CA_BUNDLE=.*missing.pem"):
        run_sync("up", tmp_path / "up", f"s3://{BUCKET}/pool", tls.endpoint)


# --- what reaches the node ------------------------------------------------------------------------------------------

def _spec(tmp_path: Path, **job):
    from launcher.job import Job
    from launcher.planner import make_plan

    (tmp_path / "train.py").write_text("print('hi')\n")
    fields = dict(backend="ssh", datapool="s3://team-bucket/pool", ssh={"host": "box"})
    return make_plan(Job(script="train.py", workdir=str(tmp_path), **{**fields, **job})).spec


def test_the_laptops_proxy_and_ca_never_reach_the_node(tmp_path, monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:3128")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "laptop-ca.pem"))
    spec = _spec(tmp_path)
    assert spec.https_proxy is None and spec.no_proxy is None and spec.ca_bundle is None
    assert "127.0.0.1:3128" not in spec.to_json() and "laptop-ca" not in spec.to_json()


def test_the_node_section_reaches_the_node(tmp_path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    ca, _, _ = ca_and_cert(tmp_path)
    spec = _spec(tmp_path, node={"https_proxy": "http://proxy.corp:3128", "no_proxy": "169.254.169.254",
                                 "ca_bundle": str(ca)})
    assert spec.https_proxy == "http://proxy.corp:3128" and spec.no_proxy == "169.254.169.254"
    assert spec.ca_bundle == ca.read_text()  # the content travels, not the laptop's path

    from launcher.node import agent

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "AWS_CA_BUNDLE",
                 "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(name, "")  # recorded, so what apply_network sets is undone after the test
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    agent.apply_network(spec)
    assert os.environ["HTTPS_PROXY"] == os.environ["https_proxy"] == "http://proxy.corp:3128"
    assert os.environ["NO_PROXY"] == "169.254.169.254"
    assert Path(os.environ["AWS_CA_BUNDLE"]).read_text() == ca.read_text()


def test_a_bad_node_section_is_refused(tmp_path):
    from launcher.errors import UserError
    from launcher.job import build_job

    with pytest.raises(UserError, match="node.https_proxy"):
        build_job(script="train.py", node={"https_proxy": "proxy:3128"})
    with pytest.raises(UserError, match="node.ca_bundle"):
        _spec(tmp_path, node={"ca_bundle": str(tmp_path / "none.pem")})


@pytest.mark.parametrize("name", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_the_endpoint_in_the_environment_reaches_the_node(tmp_path, monkeypatch, name):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv(name, "http://minio.local:9000")
    spec = _spec(tmp_path)
    assert spec.endpoint_url == "http://minio.local:9000"
    assert _spec(tmp_path, endpoint_url="http://other:9000").endpoint_url == "http://other:9000"  # the flag wins
    assert _spec(tmp_path, datapool="modal-volume://pool/x", backend="modal").endpoint_url is None


def test_the_plan_shows_the_endpoint(tmp_path, monkeypatch):
    from launcher.job import Job
    from launcher.planner import make_plan

    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.local:9000")
    (tmp_path / "train.py").write_text("print('hi')\n")
    plan = make_plan(Job(script="train.py", workdir=str(tmp_path), backend="ssh", datapool="s3://b/pool",
                         ssh={"host": "box"}))
    assert plan.to_dict()["datapool"]["endpoint"] == "http://minio.local:9000"
    assert "endpoint_url: http://minio.local:9000" in plan.to_yaml()
