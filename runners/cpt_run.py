"""CPT: continued pretraining of a causal LM on packed blocks from runners/tokenize_run.py --mode cpt.

    python runners/cpt_run.py --config configs/cpt/smoke.yaml [--set trainer.max_steps=100 ...]
    python runners/cpt_run.py --config configs/cpt/smoke.yaml --eval_interval 10 --eval_batches 2
    launch --backend modal --gpu A100 runners/cpt_run.py --config configs/cpt/smoke.yaml

Data: `data.tokenized` (a tokenize output), `data.prepare` (a tokenize config run first, a no-op when up to date),
or `--data_config MIXTURE` (configs/data/pretrain/*.yaml, tokenized into data/tokenized/cpt/<name>: with the
model's tokenizer, or, for a tiny model not built yet, with one the tokenize step trains on the mixture, vocab
model.tiny.vocab_size); `--use_prepared` trains on what is already tokenized and never tokenizes. A data source
given on the command line (--data_config, --set data.tokenized=..., --set data.prepare=...) replaces the YAML's:

    python runners/cpt_run.py --config configs/cpt/smoke.yaml --data_config configs/data/pretrain/smoke.yaml

Checkpoints: CHECKPOINT_DIR/<run_name>/checkpoint-N
(default model/cpt_checkpoints); metrics: reports/<run_name>/metrics.jsonl; final model: model/hf/<run_name>.
SIGTERM saves and exits 143; a restart resumes from the newest checkpoint.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python runners/x.py` puts runners/, not the root

from runners.common.errors import RunnerError  # noqa: E402
from runners.common.skeleton import Recipe, RunContext, run  # noqa: E402


class CPT(Recipe):
    kind = "cpt"
    description = "continued pretraining on packed CPT blocks"
    needs_task = False

    def load_config(self, path, overrides):
        from runners.common.cpt_model import load_cpt_config

        from runners.common.prepared import command_line_source_wins

        return load_cpt_config(path, command_line_source_wins(overrides, ("tokenized", "prepare", "mixture")))

    def config_class(self):
        from transformers import TrainingArguments

        return TrainingArguments

    def default_args(self, ctx: RunContext) -> dict:
        return {"logging_steps": 10, "save_steps": 500, "include_num_input_tokens_seen": "non_padding"}

    def check(self, ctx: RunContext) -> None:
        from runners.common.paths import resolve_in_experiment
        from runners.common.prepared import check_data_section

        data, exp = ctx.config.data, ctx.paths.experiment_dir
        check_data_section(data, "cpt", exp, other="data.tokenized")
        if data.mixture and data.prepare:
            raise RunnerError("give data.prepare or --data_config (data.mixture), not both")
        if not data.mixture and (data.use_prepared or not data.prepare):
            check_tokenized(resolve_in_experiment(data.tokenized, exp))

    def model_source(self, ctx: RunContext) -> tuple[str, bool]:
        from runners.common.paths import resolve_in_experiment

        model, exp = ctx.config.model, ctx.paths.experiment_dir
        if model.init == "tiny":
            if "/" in model.name_or_path or model.name_or_path.startswith("."):
                raise RunnerError(f"model.name_or_path: with init: tiny give a plain name (got {model.name_or_path!r})")
            return str(exp / "model" / "base" / model.name_or_path), True
        model_dir = resolve_in_experiment(model.name_or_path, exp)
        if not (model_dir / "config.json").is_file():
            raise RunnerError(f"model.name_or_path: no model dir at {model_dir} (relative = inside EXPERIMENT_DIR)")
        return str(model_dir), False

    def load_model(self, ctx: RunContext) -> None:
        # The data first: a tiny model is built on the data's own tokenizer.
        from runners.data.errors import DataError
        from runners.data.pretokenized import CptBlocks

        data_dir = prepare_data(ctx)
        try:
            train = CptBlocks(data_dir, "train", keep_tail=ctx.config.data.keep_tail)
            evaluation = CptBlocks(data_dir, "validation") if "validation" in train.meta["splits"] else None
        except DataError as exc:
            raise RunnerError(str(exc)) from None
        if len(train) == 0:
            raise RunnerError(f"{data_dir}: no full block of {train.block_size} tokens; use a smaller "
                              "--block-size or more data (or data.keep_tail: true)")
        model_dir = Path(ctx.source)
        if ctx.config.model.init == "tiny":
            from runners.common.cpt_model import build_tiny_on_tokenizer

            build_tiny_on_tokenizer(tokenizer_dir(data_dir, train.meta), model_dir, ctx.config.model.tiny,
                                    ctx.config.seed)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}[ctx.config.model.dtype]
        if dtype is None:
            dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
        ctx.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
        ctx.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        n_emb = ctx.model.get_input_embeddings().weight.shape[0]
        if train.meta["vocab_size"] > n_emb:
            raise RunnerError(f"data vocab ({train.meta['vocab_size']}) is larger than the model's embeddings "
                              f"({n_emb}); tokenize with this model's tokenizer (--tokenizer {model_dir})")
        ctx.extra.update(train=train, eval=evaluation if evaluation is not None and len(evaluation) else None,
                         data_dir=data_dir)
        print(f"runner: {len(train)} blocks of {train.block_size} tokens from {data_dir}", flush=True)

    def load_data(self, ctx: RunContext) -> None:
        ctx.train, ctx.eval = ctx.extra["train"], ctx.extra["eval"]

    def seq_len(self, ctx: RunContext) -> int:
        return int(ctx.extra["train"].block_size)

    def make_trainer(self, ctx: RunContext, callbacks: list):
        from transformers import Trainer, default_data_collator

        return Trainer(model=ctx.model, args=ctx.args, train_dataset=ctx.train, eval_dataset=ctx.eval,
                       data_collator=default_data_collator, callbacks=callbacks)

    def save_final(self, ctx: RunContext, trainer) -> None:
        trainer.save_model(str(ctx.paths.final_model))
        ctx.tokenizer.save_pretrained(str(ctx.paths.final_model))


def prepare_data(ctx: RunContext) -> Path:
    """data.prepare runs the tokenize job first (a no-op when up to date); data.tokenized names the output;
    --data_config tokenizes a mixture with the model's tokenizer; --use_prepared takes what is there."""
    from runners.common.paths import resolve_in_experiment
    from runners.common.prepared import prepared_dir, tokenize_mixture
    from runners.data.errors import DataError

    cfg, exp = ctx.config, ctx.paths.experiment_dir
    if cfg.data.mixture:
        if cfg.data.use_prepared:
            return prepared_dir("cpt", cfg.data.mixture, exp)
        if cfg.model.init == "tiny":
            # A tiny model is built on its data's tokenizer (load_model): the mixture's tokenize step trains one,
            # as data.prepare's config does (a no-op when the output is up to date).
            return tokenize_mixture("cpt", cfg.data.mixture, None, exp, block_size=mixture_block_size(ctx),
                                    train_tokenizer=True, vocab_size=cfg.model.tiny.vocab_size)
        return tokenize_mixture("cpt", cfg.data.mixture, ctx.source, exp, block_size=mixture_block_size(ctx))
    if not cfg.data.prepare or cfg.data.use_prepared:
        return check_tokenized(resolve_in_experiment(cfg.data.tokenized, exp))
    try:
        from runners.data.pipeline import TokenizeJob
        from runners.tokenize_run import config_from_args

        tcfg = config_from_args(["--config", cfg.data.prepare])
        if tcfg.mode != "cpt":
            raise RunnerError(f"data.prepare: {cfg.data.prepare} has mode {tcfg.mode!r}; CPT needs mode: cpt")
        job = TokenizeJob(tcfg)
        if cfg.data.tokenized and resolve_in_experiment(cfg.data.tokenized, exp).resolve() != job.out:
            raise RunnerError(f"data.tokenized {cfg.data.tokenized} differs from what data.prepare writes "
                              f"({job.out}); drop one of them")
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            job.run()
        else:
            import time

            fp = job.fingerprint()  # torchrun: one process per node tokenizes; the others wait for its output
            while not job.up_to_date(fp):
                time.sleep(2)
        return job.out
    except DataError as exc:
        raise RunnerError(str(exc)) from None


def mixture_block_size(ctx: RunContext) -> int:
    if ctx.config.data.block_size:
        return ctx.config.data.block_size
    if ctx.config.model.init == "tiny":
        return min(2048, ctx.config.model.tiny.max_position_embeddings)
    import json

    context = json.loads((Path(ctx.source) / "config.json").read_text()).get("max_position_embeddings") or 2048
    return min(2048, int(context))


def check_tokenized(path: Path) -> Path:
    if not (path / "meta.json").is_file():
        raise RunnerError(f"data.tokenized: {path} is not tokenized CPT data (no meta.json); run "
                          "`launch runners/tokenize_run.py --mode cpt ...` first or set data.prepare")
    return path


def tokenizer_dir(data_dir: Path, meta: dict) -> Path:
    p = Path(meta["tokenizer"]["path"])
    return p if p.is_absolute() else data_dir / p


def main(argv=None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run(CPT(), argv)


if __name__ == "__main__":
    main()
