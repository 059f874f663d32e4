"""Reward models (runners/common/reward_model.py): `reward.model` scores completions for GRPO, PPO and SPO.

The reward model here is the tiny builder's (runners/common/tiny_model.py: a score head on the tiny policy's
trunk), trained in-test for a couple of seconds of plain torch to score the smoke task's "share of a" - so a test
can tell its scores from the task's own reward.
"""
from __future__ import annotations

import random

import pytest
import torch

from .conftest import files_under, read_metrics, run_main, train_rows
from runners.common.reward_model import RewardModelScorer
from runners.common.tiny_model import build_tiny_model, build_tiny_reward_model
from tasks import smoke_task

SMOKE = "tasks/smoke_task.py"
RM = "model/reward/tiny-rm"  # inside EXPERIMENT_DIR, as reward.model paths are


def make_reward_model(pool, train_steps: int = 80) -> RewardModelScorer:
    """The tiny base the smoke configs use (built as the runner would build it), a reward model on it, trained by
    regression to give a completion its share of "a" characters; saved at pool/RM. Returns its scorer."""
    base = build_tiny_model(smoke_task.get_corpus(None), pool / "model" / "base" / "tiny-smoke")
    out = build_tiny_reward_model(base, pool / RM)
    scorer = RewardModelScorer(str(out), batch_size=64, max_length=64, device="cpu")
    if not train_steps:
        return scorer
    tok, rng = scorer.tokenizer, random.Random(0)
    torch.manual_seed(0)
    # Completions like a sampling policy's: random tokens, each "a" with a probability drawn per completion.
    a_ids = [tok.convert_tokens_to_ids(t) for t in ("a", "Ġa")]
    others = [i for i in range(len(tok)) if i not in set(tok.all_special_ids)]

    def sample():
        p = rng.random()
        text = tok.decode([rng.choice(a_ids) if rng.random() < p else rng.choice(others)
                           for _ in range(rng.randint(1, 8))])
        return scorer.text(smoke_task._prompt(rng.randrange(6)), text), smoke_task.a_share(text)

    model = scorer.model.train().requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(train_steps):
        texts, targets = zip(*[sample() for _ in range(32)])
        enc = tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
        loss = ((model(**enc).logits[:, 0] - torch.tensor(targets)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().requires_grad_(False)
    model.save_pretrained(out)
    held_out = [sample() for _ in range(200)]
    scores = torch.tensor(scorer.score_texts([t for t, _ in held_out]))
    corr = torch.corrcoef(torch.stack([scores, torch.tensor([y for _, y in held_out])]))[0, 1]
    assert corr > 0.6, corr  # it learned the preference it is meant to have, before any policy trains on it
    return scorer


def test_grpo_on_a_trained_reward_model_alone_moves_the_policy(pool):
    """The reward model is the only reward (the task's a_reward weighs 0: computed and logged, not trained on):
    its score climbs, and so does the task's own reward it was trained to imitate."""
    make_reward_model(pool)
    assert run_main("rl_run", "--config", "configs/rl/smoke.yaml", "--task", SMOKE, "--set", "run_name=rm",
                    "--set", f"reward.model={RM}", "--set", "reward.weights.a_reward=0",
                    "--set", "trainer.max_steps=30", "--set", "trainer.save_steps=30") == 0
    rows = train_rows(read_metrics(pool, "rm"))
    assert [r["step"] for r in rows] == list(range(1, 31))
    rm, task = [r["rewards/reward_model/mean"] for r in rows], [r["rewards/a_reward/mean"] for r in rows]
    # Weight 0: the trained reward is the reward model's score alone.
    assert all(abs(r["reward"] - m) < 1e-5 for r, m in zip(rows, rm))
    assert sum(rm[-10:]) / 10 > sum(rm[:10]) / 10 + 0.3, rm
    assert sum(task[-10:]) / 10 > sum(task[:10]) / 10 + 0.3, task
    assert "kl" in rows[-1]  # the smoke config's small beta: a reference model, so KL is logged


def rollouts(pool, kind: str, run_name: str) -> list[dict]:
    folder = pool / "model" / f"{kind}_checkpoints" / run_name / "rollouts"
    return [torch.load(p) for p in sorted(folder.glob("rollout_*.pt"))]


@pytest.mark.parametrize("runner", ["ppo_run", "spo_run"])
def test_ppo_and_spo_train_on_what_the_reward_model_says(pool, runner):
    """Summed with the task's reward (weights 0.5 and 2): each saved rollout's per-function rewards are the reward
    model's own scores of those completions, the step's reward is their weighted sum, and the log says so."""
    scorer = make_reward_model(pool, train_steps=0)  # a random head scores too: all that counts is which scores
    kind = runner.removesuffix("_run")
    assert run_main(runner, "--config", f"configs/{kind}/smoke.yaml", "--task", SMOKE, "--set", "run_name=rm",
                    "--set", f"reward.model={RM}", "--set", "reward.weights.a_reward=0.5",
                    "--set", "reward.weights.reward_model=2", "--set", "reward.batch_size=5",
                    "--set", "trainer.max_steps=2", "--set", "trainer.save_steps=2",
                    "--set", "trainer.save_rollout_trajectories=true", "--eval_interval", "2") == 0
    every = read_metrics(pool, "rm")
    rows, evals = train_rows(every), [r for r in every if "eval_reward" in r]
    records = rollouts(pool, kind, "rm")
    assert len(records) == 2 == len(rows)
    for record, row in zip(records, rows):
        # The chat template puts the assistant's answer after the rendered prompt, closed by <|im_end|>.
        texts = [p + c + "<|im_end|>\n" for p, c in zip(record["prompts"], record["completions"])]
        expected = scorer.score_texts(texts)
        got = record["rewards_per_func"]["reward_model"]
        assert len(set(round(v, 4) for v in got)) > 1  # not a constant: the completions were told apart
        assert got == pytest.approx(expected, abs=1e-4)
        task = record["rewards_per_func"]["a_reward"]
        assert record["rewards"] == pytest.approx([0.5 * t + 2 * m for t, m in zip(task, got)], abs=1e-5)
        assert row["reward"] == pytest.approx(sum(record["rewards"]) / len(record["rewards"]), abs=1e-5)
        assert row["rewards/reward_model"] == pytest.approx(sum(got) / len(got), abs=1e-5)  # unweighted
        assert "kl" in row  # the smoke configs' small kl_coef / beta: there is a reference
    (ev,) = evals
    keys = {"ppo_run": ("eval_reward", "eval_policy_loss", "eval_value_loss", "eval_kl"),
            "spo_run": ("eval_reward", "eval_kl")}[runner]
    for key in keys + ("eval_rewards/reward_model",):
        assert key in ev, (key, sorted(ev))
    assert ev["eval_value_loss"] > 0 if runner == "ppo_run" else ev["eval_kl"] >= 0


def test_spo_logs_no_kl_without_a_reference(pool):
    assert run_main("spo_run", "--config", "configs/spo/smoke.yaml", "--task", SMOKE, "--set", "trainer.beta=0",
                    "--set", "trainer.max_steps=1") == 0
    (row,) = read_metrics(pool, "spo-smoke")
    assert "reward" in row and "kl" not in row


@pytest.mark.parametrize("runner, override, expect", [
    ("rl_run", f"reward.model={RM}", "reward.model: no model directory at {pool}/" + RM),
    ("ppo_run", "reward.model=/nowhere/rm", "reward.model: no model directory at /nowhere/rm"),
    ("spo_run", "reward.model=./rm", "reward.model: no model directory at {pool}/rm"),
    ("rl_run", "reward.weights.reward_model=1", "reward.weights.reward_model: there is no reward model"),
    ("sft_run", "reward.model=x/y", "reward: is read by rl_run.py, ppo_run.py and spo_run.py"),
    ("rl_run", "reward.batchsize=3", "unknown key 'reward.batchsize' (did you mean 'batch_size'?)"),
])
def test_bad_reward_section_is_one_line_and_writes_nothing(pool, capsys, runner, override, expect):
    config = {"sft_run": "configs/sft/smoke.yaml"}.get(runner, f"configs/{runner.removesuffix('_run')}/smoke.yaml")
    assert run_main(runner, "--config", config, "--task", SMOKE, "--set", override) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expect.format(pool=pool) in errors[0], errors
    assert files_under(pool.parent.parent) == []


def test_a_weight_for_no_reward_function_is_one_line(pool, capsys):
    """Known once the task's functions are: after the model is built, before the trainer is (no checkpoint)."""
    assert run_main("spo_run", "--config", "configs/spo/smoke.yaml", "--task", SMOKE,
                    "--set", "reward.weights.a_rewards=0") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == ["error: reward.weights: no reward function named 'a_rewards'; the rewards are a_reward"], errors
    assert not (pool / "model" / "spo_checkpoints").exists()


@pytest.mark.parametrize("runner", ["rl_run", "ppo_run", "spo_run"])
def test_a_mixture_scored_by_the_reward_model_needs_no_task(pool, runner):
    """The smoke configs' shipped mixture gives the prompts and reward.model the reward: no --task at all (the
    tiny base is already built, so nothing needs a task's text either)."""
    make_reward_model(pool, train_steps=0)
    kind = runner.removesuffix("_run")
    assert run_main(runner, "--config", f"configs/{kind}/smoke.yaml", "--set", "run_name=rm-alone",
                    "--set", f"reward.model={RM}", "--set", "trainer.max_steps=1", "--set", "trainer.save_steps=1") == 0
    (row,) = train_rows(read_metrics(pool, "rm-alone"))
    assert any("reward_model" in k for k in row), sorted(row)
    assert not any("a_reward" in k for k in row), sorted(row)  # no task: its reward function is not there


def test_a_mixture_without_a_reward_model_still_needs_the_tasks_rewards(pool, capsys):
    make_reward_model(pool, train_steps=0)
    assert run_main("rl_run", "--config", "configs/rl/smoke.yaml", "--set", "trainer.max_steps=1") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--task is required" in errors[0] and "get_reward_funcs" in errors[0], errors
