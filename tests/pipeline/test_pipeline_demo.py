"""The demo experiment end to end through `launch pipeline` on the tiny offline model, all local CPU:
--prepare-only, then tokenize_sft_0 -> train_sft_0 -> train_rl_0 -> eval_0, then a re-run that skips every step,
then an edited eval config that re-runs eval_0 alone (it is the last step)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO, clean_env, record

ORDER = ["tokenize_sft_0", "train_sft_0", "train_rl_0", "eval_0"]


def table(stdout: str) -> dict[str, list[str]]:
    """The summary table's rows (the steps' own output streams to the same stdout above it)."""
    return {line.split()[0]: line.split()[1:] for line in stdout.splitlines()
            if line.split()[:1] and line.split()[0] in ORDER}


# Six processes import torch (the tiny model build, four steps, the edited step again): ~90 s of CPU, but several
# minutes of wall time on a machine shared by many test runs.
@pytest.mark.timeout(900)
def test_demo_runs_skips_and_reruns_the_edited_step(tmp_path):
    demo = tmp_path / "demo"  # a copy, so the test can edit a step config; paths inside stay project-relative
    shutil.copytree(REPO / "configs/experiments/demo", demo, ignore=shutil.ignore_patterns("__pycache__"))
    pool = tmp_path / "pool"
    env = {**clean_env(), "LAUNCHER_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}

    def launch(*args):
        return subprocess.run([sys.executable, "-m", "launcher", "pipeline", "-c", str(demo / "pipeline.py"),
                               "--datapool", f"file://{pool}", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=900)

    prep = launch("--prepare-only")
    assert prep.returncode == 0, prep.stderr[-3000:]
    exp = pool / "experiments" / "demo"
    assert (exp / "model/base/tiny-smoke/config.json").is_file()
    assert len((exp / "data/raw/sft/tokenize_sft_0.jsonl").read_text().splitlines()) == 64
    assert not (exp / "reports/pipeline").exists()  # prepared, nothing run

    first = launch()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert {s: row[:2] for s, row in table(first.stdout).items()} == {s: ["local", "succeeded"] for s in ORDER}
    assert (exp / "data/tokenized/sft/tokenize_sft_0/meta.json").is_file()
    assert (exp / "model/hf/train_sft_0/config.json").is_file() and (exp / "model/hf/train_rl_0/config.json").is_file()
    report = json.loads((exp / "reports/eval/eval_0.json").read_text())
    assert report["model"].endswith("model/hf/train_rl_0") and report["metrics"]["n"] == 8
    jobs = {s: record(pool, s, "demo")["job_id"] for s in ORDER}

    again = launch()
    assert again.returncode == 0, again.stderr[-3000:]
    assert [f"{s}: up to date" in again.stderr for s in ORDER] == [True] * 4, again.stderr
    assert {s: record(pool, s, "demo")["job_id"] for s in ORDER} == jobs

    cfg = demo / "steps" / "eval_0.py"
    cfg.write_text(cfg.read_text().replace('"num_samples": 8', '"num_samples": 4'))
    edited = launch()
    assert edited.returncode == 0, edited.stderr[-3000:]
    now = {s: record(pool, s, "demo")["job_id"] for s in ORDER}
    assert [now[s] == jobs[s] for s in ORDER] == [True, True, True, False]
    assert "eval_0: config changed" in edited.stderr
    assert json.loads((exp / "reports/eval/eval_0.json").read_text())["metrics"]["n"] == 4

    status = subprocess.run([sys.executable, "-m", "launcher", "pipeline", "status", "-c", str(demo / "pipeline.py"),
                             "--datapool", f"file://{pool}"], cwd=REPO, env=env, capture_output=True, text=True)
    assert {s: row[:2] for s, row in table(status.stdout).items()} == {s: ["local", "succeeded"] for s in ORDER}
