"""Arithmetic: generated problems "What is 12 + 7?", answered as <answer>19</answer>; exact match scores.

Hooks: rl (exact-match + format rewards), sft, dpo, eval (accuracy).
"""
from __future__ import annotations

import random
import re

from pydantic import BaseModel, ConfigDict, Field

ANSWER_RE = re.compile(r"<answer>\s*(-?\d+)\s*</answer>")
SYSTEM = "Solve the problem. Reply with only the result as <answer>NUMBER</answer>."
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_examples: int = Field(1000, ge=1)
    max_operand: int = Field(99, ge=1)
    ops: list[str] = ["+", "-", "*"]
    seed: int = 0


def _opts(config) -> TaskConfig:
    opts = TaskConfig.model_validate(config.task)
    bad = [o for o in opts.ops if o not in OPS]
    if bad:
        raise ValueError(f"task.ops: unknown {bad}; choose from {list(OPS)}")
    return opts


def _text(completion) -> str:
    return completion if isinstance(completion, str) else completion[-1]["content"]


def parse_answer(text: str) -> int | None:
    found = ANSWER_RE.findall(text)
    return int(found[-1]) if found else None


def make_problems(opts: TaskConfig, salt: int = 0) -> list[dict]:
    rng = random.Random(opts.seed * 1000 + salt)
    rows = []
    for _ in range(opts.num_examples):
        a, b, op = rng.randint(0, opts.max_operand), rng.randint(0, opts.max_operand), rng.choice(opts.ops)
        rows.append({
            "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"What is {a} {op} {b}?"}],
            "answer": str(OPS[op](a, b)),
        })
    return rows


def correct_reward(prompts, completions, answer, **kwargs) -> list[float]:
    return [float(str(parse_answer(_text(c))) == a) for c, a in zip(completions, answer)]


def format_reward(prompts, completions, **kwargs) -> list[float]:
    return [0.2 if parse_answer(_text(c)) is not None else 0.0 for c in completions]


def get_corpus(config) -> list[str]:
    rows = make_problems(_opts(config))[:300]
    return [SYSTEM] + [r["prompt"][-1]["content"] + f" <answer>{r['answer']}</answer>" for r in rows]


def get_rl_dataset(config):
    from datasets import Dataset

    return Dataset.from_list(make_problems(_opts(config)))


def get_reward_funcs(config, tokenizer):
    return [correct_reward, format_reward]


def get_sft_dataset(config, tokenizer):
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": r["prompt"], "completion": [{"role": "assistant", "content": f"<answer>{r['answer']}</answer>"}]}
        for r in make_problems(_opts(config), salt=1)
    ])


def get_dpo_dataset(config, tokenizer):
    from datasets import Dataset

    rng = random.Random(_opts(config).seed)
    rows = []
    for r in make_problems(_opts(config), salt=2):
        wrong = int(r["answer"]) + rng.choice([-10, -2, -1, 1, 2, 10])
        rows.append({
            "prompt": r["prompt"],
            "chosen": [{"role": "assistant", "content": f"<answer>{r['answer']}</answer>"}],
            "rejected": [{"role": "assistant", "content": f"<answer>{wrong}</answer>"}],
        })
    return Dataset.from_list(rows)


def get_eval_dataset(config):
    return make_problems(_opts(config), salt=3)


def compute_metrics(prompts, completions, dataset_rows, config, tokenizer) -> dict:
    n = max(len(completions), 1)
    answers = [r["answer"] for r in dataset_rows]
    return {
        "accuracy": sum(correct_reward(prompts, completions, answers)) / n,
        "format_rate": sum(f > 0 for f in format_reward(prompts, completions)) / n,
        "n": len(completions),
    }
