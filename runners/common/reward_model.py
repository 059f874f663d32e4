"""Reward models: a sequence-classification model that scores completions, for GRPO, PPO and SPO.

    reward:
      model: model/reward/my-rm      # hub id or local dir (relative = inside EXPERIMENT_DIR)
      batch_size: 16                 # completions per forward pass
      max_length: 512                # tokens of prompt + completion; longer ones lose their start, not their end
      device: auto                   # auto: CUDA when there is one (this process's LOCAL_RANK), else cpu
      weights: {reward_model: 1.0, a_reward: 0.0}   # per reward function; unnamed ones weigh 1.0

The model becomes one more reward function, named `reward_model`, beside the task's (`get_reward_funcs`): the
step's reward is the weighted sum of them all. Weight 0 keeps a function computed and logged (`rewards/<name>`)
but out of the reward, so `{a_reward: 0}` trains on the reward model alone while still showing the task's score.
GRPO gets the weights as TRL's `reward_weights`; PPO and SPO's `score()` (runners/common/ppo.py) reads them from
the list it is given (`RewardFuncs.weights`).

The score of one completion is the model's single logit (num_labels: 1) on the prompt and completion together:
chat prompts go through the reward model's own chat template (prompt messages + the assistant's answer), plain
prompts are the prompt text followed by the completion.
"""
from __future__ import annotations

import os
from pathlib import Path

from runners.common.errors import RunnerError

NAME = "reward_model"  # the scorer's reward-function name: `rewards/reward_model` in the logs, a key of weights
USES_REWARDS = ("rl", "ppo", "spo")  # recipe kinds whose trainer takes reward functions


class RewardFuncs(list):
    """The reward functions, plus the weight of each (same order); a plain list weighs each 1.0."""

    def __init__(self, funcs, weights=None):
        super().__init__(funcs)
        self.weights = [1.0] * len(self) if weights is None else [float(w) for w in weights]


def func_name(func) -> str:
    return getattr(func, "__name__", None) or type(func).__name__


def reward_source(config, exp_dir: Path) -> str | None:
    """The reward model's path or hub id, checked without loading anything: a local dir must exist and hold a
    config.json. None when reward.model is unset."""
    from runners.common.paths import looks_like_hub_id, resolve_in_experiment

    name = config.reward.model
    if not name:
        return None
    local = resolve_in_experiment(name, exp_dir)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise RunnerError(f"reward.model: {local} has no config.json; is it a model directory?")
        return str(local)
    if looks_like_hub_id(name) and not Path(name).expanduser().is_absolute():
        return name
    raise RunnerError(f"reward.model: no model directory at {local} (relative paths are inside EXPERIMENT_DIR)")


def check_reward_section(ctx) -> None:
    """Called with the other input checks, before any model is built or anything written."""
    config = ctx.config
    section = getattr(config, "reward", None)
    if section is None:
        return
    if ctx.recipe.kind not in USES_REWARDS:
        if section.model or section.weights:
            raise RunnerError(f"reward: is read by rl_run.py, ppo_run.py and spo_run.py; "
                              f"{ctx.recipe.script_stem}.py has no rewards to score")
        return
    ctx.extra["reward_source"] = reward_source(config, ctx.paths.experiment_dir)
    if ctx.extra["reward_source"] is None and NAME in section.weights:
        raise RunnerError(f"reward.weights.{NAME}: there is no reward model; set reward.model")
    if (section.model or section.weights) and getattr(ctx.args, "reward_weights", None) is not None:
        raise RunnerError("trainer.reward_weights: with reward.model or reward.weights, weigh the rewards with "
                          f"reward.weights only (by name: the task's reward functions and {NAME})")


def _device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # each process scores on its own GPU
    return "cpu"


class RewardModelScorer:
    """A reward function (GRPO's contract: f(prompts, completions, **columns) -> list[float]) backed by a
    sequence-classification model, frozen, in eval mode, on its own device."""

    __name__ = NAME

    def __init__(self, source: str, batch_size: int = 16, max_length: int = 512, device: str = "auto"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = _device(device)
        dtype = torch.bfloat16 if self.device.startswith("cuda") and torch.cuda.is_bf16_supported() \
            else torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForSequenceClassification.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise RunnerError(f"reward.model: cannot load {source!r} as a sequence-classification model: "
                              f"{str(exc).splitlines()[0]}") from None
        if self.model.config.num_labels != 1:
            raise RunnerError(f"reward.model: {source} has {self.model.config.num_labels} outputs; a reward model "
                              "has one (num_labels: 1)")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:  # the model finds each row's last token by the pad id
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        # The completion is what is judged: a row too long for max_length loses the start of its prompt instead.
        self.tokenizer.truncation_side = "left"
        self.model.to(self.device).eval().requires_grad_(False)
        self.batch_size, self.max_length = batch_size, max_length

    def text(self, prompt, completion) -> str:
        if isinstance(prompt, str):
            return prompt + (completion if isinstance(completion, str) else completion[-1]["content"])
        messages = list(prompt) + (completion if isinstance(completion, list)
                                   else [{"role": "assistant", "content": completion}])
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)  # a model without a template

    def score_texts(self, texts: list[str]) -> list[float]:
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                     truncation=True, max_length=self.max_length,
                                     add_special_tokens=False).to(self.device)
                out.extend(self.model(**enc).logits[:, 0].float().tolist())
        return out

    def __call__(self, prompts, completions, **columns) -> list[float]:
        return self.score_texts([self.text(p, c) for p, c in zip(prompts, completions)])


def reward_funcs(ctx) -> RewardFuncs:
    """The task's reward functions, plus the reward model when reward.model is set, with reward.weights."""
    config = ctx.config
    # No task (a mixture's prompts scored by reward.model alone), or one without rewards: the model's score only.
    task_rewards = getattr(ctx.task, "get_reward_funcs", None)
    funcs = list(task_rewards(config, ctx.tokenizer)) if task_rewards else []
    source = ctx.extra.get("reward_source")
    section = config.reward
    if source is not None:
        funcs.append(RewardModelScorer(source, section.batch_size, section.max_length, section.device))
    names = [func_name(f) for f in funcs]
    unknown = [k for k in section.weights if k not in names]
    if unknown:
        raise RunnerError(f"reward.weights: no reward function named {unknown[0]!r}; the rewards are "
                          f"{', '.join(names)}")
    return RewardFuncs(funcs, [section.weights.get(n, 1.0) for n in names])
