"""Script steps on the local backend: run, skip when up to date, re-run what a change touches, stop on failure."""
from __future__ import annotations

import json

from .conftest import record, script_config, write_project

STEPS = [{"id": f"script_{i}", "type": "script"} for i in range(3)]


def three_steps(proj, **extra):
    configs = {"script_0.py": script_config("script_0", "red"),
               "script_1.py": script_config("script_1", "green", prev="script_0"),
               "script_2.py": script_config("script_2", "blue", prev="script_1")}
    return write_project(proj, STEPS, configs, extra)


def job_ids(pool):
    return {s: record(pool, s)["job_id"] for s in ("script_0", "script_1", "script_2")}


def test_runs_then_skips_then_reruns_from_the_changed_step(proj, pl, tmp_path):
    pool = tmp_path / "pool"
    path = three_steps(proj, datapool=f"file://{pool}", greeting="hello")  # pipeline.yaml: names in any case
    code, out, err = pl("-c", str(path))
    assert code == 0, err[-3000:]
    exp = pool / "experiments" / "exp"
    assert (exp / "model/hf/script_2/word.txt").read_text() == "red+green+blue\n"
    seen = json.loads((exp / "model/hf/script_1/seen.json").read_text())
    assert seen["step"] == "script_1" and seen["type"] == "script" and seen["backend"] == "local"
    # The env file holds the step's variables and the pipeline's shared ones, at an absolute STEP_ENV_PATH.
    env_file = (exp / "data/pipeline/script_1.env").read_text().splitlines()
    assert "WORD=green" in env_file and "GREETING=hello" in env_file and "STEP_ID=script_1" in env_file
    assert seen["env_path"] == str(exp / "data/pipeline/script_1.env")
    for line in ("script_0", "script_1", "script_2"):
        assert any(row.startswith(line) and "succeeded" in row for row in out.splitlines()), out
    first = job_ids(pool)

    code, out, err = pl("-c", str(path))
    assert code == 0, err[-3000:]
    assert err.count(": up to date (job") == 3, err
    assert job_ids(pool) == first

    # A config change re-runs that step and every step after it, not the ones before.
    cfg = path.parent / "steps" / "script_1.py"
    cfg.write_text(cfg.read_text().replace("green", "yellow"))
    code, out, err = pl("-c", str(path))
    assert code == 0, err[-3000:]
    now = job_ids(pool)
    assert now["script_0"] == first["script_0"]
    assert now["script_1"] != first["script_1"] and now["script_2"] != first["script_2"]
    assert "script_1: config changed" in err and "script_2: input changed (script_1)" in err
    assert (exp / "model/hf/script_2/word.txt").read_text() == "red+yellow+blue\n"


def test_only_from_force_and_a_missing_output(proj, pl, tmp_path):
    pool = tmp_path / "pool"
    path = three_steps(proj, DATAPOOL=f"file://{pool}")
    assert pl("-c", str(path))[0] == 0
    first = job_ids(pool)

    code, _, err = pl("-c", str(path), "--only", "script_1")
    assert code == 0, err[-3000:]
    ids = job_ids(pool)
    assert ids["script_1"] != first["script_1"]
    assert ids["script_0"] == first["script_0"] and ids["script_2"] == first["script_2"]  # --only: nothing else

    # script_2 read the old script_1: the next plain run brings it up to date.
    code, _, err = pl("-c", str(path))
    assert code == 0 and "script_2: input changed (script_1)" in err
    before = job_ids(pool)

    code, _, err = pl("-c", str(path), "--force", "script_0")
    ids = job_ids(pool)
    assert code == 0 and all(ids[s] != before[s] for s in ids), err[-2000:]

    before = ids
    code, _, err = pl("-c", str(path), "--from", "script_2")
    ids = job_ids(pool)
    assert code == 0 and ids["script_2"] != before["script_2"] and ids["script_1"] == before["script_1"]

    # An output gone from the store: that step runs again (and so the ones after it).
    import shutil

    shutil.rmtree(pool / "experiments/exp/model/hf/script_1")
    before = job_ids(pool)
    code, _, err = pl("-c", str(path))
    assert code == 0 and "script_1: output missing from the store (model/hf/script_1)" in err, err[-2000:]
    ids = job_ids(pool)
    assert ids["script_0"] == before["script_0"] and ids["script_1"] != before["script_1"]


def test_a_failed_step_stops_the_pipeline_with_a_summary_and_status(proj, pl, tmp_path):
    pool = tmp_path / "pool"
    configs = {"script_0.py": script_config("script_0", "red"),
               "script_1.py": script_config("script_1", "green", prev="script_0", FAIL=True),
               "script_2.py": script_config("script_2", "blue", prev="script_1")}
    path = write_project(proj, STEPS, configs, {"DATAPOOL": f"file://{pool}"}, fmt="py")
    code, out, err = pl("-c", str(path))
    assert code == 3, err[-2000:]
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("script_")}
    assert "succeeded" in rows["script_0"] and "failed" in rows["script_1"] and "not run" in rows["script_2"]
    rec = record(pool, "script_1")
    assert rec["state"] == "failed" and rec["exit_code"] == 3
    assert rows["script_1"].endswith(rec["job_id"])
    assert "logs: launch logs JOB, or experiments/exp/reports/jobs/JOB/log.txt in the pool" in out
    assert "failing on purpose" in (pool / f"experiments/exp/reports/jobs/{rec['job_id']}/log.txt").read_text()
    assert "the pipeline stopped there" in err
    assert not (pool / "experiments/exp/reports/pipeline/script_2.json").exists()

    code, out, err = pl("status", "-c", str(path))
    assert code == 0, err
    assert out.splitlines()[0].split() == ["STEP", "BACKEND", "STATE", "DURATION", "COST", "JOB"]
    assert max(len(line) for line in out.splitlines()) <= 80, out
    status = {line.split()[0]: line.split()[2] for line in out.splitlines() if line.startswith("script_")}
    assert status == {"script_0": "succeeded", "script_1": "failed", "script_2": "never"}
    assert "cost so far: $0.00" in out

    # Fixed: the finished step is skipped, the failed one and the rest run.
    cfg = path.parent / "steps" / "script_1.py"
    cfg.write_text(cfg.read_text().replace("FAIL = True", "FAIL = False"))
    code, out, err = pl("-c", str(path))
    assert code == 0, err[-2000:]
    assert "script_0: up to date" in err
    assert (pool / "experiments/exp/model/hf/script_2/word.txt").read_text() == "red+green+blue\n"
