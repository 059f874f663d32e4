"""A pipeline with a priced step, run from a terminal, shows the steps' summary and asks [Y/n] before anything is
prepared or run (issue 24, item 1); -y, CI or no terminal never ask."""
from __future__ import annotations

import os

import pytest

from ..terminal import in_pty
from .conftest import REPO, clean_env, files_under, script_config, write_project

STEPS = [{"id": "script_0", "type": "script"}]
CONFIGS = {"script_0.py": script_config("script_0", "red")}


@pytest.fixture
def project_env(proj, tmp_path):
    pool = tmp_path / "pool"
    path = write_project(proj, STEPS, CONFIGS, {"DATAPOOL": f"file://{pool}"})
    env = {k: v for k, v in clean_env().items() if k != "CI"}
    env.update(LAUNCHER_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO), LAUNCHER_PROFILE="",
               OMP_NUM_THREADS="1")
    return path, env, pool


def test_no_at_the_question_runs_and_prepares_nothing(project_env, proj):
    path, env, pool = project_env
    code, out = in_pty(["pipeline", "-c", str(path)], env, proj, b"n\n", timeout=120)
    assert "[Y/n]" in out and "STEP" in out and "script_0  local" in out, out
    assert code == 1 and "[launcher] pipeline not run: nothing was prepared or started" in out, out
    assert "Traceback" not in out and "made red" not in out, out
    assert files_under(pool) == []  # not even prepared


def test_enter_runs_it_and_yes_never_asks(project_env, proj):
    path, env, pool = project_env
    code, out = in_pty(["pipeline", "-c", str(path)], env, proj, b"\n", timeout=180)
    assert code == 0 and "[Y/n]" in out and "script_0" in out, out
    assert (pool / "experiments" / "exp" / "model" / "hf" / "script_0" / "word.txt").read_text() == "red\n"
    code, out = in_pty(["pipeline", "-c", str(path), "-y", "--force", "script_0"], env, proj, None, timeout=180)
    assert code == 0 and "[Y/n]" not in out, out
    code, out = in_pty(["pipeline", "-c", str(path), "--force", "script_0"], {**env, "CI": "1"}, proj, None,
                       timeout=180)
    assert code == 0 and "[Y/n]" not in out, out
