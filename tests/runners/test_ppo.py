"""PPO (runners/ppo_run.py): learns the smoke task on CPU, a finished run stays finished, resume is exact, launch."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from .conftest import REPO, files_under, read_metrics, run_main
from runners.common.ppo import completion_mask, gae

ARGS = ("--config", "configs/ppo/smoke.yaml", "--task", "tasks/smoke_task.py")
TIMING = ("time", "tokens_per_s", "samples_per_s")


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_gae_matches_hand_computation():
    rewards, values = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]])
    # lam 1, gamma 1: the advantage is the return to go minus the value.
    assert torch.allclose(gae(rewards, values, 1.0, 1.0), torch.tensor([[0.5, 0.4, 0.3]]))
    # lam 0.5: A2 = 1 - 0.7; A1 = (0.7 - 0.6) + 0.5 A2; A0 = (0.6 - 0.5) + 0.5 A1
    assert torch.allclose(gae(rewards, values, 1.0, 0.5), torch.tensor([[0.225, 0.25, 0.3]]))


def test_completion_mask_stops_after_the_first_eos():
    mask, ended = completion_mask(torch.tensor([[5, 9, 7, 9], [5, 6, 7, 8]]), eos_id=9)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert ended.tolist() == [True, False]


def launch(pool, *args) -> subprocess.CompletedProcess:
    """The real `launch` CLI, local backend, with `pool`'s datapool and experiment (the `pool` fixture's)."""
    contract = ("DATAPOOL_ROOT", "EXPERIMENT", "EXPERIMENT_DIR", "CHECKPOINT_DIR")
    env = {k: v for k, v in os.environ.items() if k not in contract}
    env.update(LAUNCHER_HOME=str(pool.parent.parent.parent / "home"), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "launcher", "--experiment", pool.name, "--datapool", f"file://{pool.parent.parent}",
         *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def test_ppo_learns_through_launch_then_rerun_changes_nothing_then_extends(pool, capsys):
    proc = launch(pool, "runners/ppo_run.py", *ARGS)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "step 30/30" in log and "\r" not in log  # one line per step, no progress bars in the job's log

    rows = read_metrics(pool, "ppo-smoke")
    assert [r["step"] for r in rows] == list(range(1, 31))
    # The smoke config's shipped mixture (configs/data/posttrain/rlaif/ppo.yaml) gave the prompts.
    assert len((pool / "data/prepared/rlaif/ppo_smoke/train.jsonl").read_text().splitlines()) == 64
    first, last = [r["reward"] for r in rows[:10]], [r["reward"] for r in rows[-10:]]
    assert sum(last) / 10 > sum(first) / 10 + 0.3, (first, last)
    for key in ("loss", "policy_loss", "value_loss", "kl", "entropy", "reward", "rewards/a_reward", "learning_rate",
                "grad_norm", "tokens_per_s", "samples_per_s"):
        assert key in rows[-1], key
    assert rows[-1]["entropy"] < rows[0]["entropy"]  # the policy got surer of itself
    ckpt_dir = pool / "model" / "ppo_checkpoints" / "ppo-smoke"
    assert sorted(p.name for p in ckpt_dir.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-30"]
    assert json.loads((ckpt_dir / "checkpoint-30" / "trainer_state.json").read_text())["global_step"] == 30
    final = pool / "model" / "hf" / "ppo-smoke" / "model.safetensors"
    before, tree = digest(final), files_under(pool)

    # Re-run: finished means finished. No step, no write, the final model's bytes untouched.
    assert run_main("ppo_run", *ARGS) == 0
    assert "ppo-smoke already finished at step 30" in capsys.readouterr().out
    assert digest(final) == before and files_under(pool) == tree
    assert len(read_metrics(pool, "ppo-smoke")) == 30

    # A larger max_steps trains on from the newest checkpoint.
    assert run_main("ppo_run", *ARGS, "--set", "trainer.max_steps=32") == 0
    assert f"resuming from {ckpt_dir / 'checkpoint-30'}" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(pool, "ppo-smoke")][-3:] == [30, 31, 32]
    assert (ckpt_dir / "checkpoint-32" / "trainer_state.json").is_file() and digest(final) != before


def test_resume_continues_exactly_where_a_straight_run_goes(pool):
    """Weights, value head, optimizer, scheduler and sampling all come back: 2 + 2 steps == 4 steps."""
    common = (*ARGS, "--set", "trainer.save_steps=2", "--set", "trainer.kl_coef=0.05",
              "--set", "trainer.num_ppo_epochs=2", "--set", "trainer.num_mini_batches=2")
    assert run_main("ppo_run", *common, "--set", "run_name=straight", "--set", "trainer.max_steps=4") == 0
    assert run_main("ppo_run", *common, "--set", "run_name=split", "--set", "trainer.max_steps=2") == 0
    assert run_main("ppo_run", *common, "--set", "run_name=split", "--set", "trainer.max_steps=4") == 0
    straight, split = read_metrics(pool, "straight"), read_metrics(pool, "split")
    assert [r["step"] for r in split] == [1, 2, 3, 4]
    for a, b in zip(straight, split):
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
    assert straight[-1]["kl"] > 0  # the reference is in play, and it was not reset by the resume


def test_lora_policy_has_the_base_as_its_reference(pool):
    """With LoRA no frozen copy is made: the reference is the policy with its adapter switched off."""
    # data.mixture=null: the task's prompts, in the order this KL check was calibrated on (a one-sample KL
    # estimate can dip below 0 on another draw of prompts).
    assert run_main("ppo_run", *ARGS, "--set", "lora.enabled=true", "--set", "trainer.kl_coef=0.1",
                    "--set", "trainer.max_steps=2", "--set", "data.mixture=null") == 0
    rows = read_metrics(pool, "ppo-smoke")
    assert rows[0]["kl"] == 0 and rows[1]["kl"] > 0  # the adapter moved the policy away from its base
    ckpt = pool / "model" / "ppo_checkpoints" / "ppo-smoke" / "checkpoint-2"
    assert (ckpt / "adapter_model.safetensors").is_file() and (ckpt / "algo_state.pt").is_file()
    final = pool / "model" / "hf" / "ppo-smoke"
    assert (final / "model.safetensors").is_file() and not (final / "adapter_config.json").exists()  # merged


SHIPPED = sorted((REPO / "configs").glob("[ps]po/*.yaml"))


def test_configs_shipped():
    assert {f"{p.parent.name}/{p.name}" for p in SHIPPED} >= {"ppo/smoke.yaml", "ppo/arithmetic.yaml",
                                                               "spo/smoke.yaml", "spo/arithmetic.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_validates(path, tmp_path):
    """Sections, trainer keys and their cross-field rules, and the task section of the task the config names."""
    from runners.common.config import check_trainer_keys, load_config
    from runners.common.paths import run_paths
    from runners.common.ppo import PPOConfig
    from runners.common.spo import SPOConfig
    from runners.common.tasks import load_task, validate_task_section
    from runners.common.training import trainer_args

    config = load_config(path)
    cls = {"ppo": PPOConfig, "spo": SPOConfig}[path.parent.name]
    check_trainer_keys(config, cls)
    args = trainer_args(cls, config, run_paths(f"{path.parent.name}_run", config.run_name,
                                               {"DATAPOOL_ROOT": str(tmp_path), "EXPERIMENT": "t"}))
    assert args.max_steps == config.trainer["max_steps"]
    found = re.search(r"--task (tasks/\w+\.py)", path.read_text())
    validate_task_section(load_task(found.group(1) if found else "tasks/smoke_task.py", "rl"), config.task)


@pytest.mark.parametrize("override, expect", [
    ("trainer.kl_coeff=0.1", "unknown key 'trainer.kl_coeff' for PPOConfig (did you mean 'kl_coef'?)"),
    ("trainer.num_mini_batches=3",
     "trainer: per_device_train_batch_size (16) must be divisible by num_mini_batches (3)"),
    ("trainer.learning_rate=fast", "trainer: learning_rate must be a number (got 'fast')"),
    ("trainer.lr_scheduler_type=cosin", "trainer: cosin is not a valid SchedulerType"),
    ("trainer.use_vllm=true", "trainer.use_vllm: vllm is not usable here"),
    ("trainer.temperature=0", "trainer: temperature must be > 0"),
    ("trainer.output_dir=x", "'trainer.output_dir' is set by the runner"),
])
def test_bad_input_is_one_line_and_writes_nothing(pool, capsys, override, expect):
    assert run_main("ppo_run", *ARGS, "--set", override) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], errors
    assert files_under(pool.parent.parent) == []
