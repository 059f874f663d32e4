"""Shared fixtures: every test gets its own LAUNCHER_HOME and datapool, and runs the real `launch` in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    env = {k: v for k, v in os.environ.items() if k not in ("DATAPOOL_ROOT", "EXPERIMENT", "CHECKPOINT_DIR", "LAUNCH_DATAPOOL")}
    env["LAUNCHER_HOME"] = str(tmp_path / "home")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture
def launch(launcher_env, project):
    """launch(*args, cwd=project, **popen_kwargs) -> CompletedProcess, running `python -m launcher`."""

    def _run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120, **kw):
        return subprocess.run(
            [sys.executable, "-m", "launcher", *args],
            cwd=cwd or project, env={**launcher_env, **(env or {})},
            capture_output=True, text=True, timeout=timeout, **kw,
        )

    return _run
