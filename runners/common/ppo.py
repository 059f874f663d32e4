"""PPO for a causal LM, compact (TRL 1.16 ships no PPOTrainer), plus the rollout code SPO shares.

One step, top to bottom:
  1. rollout: sample one completion per prompt (vLLM on CUDA when present, else transformers' generate)
  2. score:   the task's reward functions, summed (GRPO's contract: f(prompts, completions, **columns))
  3. measure: old log-probs and values (policy + value head), reference log-probs (frozen copy of the start)
  4. credit:  per-token reward = -kl_coef * (logp - ref_logp), plus the score on the last token; GAE; whiten
  5. learn:   num_ppo_epochs x num_mini_batches of clipped policy loss + vf_coef * clipped value loss

The value head is a linear layer on the policy's last hidden state (one trunk, no second model in memory).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from runners.common.rollouts import RolloutTrajectoryArgs


def _plain(value, kind) -> bool:
    return isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))


@dataclass
class RolloutConfig(RolloutTrajectoryArgs, TrainingArguments):
    """`trainer:` of ppo_run.py / spo_run.py: transformers' TrainingArguments (max_steps, learning_rate,
    lr_scheduler_type, warmup_steps, max_grad_norm, logging_steps, save_steps, save_total_limit, ...) plus these,
    and the rollout-saving keys (runners/common/rollouts.py). per_device_train_batch_size is prompts per step, one
    completion each."""

    learning_rate: float = 1e-6
    max_steps: int = 100
    num_ppo_epochs: int = 1  # passes over each rollout batch
    num_mini_batches: int = 1  # optimizer steps per pass
    max_completion_length: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    cliprange: float = 0.2
    use_vllm: bool | None = None  # None: vLLM when it is usable (CUDA + vllm installed)
    vllm_gpu_memory_utilization: float = 0.3

    _INTS = ("max_steps", "per_device_train_batch_size", "num_ppo_epochs", "num_mini_batches",
             "max_completion_length", "logging_steps", "save_steps")
    _FLOATS = ("learning_rate", "temperature", "top_p", "cliprange", "vllm_gpu_memory_utilization")

    def __post_init__(self):
        # The messages end up as `error: trainer: ...`, one line each, before any model is built.
        for key in self._INTS:
            value = getattr(self, key)
            if not _plain(value, int) or value < 1:
                raise ValueError(f"{key} must be a whole number >= 1 (got {value!r})")
        for key in self._FLOATS:
            if not (_plain(getattr(self, key), float) or _plain(getattr(self, key), int)):
                raise ValueError(f"{key} must be a number (got {getattr(self, key)!r})")
        if self.per_device_train_batch_size % self.num_mini_batches:
            raise ValueError(f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be divisible "
                             f"by num_mini_batches ({self.num_mini_batches})")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive (got {self.learning_rate})")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0: rollouts sample (greedy decoding gives nothing to compare)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p})")
        self.check_rollout_trajectories()
        super().__post_init__()


@dataclass
class PPOConfig(RolloutConfig):
    kl_coef: float = 0.05  # per-token KL penalty to the reference, inside the reward
    gamma: float = 1.0
    lam: float = 0.95
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    whiten_rewards: bool = False
    missing_eos_penalty: float | None = None  # subtracted from the score of a completion cut off without EOS
    value_head_learning_rate: float | None = None  # None: learning_rate; a fresh head under LoRA wants more

    _FLOATS = RolloutConfig._FLOATS + ("kl_coef", "gamma", "lam", "cliprange_value", "vf_coef")

    def __post_init__(self):
        for key in ("missing_eos_penalty", "value_head_learning_rate"):
            value = getattr(self, key)
            if value is not None and not (_plain(value, float) or _plain(value, int)):
                raise ValueError(f"{key} must be a number or null (got {value!r})")
        super().__post_init__()


# ---------------------------------------------------------------- rollout (shared with SPO)

@dataclass
class Batch:
    """One rollout: prompt + completion ids, left-padded prompts, right-padded completions."""

    input_ids: torch.Tensor  # (B, P + C)
    attention_mask: torch.Tensor  # (B, P + C): prompt padding and everything after the first EOS are 0
    completion_mask: torch.Tensor  # (B, C) float: the completion tokens up to and including EOS
    completions: list  # decoded, in the prompt's shape: a string, or [{"role": "assistant", "content": ...}]
    ended: torch.Tensor  # (B,) bool: the completion reached EOS
    n_completion: int
    columns: dict = field(default_factory=dict)  # the rows' other columns, one list each, for the rewards
    prompt_texts: list = field(default_factory=list)  # the prompts as the model saw them (chat template applied)
    completion_texts: list = field(default_factory=list)  # the decoded completions, plain text


def render_prompt(tokenizer, prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def completion_mask(completion_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask up to and including the first EOS; (mask, ended)."""
    is_eos = completion_ids == eos_id
    ended = is_eos.any(dim=1)
    none = torch.full_like(ended, completion_ids.size(1), dtype=torch.long)
    first = torch.where(ended, is_eos.int().argmax(dim=1), none)
    positions = torch.arange(completion_ids.size(1), device=completion_ids.device).expand_as(completion_ids)
    return (positions <= first.unsqueeze(1)).float(), ended


