"""Each test module under tests/k8s gets its own cluster: kmock in a process on 127.0.0.1 and the node simulator
(Job controller, scheduler, kubelets, garbage collector) in a thread; see cluster.py and nodesim.py."""
from __future__ import annotations

import pytest

from .cluster import KmockCluster
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
