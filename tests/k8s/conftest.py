"""Each test module under tests/k8s gets its own cluster: kmock in a process on 127.0.0.1 and the node simulator
(Job controller, scheduler, kubelets, garbage collector) in a thread; see cluster.py and nodesim.py. An s3
datapool on the module's moto server, and `k8s(...)`: `launch --backend k8s` against them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ..motoserver import MOTO_ENV, moto_with_bucket
from .cluster import BUCKET, IMAGE, REPO, KmockCluster
from .nodesim import NodeSimulator


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = KmockCluster(tmp_path_factory.mktemp("kmock"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def nodes(cluster, tmp_path_factory):
    with NodeSimulator(cluster, tmp_path_factory.mktemp("nodes")) as sim:
        yield sim


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from moto_with_bucket(tmp_path_factory, BUCKET)


@pytest.fixture
def k8s(cluster, nodes, moto, launcher_env, tmp_path):
    """`k8s(*args)`: `launch --backend k8s ...` against the module's cluster, its pods run by the simulator."""
    env = {**launcher_env, **MOTO_ENV, **cluster.env(), "LAUNCHER_WATCH_EVERY": "1"}  # a detached job's watcher
    env.pop("AWS_PROFILE", None)
    store = f"s3://{BUCKET}/{tmp_path.name}"

    def run(*args, cwd=REPO, run_flags=True, timeout=150, popen=False):
        flags = ["--backend", "k8s", "--image", IMAGE, "--datapool", store, "--endpoint-url", moto.endpoint,
                 "--secret", "AWS_ACCESS_KEY_ID", "--secret", "AWS_SECRET_ACCESS_KEY", "--push-interval", "1s"]
        argv = [sys.executable, "-m", "launcher", *(flags if run_flags else []), *args]
        if popen:  # a foreground client the test acts around
            return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)

    run.env, run.store, run.home = env, store, Path(env["LAUNCHER_HOME"])
    return run