class TransformersSampler:
    """Samples with the policy itself: no copy, nothing to sync."""

    def __init__(self, model, tokenizer, cfg: RolloutConfig):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg

    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        out = self.model.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, temperature=self.cfg.temperature,
            top_p=self.cfg.top_p, top_k=0, max_new_tokens=self.cfg.max_completion_length,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
        )
        self.model.train(was_training)
        return out[:, prompt_ids.size(1):]


class VLLMSampler:  # pragma: no cover - needs CUDA and vllm; exercised by bench/gpu_smoke.sh
    """vLLM in this process (colocated); the policy's weights are pushed into it before each rollout."""

    def __init__(self, model, tokenizer, cfg: RolloutConfig, source: str, max_model_len: int):
        from vllm import LLM

        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.llm = LLM(model=source, gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                       max_model_len=max_model_len, dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
                       enable_prefix_caching=True)

    def _sync(self):
        # The same call TRL 1.16 makes in colocate mode (trl/generation/vllm_generation.py).
        target = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        peft = hasattr(self.model, "merge_adapter")
        if peft:  # vLLM holds plain weights: push base + adapter merged, then take the adapter back out
            self.model.merge_adapter()
        for name, param in self.model.named_parameters():
            if peft:
                if "lora_" in name or "modules_to_save" in name:
                    continue
                name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            target.load_weights([(name, param.data)])
        if peft:
            self.model.unmerge_adapter()
        self.llm.reset_prefix_cache()

    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        from vllm import SamplingParams

        self._sync()
        params = SamplingParams(n=1, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                max_tokens=self.cfg.max_completion_length)
        prompts = [{"prompt_token_ids": ids[m.bool()].tolist()} for ids, m in zip(prompt_ids, prompt_mask)]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        seqs = [list(o.outputs[0].token_ids) for o in outs]
        width = max(1, max(len(s) for s in seqs))
        pad = self.tokenizer.pad_token_id
        return torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=prompt_ids.device)


