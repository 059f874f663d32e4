"""GRPO: sample completions for the task's prompts, score them with the task's rewards, push up the better ones.

    python runners/rl_run.py --config configs/rl/smoke.yaml --task tasks/smoke_task.py [--set key=value ...]
    python runners/rl_run.py --config configs/rl/smoke.yaml --task tasks/smoke_task.py --eval_interval 10

Task hooks: get_rl_dataset(config) -> rows with "prompt"; get_reward_funcs(config, tokenizer) -> [f(prompts,
completions, **columns) -> list[float]]; optional get_rl_eval_dataset(config), held-out prompts the eval loop
scores (mean reward; without it, 10% of the training prompts are held out). Rollouts use vLLM on CUDA when it is
installed, transformers otherwise. SIGTERM saves a checkpoint and exits 143; a restart resumes.
`trainer.save_rollout_trajectories: true` saves each step's rollouts (runners/common/grpo.py, docs/runners.md).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python runners/x.py` puts runners/, not the root

from runners.common.backend import vllm_trainer_args  # noqa: E402
from runners.common.skeleton import Recipe, RunContext, run  # noqa: E402


class GRPO(Recipe):
    kind = "rl"
    description = "GRPO training with TRL's GRPOTrainer"
    data_mode = "rlaif"  # --data_config: prompt rows (and an optional `answer`), prepared as JSONL

    def required_hooks(self, ctx: RunContext):
        from runners.common.prepared import rl_required_hooks

        return rl_required_hooks(ctx)

    def config_class(self):
        from runners.common.grpo import GRPOConfig  # TRL's, plus the rollout-saving keys

        return GRPOConfig

    def forced_args(self, ctx: RunContext) -> dict:
        return vllm_trainer_args(ctx.config, ctx.choice)

    def load_data(self, ctx: RunContext) -> None:
        from runners.common.prepared import mixture_rows

        mixed = mixture_rows(ctx, self.data_mode)  # None: no mixture, the task's prompts
        ctx.train, ctx.eval = mixed if mixed is not None else (
            ctx.task.get_rl_dataset(ctx.config), self.optional_hook(ctx, "get_rl_eval_dataset", ctx.config))
        from runners.common.reward_model import reward_funcs

        ctx.extra["rewards"] = rewards = reward_funcs(ctx)  # the task's, plus reward.model when set
        if ctx.args.reward_weights is None:  # reward.weights, as TRL weighs: rewards/<name> stay unweighted
            ctx.args.reward_weights = rewards.weights

    def eval_rows_per_batch(self, ctx: RunContext) -> int:
        # An eval batch holds per_device_eval_batch_size completions, num_generations_eval per prompt.
        per_prompt = ctx.args.num_generations_eval or ctx.args.num_generations
        return max(1, ctx.args.per_device_eval_batch_size // per_prompt)

    def seq_len(self, ctx: RunContext) -> int:
        return int(ctx.config.model.max_seq_length)

    def make_trainer(self, ctx: RunContext, callbacks: list):
        if ctx.args.save_rollout_trajectories:
            from runners.common.grpo import RolloutSavingGRPOTrainer as GRPOTrainer
        else:
            from trl import GRPOTrainer

        return GRPOTrainer(model=ctx.model, reward_funcs=ctx.extra["rewards"], args=ctx.args, train_dataset=ctx.train,
                           eval_dataset=ctx.eval, processing_class=ctx.tokenizer, callbacks=callbacks,
                           peft_config=self.peft_config(ctx))


def main(argv=None):
    run(GRPO(), argv)


if __name__ == "__main__":
    main()
