"""GRPO's trainer config and, when rollouts are saved, its trainer: TRL's, plus the rollout-saving keys.

`GRPOConfig` is TRL's GRPOConfig with `RolloutTrajectoryArgs` (runners/common/rollouts.py) mixed in, so
`trainer.save_rollout_trajectories`, `trainer.rollout_trajectory_subdir` and `trainer.rollout_trajectory_pattern`
are `trainer:` keys of rl_run.py as they are of ppo_run.py and spo_run.py (and checked with TRL's own keys).
It keeps TRL's class name, so a typo still reads "unknown key 'trainer.x' for GRPOConfig".

`RolloutSavingGRPOTrainer` (used only when save_rollout_trajectories is true) hooks two TRL 1.16 methods and
changes nothing they return: `_calculate_rewards` (keeps the round's prompts, completions and per-function
rewards) and `_generate_and_score_completions` (adds the advantages it returns and saves the round). Eval rounds
are not saved; with several processes, the first one saves its share. One file per generation round; rollout_id:
  - the global step the round is generated for (state.global_step + 1, as PPO/SPO and `checkpoint-N` count)
    when a round serves one step or more: TRL's default, steps_per_generation == gradient_accumulation_steps
    and num_iterations == 1, gives exactly one file per step (larger values: a file every few steps);
  - a running count of generation rounds from the run's start when a step has several rounds
    (steps_per_generation * num_iterations < gradient_accumulation_steps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from trl import GRPOConfig as _TRLGRPOConfig
from trl import GRPOTrainer

from runners.common.ppo import render_prompt
from runners.common.rollouts import RolloutSaver, RolloutTrajectoryArgs, completion_text


@dataclass
class GRPOConfig(RolloutTrajectoryArgs, _TRLGRPOConfig):
    """TRL's GRPOConfig plus save_rollout_trajectories, rollout_trajectory_subdir, rollout_trajectory_pattern."""

    def __post_init__(self):
        self.check_rollout_trajectories()
        super().__post_init__()


class RolloutSavingGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rollout_saver = RolloutSaver.from_args(self.args)
        self._scored = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._scored = (prompts, completions, rewards_per_func)
        return rewards_per_func

    def rollout_id(self) -> int:
        """Called while a round is generated: self._step counts the micro-batches done since train() (re)started,
        which is always at an optimizer-step boundary."""
        every = self.args.steps_per_generation * self.num_iterations
        accumulation = self.args.gradient_accumulation_steps
        if every >= accumulation:
            return self.state.global_step + 1
        return (self.state.global_step * accumulation + self._step % accumulation) // every + 1

    def _generate_and_score_completions(self, inputs):
        self._scored = None
        output = super()._generate_and_score_completions(inputs)
        scored, self._scored = self._scored, None
        if self.model.training and scored is not None and self.is_world_process_zero():
            prompts, completions, per_func = scored
            n = len(prompts)  # rewards_per_func is gathered over processes; this process's rows are its slice
            per_func = per_func[self.accelerator.process_index * n:(self.accelerator.process_index + 1) * n].cpu()
            weights = self.reward_weights.to(per_func.dtype)
            rewards = (per_func * weights).nansum(dim=1)
            rewards[torch.isnan(per_func).all(dim=1)] = math.nan  # no function scored it (TRL's rule)
            self.rollout_saver.save(
                self.rollout_id(), step=self.state.global_step + 1, algorithm="grpo",
                prompts=[render_prompt(self.processing_class, p) for p in prompts],
                completions=[completion_text(c) for c in completions],
                rewards=rewards.tolist(),
                rewards_per_func={name: per_func[:, i].tolist() for i, name in enumerate(self.reward_func_names)},
                advantages=output["advantages"],
                completion_length=output["completion_mask"].sum(dim=1),
                num_generations=self.num_generations,
            )
        return output
