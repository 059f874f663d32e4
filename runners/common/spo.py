"""SPO, Single-stream Policy Optimization (arXiv 2509.13232; MiniMind's train_spo.py), compact.

GRPO needs a group of samples per prompt for its baseline; SPO samples ONE completion per prompt and takes the
baseline from a persistent per-prompt value tracker instead:

  v(x) = alpha(x) / (alpha(x) + beta(x))          a Beta-distributed estimate of the prompt's success rate
  A    = r - v(x), then normalised over the batch  (r: the task's reward mapped into [0, 1] by reward_range)
  alpha <- rho * alpha + r,  beta <- rho * beta + (1 - r)
  rho  = clip(2 ** (-D / d_half), rho_min, rho_max)  D: how far the policy drifted on x since x was last seen

D is MiniMind's cheap proxy for KL(pi_then || pi_now): the change in the mean token log-prob of x's samples.
A policy that moved a lot forgets the old estimate faster. With prioritized_sampling, prompts are drawn with
weight sqrt(v (1 - v)) + priority_epsilon: the ones the policy sometimes solves teach the most. The policy loss is
PPO's clipped surrogate (one pass is plain policy gradient) plus beta * KL to the frozen reference (k3 estimator).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from runners.common.ppo import (RolloutConfig, _plain, clip_and_step, forward_logprobs, frozen_copy, in_chunks,
                                masked_mean, minibatches, reference_logprobs, rollout, score)


@dataclass
class SPOConfig(RolloutConfig):
    beta: float = 0.02  # KL-to-reference coefficient (MiniMind's name and default)
    reward_range: list[float] = field(default_factory=lambda: [0.0, 1.0])  # clipped to, mapped onto [0, 1]
    rho_mode: str = "kl"  # kl: the tracker forgets as fast as the policy drifts; constant: rho_const
    rho_const: float = 0.9
    rho_min: float = 0.5
    rho_max: float = 0.96
    d_half: float = 0.06  # the drift at which the old estimate counts half
    prioritized_sampling: bool = True
    priority_epsilon: float = 0.05
    advantage_clip: float = 5.0

    _FLOATS = RolloutConfig._FLOATS + ("beta", "rho_const", "rho_min", "rho_max", "d_half", "priority_epsilon",
                                       "advantage_clip")

    def __post_init__(self):
        r = self.reward_range
        if not (isinstance(r, (list, tuple)) and len(r) == 2 and all(_plain(v, float) or _plain(v, int) for v in r)
                and r[1] > r[0]):
            raise ValueError(f"reward_range must be [low, high] with high > low (got {r!r})")
        if self.rho_mode not in ("kl", "constant"):
            raise ValueError(f"rho_mode must be kl or constant (got {self.rho_mode!r})")
        super().__post_init__()  # types first, then the ranges below can compare numbers
        if not 0 < self.rho_min <= self.rho_max < 1:
            raise ValueError(f"rho_min/rho_max must satisfy 0 < rho_min <= rho_max < 1 "
                             f"(got {self.rho_min}, {self.rho_max})")
        if not 0 < self.rho_const < 1:
            raise ValueError(f"rho_const must be in (0, 1) (got {self.rho_const})")
        if self.d_half <= 0:
            raise ValueError(f"d_half must be positive (got {self.d_half})")
        if self.priority_epsilon <= 0:
            raise ValueError(f"priority_epsilon must be positive, or a settled prompt is never drawn again "
                             f"(got {self.priority_epsilon})")


class ValueTracker:
    """One Beta(alpha, beta) per prompt of the dataset, persisted in checkpoints."""

    def __init__(self, num_prompts: int, cfg: SPOConfig):
        self.cfg = cfg
        prior = 1.0 / (1.0 - cfg.rho_min)  # the prior weighs as much as the longest memory rho_min allows
        self.alpha = torch.full((num_prompts,), 0.5 * prior)
        self.beta = torch.full((num_prompts,), 0.5 * prior)
        self.last_logp = torch.full((num_prompts,), float("nan"))  # mean token log-prob of x's last sample

    def values(self, idx: torch.Tensor) -> torch.Tensor:
        return self.alpha[idx] / (self.alpha[idx] + self.beta[idx])

    def rho(self, idx: torch.Tensor, mean_logp: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.rho_mode == "constant":
            return torch.full_like(mean_logp, cfg.rho_const)
        drift = (mean_logp - self.last_logp[idx]).abs()
        rho = (2.0 ** (-drift / cfg.d_half)).clamp(cfg.rho_min, cfg.rho_max)
        return torch.where(torch.isnan(drift), torch.full_like(rho, cfg.rho_const), rho)  # first visit

    def update(self, idx: torch.Tensor, rewards01: torch.Tensor, mean_logp: torch.Tensor) -> torch.Tensor:
        rho = self.rho(idx, mean_logp)
        self.alpha[idx] = rho * self.alpha[idx] + rewards01
        self.beta[idx] = rho * self.beta[idx] + (1 - rewards01)
        self.last_logp[idx] = mean_logp
        return rho

    def priorities(self) -> torch.Tensor:
        v = self.alpha / (self.alpha + self.beta)
        return (v * (1 - v)).clamp(min=0).sqrt() + self.cfg.priority_epsilon

    def state_dict(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "last_logp": self.last_logp}

    def load_state_dict(self, state: dict) -> None:
        if state["alpha"].shape != self.alpha.shape:
            raise ValueError(f"the checkpoint's value tracker holds {len(state['alpha'])} prompts, "
                             f"the dataset has {len(self.alpha)}")
        self.alpha, self.beta, self.last_logp = state["alpha"], state["beta"], state["last_logp"]


class SPO:
    name = "spo"

    def __init__(self, policy, tokenizer, cfg: SPOConfig, reward_funcs, sampler, seed: int, num_prompts: int):
        self.policy, self.tokenizer, self.cfg = policy, tokenizer, cfg
        self.reward_funcs, self.sampler = reward_funcs, sampler
        self.device = next(policy.parameters()).device
        self.ref = frozen_copy(policy) if cfg.beta > 0 else None
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = self.scheduler = None  # the trainer's, set by OnlineRLTrainer
        self.tracker = ValueTracker(num_prompts, cfg)
        self.generator = torch.Generator().manual_seed(seed)
        self.last_rollout: dict | None = None  # the last step's rollout, for trainer.save_rollout_trajectories

    def extra_param_group(self) -> dict | None:
        return None

    def state_dict(self) -> dict:
        return {"tracker": self.tracker.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.generator.set_state(state["generator"])

    def pick(self, step: int, batch_size: int, num_prompts: int) -> torch.Tensor | None:
        """Prioritized draw, without replacement unless the batch is larger than the dataset; None: the loop's plain
        shuffled order. Seeded by the step, so a resumed run (tracker restored) draws what a straight one did."""
        if not self.cfg.prioritized_sampling:
            return None
        g = torch.Generator().manual_seed(self.generator.initial_seed() + 7919 * step)
        return torch.multinomial(self.tracker.priorities(), batch_size, replacement=batch_size > num_prompts,
                                 generator=g)

    @torch.no_grad()
    def eval_stats(self, batch, scores: torch.Tensor) -> dict:
        """On held-out prompts: the KL (k3) of the policy to its reference, when there is one (beta > 0)."""
        if self.cfg.beta <= 0:
            return {}
        n = batch.completion_mask.size(0)
        logp = forward_logprobs(self.policy, batch, slice(None), self.cfg.temperature)[0]
        log_ratio = reference_logprobs(self.policy, self.ref, batch, self.cfg.temperature, n) - logp
        return {"kl": masked_mean(log_ratio.exp() - log_ratio - 1, batch.completion_mask).item()}

    def step(self, rows: list[dict], idx: torch.Tensor) -> dict:
        cfg = self.cfg
        # 1. One completion per prompt, scored; rewards mapped into [0, 1] for the tracker.
        batch = rollout(self.sampler, self.tokenizer, rows, self.device)
        per_func = {}
        raw, reward_means = score(self.reward_funcs, rows, batch, per_func)
        lo, hi = cfg.reward_range
        r01 = ((raw - lo) / (hi - lo)).clamp(0, 1)
        mask = batch.completion_mask

        # 2. Baseline from the tracker (before it sees these rewards); advantages normalised over the batch.
        baseline = self.tracker.values(idx)
        advantages = r01 - baseline
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8) if len(rows) > 1 else advantages
        advantages = advantages.clamp(-cfg.advantage_clip, cfg.advantage_clip).to(self.device)
        # What trainer.save_rollout_trajectories writes: one advantage per completion (B,), and the baseline v(x).
        self.last_rollout = {
            "algorithm": self.name, "prompts": batch.prompt_texts, "completions": batch.completion_texts,
            "rewards": raw.tolist(), "rewards_per_func": per_func, "advantages": advantages,
            "baseline": baseline, "prompt_index": idx, "ended": batch.ended,
        }

        chunk = len(rows) // cfg.num_mini_batches
        old_logp, entropy = in_chunks(len(rows), chunk,
                                      lambda idx: forward_logprobs(self.policy, batch, idx, cfg.temperature)[:2])
        ref_logp = reference_logprobs(self.policy, self.ref, batch, cfg.temperature, chunk) if cfg.beta > 0 \
            else old_logp

        # 3. Clipped surrogate with the sequence's advantage on every token, plus beta * KL to the reference.
        stats = []
        for _ in range(cfg.num_ppo_epochs):
            for mb in minibatches(len(rows), cfg.num_mini_batches, self.generator):
                m = mask[mb]
                logp, _, _ = forward_logprobs(self.policy, batch, mb, cfg.temperature)
                ratio = (logp - old_logp[mb]).exp()
                a = advantages[mb].unsqueeze(1)
                pg = torch.max(-a * ratio, -a * ratio.clamp(1 - cfg.cliprange, 1 + cfg.cliprange))
                log_ratio_ref = ref_logp[mb] - logp
                kl = log_ratio_ref.exp() - log_ratio_ref - 1  # k3: unbiased, always >= 0
                policy_loss = masked_mean(pg, m, dim=1).mean()  # per sequence, then per batch: MiniMind's weighting
                kl_loss = masked_mean(kl, m, dim=1).mean()
                loss = policy_loss + cfg.beta * kl_loss
                loss.backward()
                grad_norm = clip_and_step(self.params, self.optimizer, cfg.max_grad_norm)
                stats.append((loss.item(), policy_loss.item(), kl_loss.item(), grad_norm))

        # 4. The tracker learns this batch's outcomes; its forgetting follows the policy's drift on each prompt.
        rho = self.tracker.update(idx, r01, masked_mean(old_logp, mask, dim=1).cpu())
        mean = [sum(s[i] for s in stats) / len(stats) for i in range(4)]
        kl = {"kl": mean[2]} if cfg.beta > 0 else {}  # without a reference there is no KL to speak of
        return {
            "loss": mean[0], "policy_loss": mean[1], **kl, "grad_norm": mean[3],
            "reward": raw.mean().item(), "reward_std": raw.std().item() if len(rows) > 1 else 0.0, **reward_means,
            "baseline": baseline.mean().item(), "rho": rho.mean().item(),
            "entropy": masked_mean(entropy, mask).item(),
            "completion_length": mask.sum(1).mean().item(), "num_tokens": int(batch.attention_mask.sum()),
        }
