"""trainer.save_rollout_trajectories (runners/common/rollouts.py) for GRPO, PPO and SPO: real tiny CPU runs.

Each run is the smoke config cut to a couple of steps; files land in CHECKPOINT_DIR/<run_name>/<subdir>/.
"""
from __future__ import annotations

import math

import pytest
import torch

from .conftest import files_under, read_metrics, run_main, train_rows
from runners.common.rollouts import DEFAULT_PATTERN, RolloutSaver, check_rollout_trajectory_args

SMOKE = "tasks/smoke_task.py"
RUNNERS = {  # runner -> (config, checkpoint folder, algorithm name in the file)
    "rl_run": ("configs/rl/smoke.yaml", "rl_checkpoints", "grpo"),
    "ppo_run": ("configs/ppo/smoke.yaml", "ppo_checkpoints", "ppo"),
    "spo_run": ("configs/spo/smoke.yaml", "spo_checkpoints", "spo"),
}
SAVE = ("--set", "trainer.save_rollout_trajectories=true")


def args(runner: str, run_name: str, steps: int, *extra: str) -> tuple:
    return ("--config", RUNNERS[runner][0], "--task", SMOKE, "--set", f"run_name={run_name}",
            "--set", f"trainer.max_steps={steps}", "--set", f"trainer.save_steps={steps}", *extra)


def load(path) -> dict:
    return torch.load(path)  # weights_only=True by default: plain lists, numbers and tensors only


def check_record(record: dict, step: int, algorithm: str, logged_reward: float) -> None:
    assert record["step"] == step and record["rollout_id"] == step and record["algorithm"] == algorithm
    prompts, completions, rewards = record["prompts"], record["completions"], record["rewards"]
    assert len(prompts) == len(completions) == len(rewards) > 0
    assert all(isinstance(p, str) and p for p in prompts) and all(isinstance(c, str) for c in completions)
    assert any(completions)  # sampled text, not all empty
    assert all(isinstance(r, float) for r in rewards)
    advantages = record["advantages"]
    assert isinstance(advantages, torch.Tensor) and advantages.shape[0] == len(completions)
    assert torch.isfinite(advantages).all()
    # The file holds what the step trained on: its rewards average to the reward the step logged.
    assert math.isclose(sum(rewards) / len(rewards), logged_reward, rel_tol=1e-4, abs_tol=1e-6)
    # The smoke task has one reward function; its values are the rewards.
    assert list(record["rewards_per_func"]) == ["a_reward"]
    assert record["rewards_per_func"]["a_reward"] == pytest.approx(rewards)


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_each_step_writes_one_rollout_file_and_none_without_the_flag(pool, runner):
    _, folder, algorithm = RUNNERS[runner]
    assert run_main(runner, *args(runner, "traj", 2), *SAVE) == 0
    run_dir = pool / "model" / folder / "traj"
    rollouts = run_dir / "rollouts"
    assert sorted(p.name for p in rollouts.iterdir()) == ["rollout_00000001.pt", "rollout_00000002.pt"]  # no temps
    assert (run_dir / "checkpoint-2" / "trainer_state.json").is_file()  # side by side with the checkpoints
    logged = {r["step"]: r["reward"] for r in train_rows(read_metrics(pool, "traj"))}
    for step in (1, 2):
        record = load(rollouts / DEFAULT_PATTERN.format(rollout_id=step))
        check_record(record, step, algorithm, logged[step])
        advantages = record["advantages"]
        if algorithm == "grpo":  # group-relative: each prompt's num_generations completions, centred
            groups = advantages.view(-1, record["num_generations"])
            assert torch.allclose(groups.sum(dim=1), torch.zeros(groups.size(0)), atol=1e-4)
            assert len(set(record["prompts"][:record["num_generations"]])) == 1  # one prompt per group
        elif algorithm == "ppo":  # per token, zero past each completion's end
            mask = record["completion_mask"]
            assert advantages.shape == mask.shape and (advantages * (1 - mask)).abs().max() == 0
        else:  # SPO: one advantage per completion, against the tracker's baseline
            assert advantages.dim() == 1 and record["baseline"].shape == advantages.shape

    assert run_main(runner, *args(runner, "plain", 1)) == 0
    plain = pool / "model" / folder / "plain"
    assert (plain / "checkpoint-1").is_dir() and not any("rollout" in f for f in files_under(plain))


