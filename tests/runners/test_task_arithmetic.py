"""Arithmetic: generated problems are right, exact match is exact, accuracy counts."""
from __future__ import annotations

from runners.common.config import RunConfig
from tasks import arithmetic_task as a


def test_problems_carry_correct_answers():
    for row in a.make_problems(a.TaskConfig(num_examples=50)):
        x, op, y = row["prompt"][-1]["content"][len("What is "):-1].split()
        assert str(a.OPS[op](int(x), int(y))) == row["answer"]


def test_exact_match_reward_and_accuracy():
    completions = ["<answer>12</answer>", "<answer> 12 </answer>", "12", "<answer>120</answer>", "<answer>-3</answer>"]
    answers = ["12", "12", "12", "12", "-3"]
    assert a.correct_reward(None, completions, answers) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert a.format_reward(None, completions) == [0.2, 0.2, 0.0, 0.2, 0.2]
    rows = [{"answer": x} for x in answers]
    metrics = a.compute_metrics(None, completions, rows, RunConfig(), None)
    assert metrics == {"accuracy": 0.6, "format_rate": 0.8, "n": 5}


def test_sft_and_dpo_pairs():
    config = RunConfig(task={"num_examples": 20, "ops": ["+"]})
    for row in a.get_sft_dataset(config, None):
        assert "+" in row["prompt"][-1]["content"]
    for row in a.get_dpo_dataset(config, None):
        assert a.parse_answer(row["chosen"][0]["content"]) != a.parse_answer(row["rejected"][0]["content"])
