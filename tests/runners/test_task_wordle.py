"""Wordle: the game's feedback rules (duplicate letters included), consistency, rewards, datasets."""
from __future__ import annotations

import pytest

from runners.common.config import RunConfig
from tasks import wordle_task as w


@pytest.mark.parametrize("secret, guess, marks", [
    ("crane", "crane", "GGGGG"),
    ("crane", "moist", "XXXXX"),
    ("crane", "nacre", "YYYYG"),
    # One "e" in the secret: only the green one counts; the other "e"s are gray.
    ("crane", "eerie", "XXYXG"),
    # Two "b"s in the secret, guess has two: one green, one yellow.
    ("abbey", "babes", "YYGGX"),
    # Three "e"s guessed, secret has two (one green): the first free "e" is yellow, the last gray.
    ("speed", "geese", "XYGYX"),
    # Guess repeats a letter the secret has once, in a green spot: the extra copy is gray, not yellow.
    ("robin", "bobby", "XGGXX"),
    # Secret has two "l"s, guess has one in the wrong spot: yellow.
    ("hello", "lunar", "YXXXX"),
    # A yellow earlier in the word does not steal the letter from a later green.
    ("title", "ttttt", "GXGXX"),
    ("apple", "paper", "YYGYX"),
])
def test_feedback_rules(secret, guess, marks):
    assert w.feedback(secret, guess) == marks


def test_feedback_is_case_blind_and_wants_five_letters():
    assert w.feedback("CRANE", "crane") == "GGGGG"
    with pytest.raises(ValueError):
        w.feedback("crane", "cran")


def test_consistency():
    history = [("crane", w.feedback("speed", "crane")), ("moist", w.feedback("speed", "moist"))]
    assert w.consistent("speed", history)
    assert not w.consistent("crane", history)
    assert w.consistent("anything"[:5], [])


def test_rewards_score_format_consistency_and_solving():
    history = [["crane", w.feedback("smile", "crane")]]
    completions = ["<guess>smile</guess>", "<guess>crane</guess>", "smile", "<guess>smi</guess>", "<guess>SLICE</guess>"]
    assert w.format_reward(None, completions) == [1.0, 1.0, 0.0, 0.3, 1.0]
    cons = w.consistency_reward(None, completions, history=[history] * 5)
    assert cons[0] == 1.0 and cons[1] == 0.0 and cons[2] == 0.0 and cons[3] == 0.0
    assert cons[4] == (1.0 if w.consistent("slice", w._history(history)) else 0.0) * 1.0
    assert w.solved_reward(None, completions, secret=["smile"] * 5) == [1.0, 0, 0, 0, 0]
    # Chat completions (what GRPO passes for chat prompts) score the same.
    assert w.format_reward(None, [[{"role": "assistant", "content": "<guess>smile</guess>"}]]) == [1.0]


def test_datasets_are_sound():
    config = RunConfig(task={"num_examples": 40})
    games = w.make_games(w.TaskConfig(num_examples=40))
    assert all(w.consistent(g["secret"], w._history(g["history"])) for g in games)
    assert any(g["history"] for g in games) and all(len(g["history"]) <= 3 for g in games)
    sft = w.get_sft_dataset(config, None)
    for row in sft:
        games_row = row["prompt"][-1]["content"]
        assert w.parse_guess(row["completion"][0]["content"]) in w.WORD_SET
        assert games_row
    dpo = w.get_dpo_dataset(config, None)
    for row, game in zip(dpo, w.make_games(w.TaskConfig(num_examples=40), salt=2)):
        h = w._history(game["history"])
        assert w.consistent(w.parse_guess(row["chosen"][0]["content"]), h)
        assert not w.consistent(w.parse_guess(row["rejected"][0]["content"]), h)
        assert h or w.format_reward(None, [row["rejected"][0]["content"]]) == [0.3]
    metrics = w.compute_metrics(None, ["<guess>crane</guess>"] * 40, games, config, None)
    assert set(metrics) == {"format_rate", "valid_word_rate", "consistent_rate", "solve_rate", "n"}
    assert metrics["format_rate"] == 1.0 and metrics["n"] == 40