@pytest.mark.parametrize("runner", ["rl_run", "ppo_run"])
def test_chat_prompts_are_saved_as_the_model_saw_them(pool, runner):
    """Arithmetic has chat prompts and two reward functions: prompts rendered with the chat template, completions
    as text, rewards the sum of the functions'."""
    # data.mixture=null: the arithmetic task's own chat prompts, not the smoke config's shipped mixture.
    assert run_main(runner, "--config", RUNNERS[runner][0], "--task", "tasks/arithmetic_task.py", *SAVE,
                    "--set", "data.mixture=null", "--set", "model.name_or_path=tiny-arithmetic",
                    "--set", "task.num_examples=16",
                    "--set", "run_name=chat", "--set", "trainer.max_steps=1") == 0
    record = load(pool / "model" / RUNNERS[runner][1] / "chat" / "rollouts" / DEFAULT_PATTERN.format(rollout_id=1))
    assert all(p.startswith("<|im_start|>system") and p.endswith("<|im_start|>assistant\n") for p in record["prompts"])
    assert all(isinstance(c, str) for c in record["completions"])
    per_func = record["rewards_per_func"]
    assert sorted(per_func) == ["correct_reward", "format_reward"]
    assert record["rewards"] == pytest.approx([a + b for a, b in zip(*per_func.values())])


def test_subdir_and_pattern_follow_checkpoint_dir(pool, monkeypatch, tmp_path):
    """Relative to CHECKPOINT_DIR/<run_name> wherever that is; the pattern names the files."""
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    assert run_main("spo_run", *args("spo_run", "custom", 2), *SAVE,
                    "--set", "trainer.rollout_trajectory_subdir=traj/spo",
                    "--set", "trainer.rollout_trajectory_pattern=step-{rollout_id:03d}.rollout") == 0
    folder = tmp_path / "ckpts" / "custom" / "traj" / "spo"
    assert sorted(p.name for p in folder.iterdir()) == ["step-001.rollout", "step-002.rollout"]
    assert load(folder / "step-002.rollout")["step"] == 2


def test_grpo_with_several_generation_rounds_per_step_counts_rounds_across_a_resume(pool):
    """generation_batch_size = one micro-batch and 2 of them per step: two rounds a step, ids 1..4 in 2 steps,
    and the count goes on where it was after a resume (step 1, then extended to step 2)."""
    several = ("--set", "trainer.gradient_accumulation_steps=2", "--set", "trainer.generation_batch_size=8")
    assert run_main("rl_run", *args("rl_run", "rounds", 1), *SAVE, *several) == 0
    assert run_main("rl_run", *args("rl_run", "rounds", 2), *SAVE, *several) == 0
    folder = pool / "model" / "rl_checkpoints" / "rounds" / "rollouts"
    records = [load(folder / DEFAULT_PATTERN.format(rollout_id=i)) for i in (1, 2, 3, 4)]
    assert sorted(p.name for p in folder.iterdir()) == [DEFAULT_PATTERN.format(rollout_id=i) for i in (1, 2, 3, 4)]
    assert [(r["rollout_id"], r["step"]) for r in records] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert all(len(r["completions"]) == len(r["rewards"]) == 8 for r in records)


BAD = [
    ("trainer.rollout_trajectory_pattern=rollouts/{rollout_id}.pt", "rollout_trajectory_pattern", "without '/'"),
    ("trainer.rollout_trajectory_pattern=rollout_{step}.pt", "rollout_trajectory_pattern",
     "does not format with rollout_id=0"),
    ("trainer.rollout_trajectory_pattern=rollout.pt", "rollout_trajectory_pattern", "does not use {rollout_id}"),
    ("trainer.rollout_trajectory_subdir=/tmp/rollouts", "rollout_trajectory_subdir", "must be a relative path"),
]


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("override, key, expect", BAD, ids=[b[0].split("=", 1)[1] for b in BAD])
def test_bad_setting_is_one_config_error_and_writes_nothing(pool, capsys, runner, override, key, expect):
    assert run_main(runner, *args(runner, "bad", 2), *SAVE, "--set", override) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: trainer: {key}") and expect in errors[0], errors
    assert files_under(pool.parent.parent) == []


@pytest.mark.parametrize("subdir, pattern, expect", [
    ("rollouts", "{rollout_id:s}.pt", "does not format"),
    ("rollouts", "{}.pt", "does not format"),
    ("rollouts", ".r{rollout_id}.pt", "starts with '.'"),
    ("../elsewhere", DEFAULT_PATTERN, "no '..'"),
    ("checkpoint-9", DEFAULT_PATTERN, "taken for a checkpoint"),
    ("~/rollouts", DEFAULT_PATTERN, "relative path"),
])
def test_checks_refuse(subdir, pattern, expect):
    with pytest.raises(ValueError) as err:
        check_rollout_trajectory_args(True, subdir, pattern)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_saver_writes_atomically_and_overwrites_the_same_id(tmp_path):
    check_rollout_trajectory_args(False, "rollouts", DEFAULT_PATTERN)  # the defaults pass
    saver = RolloutSaver(tmp_path / "r", "x{rollout_id}.pt")
    saver.save(3, prompts=["p"], completions=["c"], rewards=[1.0], advantages=torch.ones(1), step=3)
    path = saver.save(3, prompts=["p"], completions=["d"], rewards=[0.5], advantages=torch.zeros(1), step=3)
    assert path == tmp_path / "r" / "x3.pt" and [p.name for p in path.parent.iterdir()] == ["x3.pt"]
    assert load(path)["completions"] == ["d"] and load(path)["rollout_id"] == 3
