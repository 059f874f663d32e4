"""CPT: continued pretraining of a causal LM on packed blocks from runners/tokenize.py --mode cpt.

    python runners/cpt_run.py --config configs/cpt/smoke.yaml [--set trainer.max_steps=100 ...]
    launch --backend modal --gpu A100 runners/cpt_run.py --config configs/cpt/smoke.yaml

Checkpoints: CHECKPOINT_DIR/<run_name>/checkpoint-N (default model/cpt_checkpoints); metrics:
reports/<run_name>/metrics.jsonl; final model: model/hf/<run_name>. SIGTERM saves and exits 143; a restart
resumes from the newest checkpoint.
"""
import sys
from pathlib import Path

# Repo root first, and runners/ itself off the path: its tokenize.py would shadow the stdlib module.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if not p or Path(p).resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from runners.common.errors import RunnerError, die  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description="continued pretraining on packed CPT blocks")
    p.add_argument("--config", required=True, help="run YAML (configs/cpt/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set trainer.max_steps=10 (repeatable; values are YAML)")
    return p.parse_args(argv)


def prepare_data(cfg, exp_dir: Path) -> Path:
    """data.prepare runs the tokenize job first (a no-op when up to date); data.tokenized names the output."""
    from runners.common.paths import resolve_in_experiment
    from runners.data.errors import DataError

    try:
        if cfg.data.prepare:
            from runners.data.pipeline import TokenizeJob
            from runners.tokenize import config_from_args

            tcfg = config_from_args(["--config", cfg.data.prepare])
            if tcfg.mode != "cpt":
                raise RunnerError(f"data.prepare: {cfg.data.prepare} has mode {tcfg.mode!r}; CPT needs mode: cpt")
            job = TokenizeJob(tcfg)
            if cfg.data.tokenized and resolve_in_experiment(cfg.data.tokenized, exp_dir).resolve() != job.out:
                raise RunnerError(f"data.tokenized {cfg.data.tokenized} differs from what data.prepare writes "
                                  f"({job.out}); drop one of them")
            if int(os.environ.get("LOCAL_RANK", "0")) == 0:
                job.run()
            else:
                # torchrun: one process per node tokenizes; the others wait for its output to land.
                fp = job.fingerprint()
                while not job.up_to_date(fp):
                    time.sleep(2)
            return job.out
        return check_tokenized(resolve_in_experiment(cfg.data.tokenized, exp_dir))
    except DataError as exc:
        raise RunnerError(str(exc)) from None


def check_tokenized(path: Path) -> Path:
    if not (path / "meta.json").is_file():
        raise RunnerError(f"data.tokenized: {path} is not tokenized CPT data (no meta.json); run "
                          "`launch runners/tokenize.py --mode cpt ...` first or set data.prepare")
    return path


def tokenizer_dir(data_dir: Path, meta: dict) -> Path:
    p = Path(meta["tokenizer"]["path"])
    return p if p.is_absolute() else data_dir / p


def main(argv=None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli = parse_args(argv)
    try:
        # 1. Check every input before building anything.
        from runners.common.cpt_model import load_cpt_config, training_arguments
        from runners.common.paths import resolve_in_experiment, run_paths

        cfg = load_cpt_config(cli.config, cli.set)
        paths = run_paths("cpt_run", cfg.run_name)
        if cfg.model.init == "tiny":
            if "/" in cfg.model.name_or_path or cfg.model.name_or_path.startswith("."):
                raise RunnerError(f"model.name_or_path: with init: tiny give a plain name "
                                  f"(got {cfg.model.name_or_path!r})")
            model_dir = paths.experiment_dir / "model" / "base" / cfg.model.name_or_path
        else:
            model_dir = resolve_in_experiment(cfg.model.name_or_path, paths.experiment_dir)
            if not (model_dir / "config.json").is_file():
                raise RunnerError(f"model.name_or_path: no model dir at {model_dir} (relative = inside "
                                  "EXPERIMENT_DIR)")
        if not cfg.data.prepare:
            check_tokenized(resolve_in_experiment(cfg.data.tokenized, paths.experiment_dir))
        args = training_arguments(cfg, paths.checkpoints)  # imports torch: after the cheap checks

        # 2. Data, model.
        data_dir = prepare_data(cfg, paths.experiment_dir)
        from runners.data.errors import DataError
        from runners.data.pretokenized import CptBlocks

        try:
            train = CptBlocks(data_dir, "train", keep_tail=cfg.data.keep_tail)
            evaluation = CptBlocks(data_dir, "validation") if "validation" in train.meta["splits"] else None
        except DataError as exc:
            raise RunnerError(str(exc)) from None
        if len(train) == 0:
            raise RunnerError(f"{data_dir}: no full block of {train.block_size} tokens; use a smaller "
                              "--block-size or more data (or data.keep_tail: true)")
        if cfg.model.init == "tiny":
            from runners.common.cpt_model import build_tiny_on_tokenizer

            build_tiny_on_tokenizer(tokenizer_dir(data_dir, train.meta), model_dir, cfg.model.tiny, cfg.seed)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}[cfg.model.dtype]
        if dtype is None:
            dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        n_emb = model.get_input_embeddings().weight.shape[0]
        if train.meta["vocab_size"] > n_emb:
            raise RunnerError(f"data vocab ({train.meta['vocab_size']}) is larger than the model's embeddings "
                              f"({n_emb}); tokenize with this model's tokenizer (--tokenizer {model_dir})")
    except RunnerError as exc:
        die(str(exc))

    # 3. Train (or resume), then save.
    from transformers import Trainer, default_data_collator

    from runners.common.callbacks import MetricsCallback, SigtermCallback, quiet_console
    from runners.common.checkpoints import newest_checkpoint

    resume = newest_checkpoint(paths.checkpoints) if cfg.output.resume else None
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    paths.reports.mkdir(parents=True, exist_ok=True)
    (paths.reports / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
    if resume is None and paths.metrics.exists():
        paths.metrics.unlink()  # a fresh run; a resumed one appends to the same curve
    if resume is not None:
        print(f"runner: resuming from {resume}", flush=True)
    print(f"runner: {len(train)} blocks of {train.block_size} tokens from {data_dir}", flush=True)
    sigterm = SigtermCallback()
    trainer = Trainer(
        model=model, args=args, train_dataset=train, eval_dataset=evaluation,
        data_collator=default_data_collator, callbacks=[MetricsCallback(paths.metrics), sigterm],
    )
    quiet_console(trainer)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if sigterm.received:
        print(f"runner: checkpoint saved at step {trainer.state.global_step}; exiting 143", flush=True)
        sys.exit(143)
    summary = {"run_name": cfg.run_name, "global_step": trainer.state.global_step, "data": str(data_dir),
               **(result.metrics or {})}
    if evaluation is not None and len(evaluation):
        summary.update(trainer.evaluate())
    if cfg.output.save_final and trainer.is_world_process_zero():
        trainer.save_model(str(paths.final_model))
        tokenizer.save_pretrained(str(paths.final_model))
        print(f"runner: final model in {paths.final_model}", flush=True)
    (paths.reports / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
