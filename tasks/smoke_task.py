"""A task a tiny random model learns in seconds on CPU: answer with the letter "a".

Reward = share of the completion's characters that are "a". Implements every hook (sft, rl, dpo, eval) so CI
can smoke-test each runner against it.
"""
from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict

PROMPTS = ["Say a.", "Write the letter a.", "Only a, please.", "Reply with a.", "a?", "Give me a's."]
OTHER = "bcdefghijklmnopqrstuvwxyz"


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_examples: int = 64


def _opts(config) -> TaskConfig:
    return TaskConfig.model_validate(config.task)


def _text(completion) -> str:
    # Conversational datasets give [{"role": "assistant", "content": ...}]; plain ones give a string.
    return completion if isinstance(completion, str) else completion[-1]["content"]


def a_share(text: str) -> float:
    return sum(ch == "a" for ch in text) / len(text) if text else 0.0


def _prompt(i: int) -> list[dict]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


def get_corpus(config) -> list[str]:
    rng = random.Random(0)
    junk = [" ".join(rng.choice(OTHER) * rng.randint(1, 3) for _ in range(8)) for _ in range(50)]
    return PROMPTS * 5 + ["a a a aa aaa a"] * 20 + junk


def get_rl_dataset(config):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": _prompt(i)} for i in range(_opts(config).num_examples)])


def get_reward_funcs(config, tokenizer):
    def a_reward(prompts, completions, **kwargs) -> list[float]:
        return [a_share(_text(c)) for c in completions]

    return [a_reward]


def get_sft_dataset(config, tokenizer):
    from datasets import Dataset

    rng = random.Random(config.seed)
    rows = [
        {"messages": _prompt(i) + [{"role": "assistant", "content": " ".join(["a"] * rng.randint(2, 6))}]}
        for i in range(_opts(config).num_examples)
    ]
    return Dataset.from_list(rows)


def get_sft_eval_dataset(config, tokenizer):
    from datasets import Dataset

    return Dataset.from_list(
        [{"messages": _prompt(i) + [{"role": "assistant", "content": "a a a"}]} for i in range(8)]
    )


def get_dpo_dataset(config, tokenizer):
    from datasets import Dataset

    rng = random.Random(config.seed)
    rows = []
    for i in range(_opts(config).num_examples):
        n = rng.randint(2, 5)
        rows.append({
            "prompt": _prompt(i),
            "chosen": [{"role": "assistant", "content": " ".join(["a"] * n)}],
            "rejected": [{"role": "assistant", "content": " ".join(rng.choice(OTHER) for _ in range(n))}],
        })
    return Dataset.from_list(rows)


def get_eval_dataset(config):
    return [{"prompt": _prompt(i)} for i in range(min(_opts(config).num_examples, 16))]


def compute_metrics(prompts, completions, dataset_rows, config, tokenizer) -> dict:
    shares = [a_share(_text(c)) for c in completions]
    return {"a_share": sum(shares) / max(len(shares), 1), "n": len(shares)}
