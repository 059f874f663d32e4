"""The trainer under `launch` (local backend): env contract, datapool layout, logs, job record, auto-resume."""
import json
import subprocess
import sys

from hrm_helpers import REPO, subprocess_env


def _launch(tmp_path, *script_args):
    cmd = [sys.executable, "-m", "launcher", "--datapool", f"file://{tmp_path / 'pool'}",
           "runners/hrm_lm_run.py", "--config", "configs/hrm_lm/smoke.yaml", *script_args]
    env = subprocess_env(LAUNCHER_HOME=str(tmp_path / "home"))
    env.pop("DATAPOOL_ROOT", None)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


def test_train_through_launch_then_resume_is_a_no_op(tmp_path):
    args = ["--run_name", "viaLaunch", "--steps", "6", "--val_every", "3", "--log_steps", "3"]
    r = _launch(tmp_path, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    exp = tmp_path / "pool" / "experiments" / "default"
    run = exp / "model" / "hrm_lm" / "viaLaunch"
    assert {"final.pt", "step_3.pt", "config.yaml", "tokenizer.json", "meta.json"} <= {p.name for p in run.iterdir()}
    rows = [json.loads(x) for x in (exp / "reports" / "viaLaunch" / "metrics.jsonl").read_text().splitlines()]
    assert [r_["step"] for r_ in rows if "loss" in r_] == [3, 6]
    jobs = list((exp / "reports" / "jobs").iterdir())
    assert len(jobs) == 1
    result = json.loads((jobs[0] / "result.json").read_text())
    assert result["exit_code"] == 0
    assert "done: step 6" in (jobs[0] / "log.txt").read_text()

    again = _launch(tmp_path, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already reached step 6" in again.stdout + again.stderr
    assert len((exp / "reports" / "viaLaunch" / "metrics.jsonl").read_text().splitlines()) == len(rows)


def test_bad_input_through_launch_exits_2(tmp_path):
    r = _launch(tmp_path, "--dataset", str(tmp_path / "no_such_dir"))
    assert r.returncode == 2
    assert "error: dataset directory not found" in r.stdout + r.stderr
    assert not (tmp_path / "pool" / "experiments" / "default" / "model" / "hrm_lm").exists()
