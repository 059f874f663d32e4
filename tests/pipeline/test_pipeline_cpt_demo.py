"""Seed LLMRunner's example as shipped (issue 25, item 3): configs/experiments/cpt_demo, tokenize_cpt_0 ->
train_cpt_0, run by `launch pipeline -c configs/experiments/cpt_demo/pipeline.py` as written (a throwaway
datapool); the training step's data.tokenized replaces configs/cpt/smoke.yaml's own data source. And the
train_ppo / train_spo step types: their runners, chained like train_rl."""
from __future__ import annotations

import subprocess
import sys

import pytest

from launcher.pipeline.run import check

from .conftest import REPO, clean_env, record

ORDER = ["tokenize_cpt_0", "train_cpt_0"]


@pytest.mark.timeout(600)
def test_cpt_demo_runs_as_written(tmp_path):
    pool = tmp_path / "pool"
    env = {**clean_env(), "LAUNCHER_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    line = ["pipeline", "-c", "configs/experiments/cpt_demo/pipeline.py"]  # as docs/pipelines.md writes it
    run = subprocess.run([sys.executable, "-m", "launcher", *line, "--datapool", f"file://{pool}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    exp = pool / "experiments" / "cpt_demo"
    tokenized = exp / "data" / "tokenized" / "cpt" / "tokenize_cpt_0"
    assert (tokenized / "meta.json").is_file() and (tokenized / "tokenizer" / "tokenizer.json").is_file()
    assert (exp / "model" / "hf" / "train_cpt_0" / "model.safetensors").is_file()
    assert all(record(pool, s, "cpt_demo")["state"] == "succeeded" for s in ORDER)


def test_train_ppo_and_train_spo_steps(tmp_path):
    exp = tmp_path / "exp"
    (exp / "steps").mkdir(parents=True)
    for algo in ("ppo", "spo"):
        (exp / "steps" / f"train_{algo}_0.py").write_text(
            f"CONFIG = 'configs/{algo}/smoke.yaml'\nTASK = 'tasks/smoke_task.py'\n")
    (exp / "pipeline.py").write_text("BASE_MODEL = 'tiny:t'\nSTEPS = [{'id': 'train_ppo_0', 'type': 'train_ppo'}, "
                                     "{'id': 'train_spo_0', 'type': 'train_spo'}]\n")
    steps = {sj.step.id: sj for sj, _ in check(str(exp / "pipeline.py"), project=REPO).steps}
    ppo, spo = steps["train_ppo_0"], steps["train_spo_0"]
    assert ppo.script == "runners/ppo_run.py" and spo.script == "runners/spo_run.py"
    assert ppo.outputs == ["model/hf/train_ppo_0"] and "model.name_or_path=model/base/t" in ppo.args
    assert spo.outputs == ["model/hf/train_spo_0"] and "model.name_or_path=model/hf/train_ppo_0" in spo.args
    assert spo.args[:4] == ["--config", "configs/spo/smoke.yaml", "--task", "tasks/smoke_task.py"]
