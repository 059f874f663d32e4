"""DPO: learn from preference pairs with TRL's DPOTrainer, full or LoRA.

    python runners/dpo_run.py --config configs/dpo/smoke.yaml --task tasks/smoke_task.py [--set key=value ...]
    python runners/dpo_run.py --config configs/dpo/smoke.yaml --task tasks/smoke_task.py --eval_interval 5

    python runners/dpo_run.py --config configs/dpo/smoke.yaml --data_config configs/data/posttrain/dpo/smoke.yaml
    python runners/dpo_run.py --config configs/dpo/smoke.yaml --task tasks/smoke_task.py --use_prepared

Data: a mixture (`--data_config MIX`, YAML `data.mixture`; configs/data/posttrain/dpo/*.yaml) whose sources map
their records to prompt/chosen/rejected (dotted field paths: `fields: {prompt_field: pair.q, chosen_field: ...}`);
its draw is written to data/prepared/dpo/<name>/{train,validation}.jsonl (a no-op when up to date) and
`--use_prepared` trains on that JSONL as it is. Without a mixture, the task's hooks:
get_dpo_dataset(config, tokenizer) -> rows with "prompt", "chosen", "rejected" (strings or chat
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
    data_mode = "dpo"  # --data_config: pairs, prepared as JSONL (runners/common/prepared.py)

    def required_hooks(self, ctx: RunContext):
        # A mixture gives the pairs: the task is optional (a tiny model still takes its tokenizer text from one).
        return [] if ctx.config.data.mixture else None

    def config_class(self):
        from trl import DPOConfig

        return DPOConfig

    def forced_args(self, ctx: RunContext) -> dict:
        return {"max_length": ctx.config.trainer.get("max_length", ctx.config.model.max_seq_length)}

    def load_data(self, ctx: RunContext) -> None:
        from runners.common.prepared import mixture_rows

        mixed = mixture_rows(ctx, self.data_mode)
        if mixed is not None:
            where = f"--data_config {ctx.config.data.mixture}"
            ctx.train, ctx.eval = _pairs(mixed[0], where), _pairs(mixed[1], where)
            return
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
