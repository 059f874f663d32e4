"""DPO: learn from preference pairs with TRL's DPOTrainer, full or LoRA.

    python runners/dpo_run.py --config configs/dpo/smoke.yaml --task tasks/smoke_task.py [--set key=value ...]
    python runners/dpo_run.py --config configs/dpo/smoke.yaml --task tasks/smoke_task.py --eval_interval 5

Task hooks: get_dpo_dataset(config, tokenizer) -> rows with "prompt", "chosen", "rejected" (strings or chat
messages); optional get_dpo_eval_dataset(config, tokenizer), the held-out pairs the eval loop measures reward
accuracy on (without it, 10% of the training pairs are held out). With LoRA the frozen base is the reference
model; a full fine-tune keeps a frozen copy.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python runners/x.py` puts runners/, not the root

from runners.common.errors import RunnerError  # noqa: E402
from runners.common.skeleton import Recipe, RunContext, run  # noqa: E402

COLUMNS = ("prompt", "chosen", "rejected")


class DPO(Recipe):
    kind = "dpo"
    description = "DPO with TRL's DPOTrainer (full or LoRA)"

    def config_class(self):
        from trl import DPOConfig

        return DPOConfig

    def forced_args(self, ctx: RunContext) -> dict:
        return {"max_length": ctx.config.trainer.get("max_length", ctx.config.model.max_seq_length)}

    def load_data(self, ctx: RunContext) -> None:
        ctx.train = _pairs(ctx.task.get_dpo_dataset(ctx.config, ctx.tokenizer), "get_dpo_dataset")
        ctx.eval = _pairs(self.optional_hook(ctx, "get_dpo_eval_dataset", ctx.config, ctx.tokenizer),
                          "get_dpo_eval_dataset")

    def make_trainer(self, ctx: RunContext, callbacks: list):
        from trl import DPOTrainer

        return DPOTrainer(model=ctx.model, args=ctx.args, train_dataset=ctx.train, eval_dataset=ctx.eval,
                          processing_class=ctx.tokenizer, callbacks=callbacks, peft_config=self.peft_config(ctx))


def _pairs(dataset, hook: str):
    if dataset is None:
        return None
    missing = [c for c in COLUMNS if c not in dataset.column_names]
    if missing:
        raise RunnerError(f"{hook}: rows lack {', '.join(missing)} (needs prompt, chosen, rejected)")
    return dataset


def main(argv=None):
    run(DPO(), argv)


if __name__ == "__main__":
    main()
