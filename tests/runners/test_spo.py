"""SPO (runners/spo_run.py): the tracker's rules, learning the smoke task through launch, SIGTERM + exact resume."""
from __future__ import annotations

import math

import pytest
import torch

from .conftest import files_under, read_metrics, run_main
from .test_ppo import TIMING, launch
from runners.common.spo import SPOConfig, ValueTracker

ARGS = ("--config", "configs/spo/smoke.yaml", "--task", "tasks/smoke_task.py")


def test_tracker_forgets_faster_when_the_policy_drifts():
    cfg = SPOConfig(rho_min=0.5, rho_max=0.96, d_half=0.06, rho_const=0.9)
    tracker = ValueTracker(3, cfg)
    assert tracker.values(torch.tensor([0, 1, 2])).tolist() == [0.5, 0.5, 0.5]  # prior: a coin flip
    idx = torch.tensor([0, 1, 2])
    # First visit: no drift known yet, rho_const.
    assert torch.allclose(tracker.update(idx, torch.tensor([1.0, 1.0, 0.0]), torch.tensor([-1.0, -1.0, -1.0])),
                          torch.full((3,), 0.9))
    # No drift -> rho_max; drift of d_half -> 1/2 (= rho_min here); far drift -> clipped at rho_min.
    rho = tracker.rho(idx, torch.tensor([-1.0, -1.06, -3.0]))
    assert torch.allclose(rho, torch.tensor([0.96, 0.5, 0.5]))
    alpha0, beta0 = 0.9 * 1.0 + 1.0, 0.9 * 1.0  # prior weight 1 / (1 - rho_min) = 2, split evenly
    assert math.isclose(tracker.values(torch.tensor([0]))[0].item(), alpha0 / (alpha0 + beta0), rel_tol=1e-6)
    # Prompts the policy solves sometimes weigh most; a settled one still keeps epsilon.
    tracker.alpha[:] = torch.tensor([5.0, 50.0, 0.0])
    tracker.beta[:] = torch.tensor([5.0, 0.0, 50.0])
    p = tracker.priorities()
    assert p[0] > p[1]
    assert torch.allclose(p[1:], torch.full((2,), cfg.priority_epsilon))


def test_spo_learns_through_launch_with_an_eval_loop(pool):
    proc = launch(pool, "runners/spo_run.py", *ARGS, "--eval_interval", "15")  # the seed's spelling
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "step 30/30" in log and "eval step 15/30  reward" in log and "\r" not in log

    every = read_metrics(pool, "spo-smoke")
    rows, evals = [r for r in every if "reward" in r], [r for r in every if "eval_reward" in r]
    assert [r["step"] for r in rows] == list(range(1, 31))
    # The smoke config's shipped mixture (configs/data/posttrain/rlaif/spo.yaml) gave the prompts.
    assert len((pool / "data/prepared/rlaif/spo_smoke/train.jsonl").read_text().splitlines()) == 64
    # Held-out prompts (10% of the mixture's 64: it has no get_rl_eval_dataset) score better after training on.
    assert [r["step"] for r in evals] == [15, 30] and evals[1]["eval_reward"] > evals[0]["eval_reward"]
    first, last = [r["reward"] for r in rows[:10]], [r["reward"] for r in rows[-10:]]
    assert sum(last) / 10 > sum(first) / 10 + 0.3, (first, last)
    for key in ("loss", "policy_loss", "kl", "entropy", "reward", "baseline", "rho", "learning_rate", "grad_norm",
                "tokens_per_s", "samples_per_s"):
        assert key in rows[-1], key
    # The tracker followed the rewards up: late baselines are above the 0.5 prior's early pull-down.
    assert rows[-1]["baseline"] > min(r["baseline"] for r in rows[:10])
    state = torch.load(pool / "model" / "spo_checkpoints" / "spo-smoke" / "checkpoint-30" / "algo_state.pt",
                       weights_only=True)
    tracker = state["tracker"]
    assert tracker["alpha"].shape == (58,)  # one Beta per training prompt
    assert (~torch.isnan(tracker["last_logp"])).sum() > 29  # most prompts were drawn and remembered
    assert (pool / "model" / "hf" / "spo-smoke" / "model.safetensors").is_file()


KILLER = '''
import os, signal
from tasks.smoke_task import *  # noqa: F401,F403 - every hook of the smoke task
from tasks import smoke_task

CALLS = [0]


def get_reward_funcs(config, tokenizer):
    (inner,) = smoke_task.get_reward_funcs(config, tokenizer)

    def a_reward(prompts, completions, **columns):
        CALLS[0] += 1
        if CALLS[0] == {kill_at}:
            os.kill(os.getpid(), signal.SIGTERM)  # as `launch down` or a spot notice would, mid-step
        return inner(prompts, completions, **columns)

    return [a_reward]
'''


def test_sigterm_then_resume_matches_a_straight_run(pool, tmp_path, capsys):
    """Tracker, sampler, optimizer and weights all come back from the SIGTERM checkpoint: 2 + 2 steps == 4."""
    killer = tmp_path / "killer_task.py"
    killer.write_text(KILLER.replace("{kill_at}", "2"))
    common = ("--config", "configs/spo/smoke.yaml", "--set", "trainer.max_steps=4", "--set", "trainer.save_steps=100",
              "--set", "trainer.beta=0.05", "--set", "trainer.num_mini_batches=2")
    assert run_main("spo_run", *common, "--task", "tasks/smoke_task.py", "--set", "run_name=straight") == 0
    assert run_main("spo_run", *common, "--task", str(killer), "--set", "run_name=split") == 143
    ckpts = pool / "model" / "spo_checkpoints" / "split"
    assert [p.name for p in ckpts.glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (pool / "model" / "hf" / "split").exists()  # no final model from a cut-short run
    assert "checkpoint saved at step 2; exiting 143" in capsys.readouterr().out

    assert run_main("spo_run", *common, "--task", "tasks/smoke_task.py", "--set", "run_name=split") == 0
    straight, split = read_metrics(pool, "straight"), read_metrics(pool, "split")
    assert [r["step"] for r in split] == [1, 2, 3, 4]
    for a, b in zip(straight, split):
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
    assert straight[-1]["kl"] > 0

    # The tracker belongs to the prompts it tracked: another dataset cannot resume it (one line, exit 2).
    capsys.readouterr()
    assert run_main("spo_run", *common, "--task", "tasks/smoke_task.py", "--set", "run_name=split",
                    "--set", "trainer.max_steps=6", "--set", "task.num_examples=32", "--set", "data.mixture=null") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "value tracker holds 64 prompts, the dataset has 32" in errors[0], errors


@pytest.mark.parametrize("override, expect", [
    ("trainer.reward_range=[1, 0]", "trainer: reward_range must be [low, high] with high > low"),
    ("trainer.rho_mode=adaptive", "trainer: rho_mode must be kl or constant"),
    ("trainer.kl_coef=0.1", "unknown key 'trainer.kl_coef' for SPOConfig"),
    ("trainer.priority_epsilon=0", "trainer: priority_epsilon must be positive"),
])
def test_bad_input_is_one_line_and_writes_nothing(pool, capsys, override, expect):
    assert run_main("spo_run", *ARGS, "--set", override) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], errors
    assert files_under(pool.parent.parent) == []
