"""The slurm backend as a contract target (tests/backends/conftest.py `Target`): `sbatch` on this machine against the
real two-node test cluster (tests/slurm/cluster.py), the datapool a `file://` store under the test's tmp_path (this
machine's disk is the cluster's shared filesystem), the jobs' folders under tmp_path/node.

    from ..slurm.target import slurm_target
    target = slurm_target(tmp_path, request.getfixturevalue("slurm_cluster"))

A test that uses it carries `@pytest.mark.xdist_group("slurm")` (one cluster per run) and cancels what it leaves
(`slurm_cluster.cancel_all()`; tests under tests/slurm get that after each test).
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml


def slurm_profile(tmp_path: Path, **overrides) -> Path:
    """A profile whose slurm: section runs the nodes' agents with this interpreter, in tmp_path/node."""
    node = tmp_path / "node"
    node.mkdir(exist_ok=True)
    profile = tmp_path / "slurm.yaml"
    profile.write_text(yaml.safe_dump({"backend": "slurm", "slurm": {"python": sys.executable,
                                                                      "remote_dir": str(node), **overrides}}))
    return profile


def slurm_target(tmp_path: Path, cluster, **overrides):
    from ..backends.conftest import Target, base_env  # imported late: that conftest imports this module

    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    env = {**base_env(tmp_path), **cluster.env}
    flags = ["--profile", str(slurm_profile(tmp_path, **overrides)), "--datapool", store.as_uri(),
             "--push-interval", "1s"]
    # The max runtime counts from submission: Slurm's scheduling and the node bootstrap come first.
    return Target("slurm", project, env, flags, None, short_max_runtime="15s")
