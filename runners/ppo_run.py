"""PPO: sample a completion per prompt, score it with the task's rewards, learn with a value head and a KL leash.

    python runners/ppo_run.py --config configs/ppo/smoke.yaml --task tasks/smoke_task.py [--set key=value ...]
    python runners/ppo_run.py --config configs/ppo/smoke.yaml --task tasks/smoke_task.py --eval_interval 10

Task hooks as GRPO's: get_rl_dataset(config) -> rows with "prompt"; get_reward_funcs(config, tokenizer) ->
[f(prompts, completions, **columns) -> list[float]]; optional get_rl_eval_dataset(config), the held-out prompts
the eval loop scores (without it, 10% of the prompts are held out). `trainer:` keys: PPOConfig
(runners/common/ppo.py), a transformers TrainingArguments plus PPO's own. The algorithm is runners/common/ppo.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python runners/x.py` puts runners/, not the root

from runners.common.skeleton import run  # noqa: E402


def _recipe():
    from runners.common.online_rl import OnlineRLRecipe

    class PPORecipe(OnlineRLRecipe):
        kind = "ppo"
        description = "PPO: actor with a value head, frozen reference for the KL penalty, GAE, clipped losses"

        def config_class(self):
            from runners.common.ppo import PPOConfig

            return PPOConfig

        def make_algorithm(self, policy, tokenizer, args, reward_funcs, sampler, num_prompts):
            from runners.common.ppo import PPO

            return PPO(policy, tokenizer, args, reward_funcs, sampler, seed=args.seed)

    return PPORecipe()


def main(argv=None):
    run(_recipe(), argv)


if __name__ == "__main__":
    main()