def rollout(sampler, tokenizer, rows: list[dict], device) -> Batch:
    prompts = [r["prompt"] for r in rows]
    prompt_texts = [render_prompt(tokenizer, p) for p in prompts]
    enc = tokenizer(prompt_texts, return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=False).to(device)
    completion_ids = sampler.sample(enc["input_ids"], enc["attention_mask"])
    mask, ended = completion_mask(completion_ids, tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(completion_ids * mask.long() + tokenizer.pad_token_id * (1 - mask.long()),
                                   skip_special_tokens=True)
    completions = [t if isinstance(p, str) else [{"role": "assistant", "content": t}] for p, t in zip(prompts, texts)]
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    return Batch(
        input_ids=torch.cat([enc["input_ids"], completion_ids], dim=1),
        attention_mask=torch.cat([enc["attention_mask"], mask.long()], dim=1),
        completion_mask=mask, completions=completions, ended=ended, n_completion=completion_ids.size(1),
        columns=columns, prompt_texts=prompt_texts, completion_texts=texts,
    )


def score(reward_funcs, rows: list[dict], batch: Batch, per_func: dict | None = None
          ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the rewards per completion (None counts 0; weights: `reward_funcs.weights` when it is a
    runners.common.reward_model.RewardFuncs, else 1 each), and each function's unweighted mean for the log;
    `per_func`, when given, gets each function's unweighted values (name -> list[float])."""
    prompts = [r["prompt"] for r in rows]
    total = torch.zeros(len(rows))
    means = {}
    weights = getattr(reward_funcs, "weights", None) or [1.0] * len(reward_funcs)
    for func, weight in zip(reward_funcs, weights):
        values = func(prompts=prompts, completions=batch.completions, **batch.columns)
        values = torch.tensor([0.0 if v is None else float(v) for v in values])
        total += weight * values
        name = getattr(func, "__name__", "reward")
        means[f"rewards/{name}"] = values.mean().item()
        if per_func is not None:
            per_func[name] = values.tolist()
    return total, means


def forward_logprobs(model, batch: Batch, idx=slice(None), temperature: float = 1.0, hidden: bool = False):
    """Per-token log-probs and entropy of the completion tokens (and the hidden states that predict them)."""
    ids, attn = batch.input_ids[idx], batch.attention_mask[idx]
    # Positions count real tokens, as generate() counts them under left padding.
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    n = batch.n_completion
    # logits_to_keep: only the positions that predict completion tokens, not (length x vocab) for the prompt too.
    out = model(input_ids=ids, attention_mask=attn, position_ids=position_ids, use_cache=False,
                output_hidden_states=hidden, logits_to_keep=n + 1)
    logits = out.logits[:, -n - 1:-1].float() / temperature
    logp_all = logits.log_softmax(-1)
    logp = logp_all.gather(-1, ids[:, -n:].unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    states = out.hidden_states[-1][:, -n - 1:-1] if hidden else None
    return logp, entropy, states


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def frozen_copy(model):
    """The reference policy: the starting weights, frozen. LoRA runs use the base under the adapter instead."""
    if hasattr(model, "disable_adapter"):
        return None
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


@torch.no_grad()
def in_chunks(n: int, size: int, fn) -> tuple:
    """fn(idx) -> tensors, over rows [0, n) `size` at a time, concatenated: full-vocabulary log-softmaxes of a
    whole rollout batch at once would need (batch x length x vocab) floats."""
    parts = [fn(torch.arange(i, min(n, i + size))) for i in range(0, n, size)]
    return tuple(torch.cat(p) for p in zip(*parts))


@torch.no_grad()
def reference_logprobs(policy, ref, batch: Batch, temperature: float, chunk: int) -> torch.Tensor:
    def one(idx):
        if ref is None:  # peft: the base model is the policy with its adapter switched off
            with policy.disable_adapter():
                return (forward_logprobs(policy, batch, idx, temperature)[0],)
        return (forward_logprobs(ref, batch, idx, temperature)[0],)

    return in_chunks(batch.input_ids.size(0), chunk, one)[0]


def minibatches(n: int, count: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    size = n // count
    return [order[i * size:(i + 1) * size] for i in range(count)]


def clip_and_step(params, optimizer, max_grad_norm: float) -> float:
    """One optimizer step; the learning-rate schedule moves once per rollout step (the trainer's loop does it)."""
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm)


# ---------------------------------------------------------------- PPO

class ValueHead(torch.nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(hidden_size + 1))
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.linear(states.to(self.linear.weight.dtype)).squeeze(-1)


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimation, right to left; rewards and values are 0 past each completion's end."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.size(0), device=rewards.device)
    for t in reversed(range(rewards.size(1))):
        next_value = values[:, t + 1] if t + 1 < rewards.size(1) else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    return advantages


class PPO:
    """Policy, value head and reference; `step(rows)` is one rollout and its updates (the optimizer: the trainer's)."""

    name = "ppo"

    def __init__(self, policy, tokenizer, cfg: PPOConfig, reward_funcs, sampler, seed: int):
        self.policy, self.tokenizer, self.cfg = policy, tokenizer, cfg
        self.reward_funcs, self.sampler = reward_funcs, sampler
        self.device = next(policy.parameters()).device
        hidden = policy.config.get_text_config().hidden_size
        with torch.random.fork_rng(devices=[]):  # the head's init depends on the seed only, not on what ran before
            torch.manual_seed(seed)
            self.value_head = ValueHead(hidden).to(self.device)
        self.ref = frozen_copy(policy) if cfg.kl_coef > 0 else None
        self.params = [p for p in policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = self.scheduler = None  # the trainer's, set by OnlineRLTrainer
        self.generator = torch.Generator().manual_seed(seed)
        self.last_rollout: dict | None = None  # the last step's rollout, for trainer.save_rollout_trajectories

    def extra_param_group(self) -> dict | None:
        """Trained besides the policy: the optimizer gets them as a group of their own."""
        return {"params": list(self.value_head.parameters()), "weight_decay": 0.0,
                "lr": self.cfg.value_head_learning_rate or self.cfg.learning_rate}

    def state_dict(self) -> dict:
        return {"value_head": self.value_head.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.value_head.load_state_dict(state["value_head"])
        self.generator.set_state(state["generator"])

    @torch.no_grad()
    def eval_stats(self, batch: Batch, scores: torch.Tensor) -> dict:
        """On held-out prompts, what a step measures before it learns: the KL to the reference (0 without one),
        the value loss against the GAE returns, and the policy loss at ratio 1 with the advantages unwhitened
        (-mean advantage: below 0 when the completions beat what the value head expected; whitened it would be
        0 by construction)."""
        cfg, mask = self.cfg, batch.completion_mask
        scores = scores.to(self.device)
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * (~batch.ended).float()
        n = mask.size(0)
        logp, _, states = forward_logprobs(self.policy, batch, slice(None), cfg.temperature, hidden=True)
        values = self.value_head(states) * mask
        ref_logp = reference_logprobs(self.policy, self.ref, batch, cfg.temperature, n) if cfg.kl_coef > 0 else logp
        kl = (logp - ref_logp) * mask
        rewards = -cfg.kl_coef * kl
        rewards[torch.arange(n, device=rewards.device), (mask.sum(1).long() - 1).clamp(min=0)] += scores
        advantages = gae(rewards, values, cfg.gamma, cfg.lam)
        returns = advantages + values
        return {"policy_loss": masked_mean(-advantages, mask).item(),
                "value_loss": (0.5 * masked_mean((values - returns) ** 2, mask)).item(),
                "kl": masked_mean(kl, mask).item()}

    def step(self, rows: list[dict], idx=None) -> dict:
        cfg = self.cfg
        # 1-2. Rollout and score.
        batch = rollout(self.sampler, self.tokenizer, rows, self.device)
        per_func = {}
        scores, reward_means = score(self.reward_funcs, rows, batch, per_func)
        scores = scores.to(self.device)
        raw_scores = scores.clone()
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * (~batch.ended).float()
        mask = batch.completion_mask

        # 3. Old log-probs, values and reference log-probs, all without gradients.
        chunk = len(rows) // cfg.num_mini_batches
        with torch.no_grad():
            def measure(part):
                logp, ent, states = forward_logprobs(self.policy, batch, part, cfg.temperature, hidden=True)
                return logp, ent, self.value_head(states)

            old_logp, entropy, old_values = in_chunks(len(rows), chunk, measure)
            old_values = old_values * mask
            ref_logp = reference_logprobs(self.policy, self.ref, batch, cfg.temperature, chunk) if cfg.kl_coef > 0 \
                else old_logp

            # 4. Per-token rewards: KL penalty everywhere, the score on each completion's last token.
            kl = (old_logp - ref_logp) * mask
            rewards = -cfg.kl_coef * kl
            last = (mask.sum(1).long() - 1).clamp(min=0)
            rewards[torch.arange(len(rows), device=rewards.device), last] += scores
            if cfg.whiten_rewards:
                rewards = whiten(rewards, mask, shift_mean=False) * mask
            advantages = gae(rewards, old_values, cfg.gamma, cfg.lam)
            returns = advantages + old_values
            advantages = whiten(advantages, mask) * mask
        # What trainer.save_rollout_trajectories writes: advantages per token (B, C), zero past completion_mask;
        # scores are the rewards less missing_eos_penalty, what the last token is credited with.
        self.last_rollout = {
            "algorithm": self.name, "prompts": batch.prompt_texts, "completions": batch.completion_texts,
            "rewards": raw_scores.tolist(), "rewards_per_func": per_func, "scores": scores.tolist(),
            "advantages": advantages, "completion_mask": mask, "ended": batch.ended,
        }

        # 5. Clipped policy and value losses over mini-batches.
        stats = []
        for _ in range(cfg.num_ppo_epochs):
            for mb in minibatches(len(rows), cfg.num_mini_batches, self.generator):
                m, adv, ret, old_v = mask[mb], advantages[mb], returns[mb], old_values[mb]
                logp, _, states = forward_logprobs(self.policy, batch, mb, cfg.temperature, hidden=True)
                values = self.value_head(states)
                ratio = (logp - old_logp[mb]).exp()
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.cliprange, 1 + cfg.cliprange))
                policy_loss = masked_mean(pg, m)
                v_clipped = old_v + (values - old_v).clamp(-cfg.cliprange_value, cfg.cliprange_value)
                value_loss = 0.5 * masked_mean(torch.max((values - ret) ** 2, (v_clipped - ret) ** 2), m)
                loss = policy_loss + cfg.vf_coef * value_loss
                loss.backward()
                grad_norm = clip_and_step(self.params, self.optimizer, cfg.max_grad_norm)
                clipped = masked_mean(((ratio - 1).abs() > cfg.cliprange).float(), m)
                stats.append((loss.item(), policy_loss.item(), value_loss.item(), grad_norm, clipped.item()))

        mean = [sum(s[i] for s in stats) / len(stats) for i in range(5)]
        return {
            "loss": mean[0], "policy_loss": mean[1], "value_loss": mean[2], "grad_norm": mean[3], "clip_frac": mean[4],
            "reward": raw_scores.mean().item(), "reward_std": raw_scores.std().item() if len(rows) > 1 else 0.0,
            **reward_means,
            "kl": masked_mean(kl, mask).item(), "entropy": masked_mean(entropy, mask).item(),
            "value": masked_mean(old_values, mask).item(),
            "completion_length": mask.sum(1).mean().item(), "num_tokens": int(batch.attention_mask.sum()),
        }
