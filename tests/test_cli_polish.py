"""Small CLI manners: a mistyped backend gets a suggestion, `launch jobs` fits the terminal it prints to."""
from __future__ import annotations

from pathlib import Path

import pytest

LONG_NAME = "a-run-name-as-long-as-the-id-allows-xyzw"  # 40 chars: the longest stem a job id keeps


@pytest.mark.parametrize("typo, meant", [("modall", "modal"), ("ec3", "ec2"), ("lcoal", "local")])
def test_unknown_backend_suggests_known_or_planned_name(launch, project, launcher_env, typo, meant):
    (project / "train.py").write_text("print('never runs')\n")
    out = launch("--backend", typo, "train.py")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert f"unknown backend '{typo}' (did you mean '{meant}'?)" in lines[0]
    assert "--backend local" in lines[0]  # the fix is named too
    assert not (project / "datapool").exists()
    assert not (Path(launcher_env["LAUNCHER_HOME"]) / "jobs.db").exists()


def test_unknown_backend_with_nothing_close_gets_no_guess(launch, project):
    (project / "train.py").write_text("print('never runs')\n")
    out = launch("--backend", "lsf", "train.py")
    assert out.returncode == 2
    assert "unknown backend 'lsf'; use --backend local" in out.stderr and "did you mean" not in out.stderr


@pytest.fixture
def two_jobs(launch, project):
    (project / "ok.py").write_text("import sys\nsys.exit(int(sys.argv[1]))\n")
    assert launch("--name", LONG_NAME, "ok.py", "0").returncode == 0
    assert launch("ok.py", "3").returncode == 3
    ids = [p.name for p in (project / "datapool" / "experiments" / "default" / "reports" / "jobs").iterdir()]
    assert len(ids) == 2
    return ids


def _jobs(launch, columns: str | None):
    env = {"COLUMNS": columns} if columns else {}
    out = launch("jobs", env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.parametrize("columns", ["80", "60"])
def test_jobs_table_fits_a_narrow_terminal(launch, two_jobs, columns):
    lines = _jobs(launch, columns)
    assert lines and max(len(line) for line in lines) <= int(columns), "\n".join(lines)
    # Every id stays whole on its row (it is what `launch logs` and `launch down` take), with its state.
    for job_id in two_jobs:
        row = next(line for line in lines if job_id in line)
        assert ("succeeded" if job_id.startswith("a-run-name") else "failed") in row


def test_jobs_table_keeps_every_column_when_wide(launch, two_jobs, launcher_env):
    # Piped with no COLUMNS it fits 80 columns like a terminal would (tests/test_json_output.py); --json has it all.
    lines = _jobs(launch, "200")
    assert lines[0].split() == ["ID", "NAME", "BACKEND", "STATE", "EXIT", "CREATED", "DURATION", "DEADLINE"]
    assert any(LONG_NAME in line.replace(two_jobs[0], "").replace(two_jobs[1], "") for line in lines)


def test_jobs_table_at_80_columns_keeps_more_than_the_id_when_ids_are_short(launch, project):
    (project / "ok.py").write_text("pass\n")
    assert launch("ok.py").returncode == 0
    lines = _jobs(launch, "80")
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split() == ["ID", "BACKEND", "STATE", "EXIT", "CREATED", "DURATION"]
