"""Shared fixtures: every test gets its own LAUNCHER_HOME and datapool, and runs the real `launch` in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .slurm.cluster import SlurmCluster, start_cluster

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project dir to launch from (cwd), separate from the LAUNCHER_HOME."""
    p = tmp_path / "project"
    p.mkdir()
    return p


@pytest.fixture
def launcher_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATAPOOL_ROOT", "EXPERIMENT", "CHECKPOINT_DIR", "LAUNCH_DATAPOOL",
                                                           "LAUNCHER_DATAPOOL")}
    env["LAUNCHER_HOME"] = str(tmp_path / "home")
    env["LAUNCHER_PROFILE"] = ""  # no default profile (~/.config/launcher/config.yaml) of whoever runs the tests
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture
def launch(launcher_env, project):
    """launch(*args, cwd=project, env=..., **popen_kwargs) -> CompletedProcess, running `python -m launcher`.

    `env` is laid over `launcher_env`; a variable set to None there is removed (launcher_env copies os.environ,
    which may hold what another test or whoever runs the tests set)."""

    def _run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120, **kw):
        merged = {**launcher_env, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "launcher", *args],
            cwd=cwd or project, env={k: v for k, v in merged.items() if v is not None},
            capture_output=True, text=True, timeout=timeout, **kw,
        )

    return _run


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> SlurmCluster:
    """A real two-node Slurm cluster on 127.0.0.1 (tests/slurm/cluster.py), started on first use, stopped at the end.

    One per pytest process: under xdist each worker would start its own, so every test that uses it must carry
    `@pytest.mark.xdist_group("slurm")` (scripts/test.sh runs `--dist loadgroup`, which sends a group's tests to one
    worker); then a run starts a single cluster. Merge `slurm_cluster.env` (SLURM_CONF) into the env of anything that
    runs sbatch/squeue/...; `slurm_cluster.run("squeue", ...)` runs one. Tests under tests/slurm get a clean slate
    (every job cancelled, nodes idle) after each test; elsewhere call `slurm_cluster.cancel_all()` yourself.
    """
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()
