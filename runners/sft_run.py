"""SFT: supervised fine-tuning with TRL's SFTTrainer, full or LoRA.

    python runners/sft_run.py --config configs/sft/smoke.yaml --task tasks/smoke_task.py [--set key=value ...]
    python runners/sft_run.py --config configs/sft/smoke.yaml --task tasks/smoke_task.py --eval_interval 10

Data comes from the task (get_sft_dataset(config, tokenizer): "messages", "prompt"/"completion" or "text" rows;
optional get_sft_eval_dataset, get_sft_formatting_func, get_sft_data_collator), from a pre-tokenized dataset
(`data.pretokenized: DIR`, made by runners/tokenize_run.py --mode sft), or from a mixture YAML tokenized with the
model's tokenizer for this run (`--data_config configs/data/posttrain/sft/NAME.yaml`; `--use_prepared` trains on what an
earlier tokenize left in data/tokenized/sft/<name> without tokenizing again).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python runners/x.py` puts runners/, not the root

from runners.common.skeleton import Recipe, RunContext, run  # noqa: E402


class SFT(Recipe):
    kind = "sft"
    description = "SFT with TRL's SFTTrainer (full or LoRA)"

    def config_class(self):
        from trl import SFTConfig

        return SFTConfig

    def load_config(self, path, overrides):
        from runners.common.config import load_config
        from runners.common.prepared import command_line_source_wins

        # configs/sft/smoke.yaml names its mixture; a pipeline step's data.pretokenized (or another --data_config)
        # on the command line replaces it rather than clashing with it.
        return load_config(path, command_line_source_wins(overrides, ("pretokenized", "mixture")))

    def required_hooks(self, ctx: RunContext):
        data = ctx.config.data
        # Tokenized data needs no task hooks: the task then only supplies text for a tiny model's tokenizer.
        return [] if data.pretokenized or data.mixture else None

    def check(self, ctx: RunContext) -> None:
        from runners.common.paths import resolve_in_experiment
        from runners.common.prepared import check_data_section
        from runners.common.pretokenized import check_pretokenized_dir

        data = ctx.config.data
        check_data_section(data, "sft", ctx.paths.experiment_dir, other="data.pretokenized")
        if data.pretokenized:
            check_pretokenized_dir(resolve_in_experiment(data.pretokenized, ctx.paths.experiment_dir))

    def forced_args(self, ctx: RunContext) -> dict:
        return {"max_length": ctx.config.trainer.get("max_length", ctx.config.model.max_seq_length)}

    def load_data(self, ctx: RunContext) -> None:
        from runners.common.prepared import sft_tokenized_dir
        from runners.common.pretokenized import load_pretokenized

        tokenized = sft_tokenized_dir(ctx)
        if tokenized is not None:
            ctx.train = load_pretokenized(tokenized)
            ctx.eval = load_pretokenized(tokenized, "validation", missing_ok=True)
            ctx.extra.update(formatting=None, collator=None)
            return
        ctx.train = ctx.task.get_sft_dataset(ctx.config, ctx.tokenizer)
        ctx.eval = self.optional_hook(ctx, "get_sft_eval_dataset", ctx.config, ctx.tokenizer)
        ctx.extra.update(formatting=self.optional_hook(ctx, "get_sft_formatting_func", ctx.config, ctx.tokenizer),
                         collator=self.optional_hook(ctx, "get_sft_data_collator", ctx.config, ctx.tokenizer))

    def make_trainer(self, ctx: RunContext, callbacks: list):
        from trl import SFTTrainer

        return SFTTrainer(model=ctx.model, args=ctx.args, train_dataset=ctx.train, eval_dataset=ctx.eval,
                          processing_class=ctx.tokenizer, formatting_func=ctx.extra["formatting"],
                          data_collator=ctx.extra["collator"], callbacks=callbacks, peft_config=self.peft_config(ctx))


def main(argv=None):
    run(SFT(), argv)


if __name__ == "__main__":
    main()
