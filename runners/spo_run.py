"""SPO: one completion per prompt, a per-prompt value tracker for the baseline (arXiv 2509.13232, MiniMind's SPO).

    python runners/spo_run.py --config configs/spo/smoke.yaml --task tasks/smoke_task.py [--set key=value ...]
    python runners/spo_run.py --config configs/spo/smoke.yaml --task tasks/smoke_task.py --eval_interval 10

Task hooks as GRPO's: get_rl_dataset(config) -> rows with "prompt"; get_reward_funcs(config, tokenizer) ->
[f(prompts, completions, **columns) -> list[float]]; optional get_rl_eval_dataset(config). `trainer:` keys:
SPOConfig (runners/common/spo.py), a transformers TrainingArguments plus SPO's own; set `trainer.reward_range` to
the task's reward range (the tracker works on [0, 1]). The algorithm is runners/common/spo.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python runners/x.py` puts runners/, not the root

from runners.common.skeleton import run  # noqa: E402


def _recipe():
    from runners.common.online_rl import OnlineRLRecipe

    class SPORecipe(OnlineRLRecipe):
        kind = "spo"
        description = "SPO: one sample per prompt, a tracked per-prompt baseline, KL to a reference"

        def config_class(self):
            from runners.common.spo import SPOConfig

            return SPOConfig

        def make_algorithm(self, policy, tokenizer, args, reward_funcs, sampler, num_prompts):
            from runners.common.spo import SPO

            return SPO(policy, tokenizer, args, reward_funcs, sampler, seed=args.seed, num_prompts=num_prompts)

    return SPORecipe()


def main(argv=None):
    run(_recipe(), argv)


if __name__ == "__main__":
    main()
