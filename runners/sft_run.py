"""SFT: supervised fine-tuning with TRL's SFTTrainer, full or LoRA.

    python runners/sft_run.py --config configs/sft/smoke.yaml --task tasks/smoke_task.py [--set key=value ...]

Data comes from the task (get_sft_dataset(config, tokenizer): "messages", "prompt"/"completion" or "text" rows;
optional get_sft_eval_dataset, get_sft_formatting_func, get_sft_data_collator) or, with `data.pretokenized: DIR`,
from a pre-tokenized dataset (input_ids, attention_mask, labels) made by runners/tokenize.py.
"""
import sys
from pathlib import Path

# Repo root first, and runners/ itself off the path: its tokenize.py would shadow the stdlib module.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if not p or Path(p).resolve() != _HERE]

from runners.common.backend import cuda_available, import_backend, importable, select_backend  # noqa: E402
from runners.common.config import check_trainer_keys, load_config  # noqa: E402
from runners.common.errors import RunnerError  # noqa: E402
from runners.common.model import build_if_needed, load_model_and_tokenizer, model_source, peft_config  # noqa: E402
from runners.common.paths import resolve_in_experiment, run_paths  # noqa: E402
from runners.common.pretokenized import check_pretokenized_dir, load_pretokenized  # noqa: E402
from runners.common.tasks import load_task, validate_task_section  # noqa: E402
from runners.common.training import parse_args, start_outputs, train_and_save, trainer_args, user_errors  # noqa: E402


def optional_hook(task, name, *args):
    hook = getattr(task, name, None)
    return hook(*args) if callable(hook) else None


def main(argv=None):
    cli = parse_args(argv, "SFT with TRL")
    with user_errors():
        # 1. Check every input before building anything.
        config = load_config(cli.config, cli.set)
        pretokenized = config.data.pretokenized
        # Pre-tokenized data needs no task hooks: the task only supplies text for a tiny model's tokenizer.
        task = load_task(cli.task, "sft", required=[] if pretokenized else None)
        validate_task_section(task, config.task)
        choice = select_backend(config.model.backend, cuda_available(), importable())
        import_backend(choice)  # Unsloth patches transformers/TRL only when imported before them
        from trl import SFTConfig, SFTTrainer

        check_trainer_keys(config, SFTConfig)
        paths = run_paths("sft_run", config.run_name)
        if pretokenized:
            pretokenized = check_pretokenized_dir(resolve_in_experiment(pretokenized, paths.experiment_dir))
        source, must_build = model_source(config, paths.experiment_dir)
        args = trainer_args(SFTConfig, config, paths, max_length=config.trainer.get("max_length", config.model.max_seq_length))
        print(f"runner: backend {choice.loader} ({choice.reason})", flush=True)

        # 2. Model and data.
        build_if_needed(config, source, must_build, task)
        model, tokenizer, peft_applied = load_model_and_tokenizer(config, source, choice)
        if pretokenized:
            train, evaluation, formatting, collator = load_pretokenized(pretokenized), None, None, None
        else:
            train = task.get_sft_dataset(config, tokenizer)
            evaluation = optional_hook(task, "get_sft_eval_dataset", config, tokenizer)
            formatting = optional_hook(task, "get_sft_formatting_func", config, tokenizer)
            collator = optional_hook(task, "get_sft_data_collator", config, tokenizer)
        if len(train) == 0:
            raise RunnerError("the SFT dataset is empty")

    # 3. Train (or resume), then save the final model.
    from runners.common.callbacks import MetricsCallback, SigtermCallback  # transformers: after the checks

    resume = start_outputs(config, paths)
    sigterm = SigtermCallback()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        formatting_func=formatting,
        data_collator=collator,
        callbacks=[MetricsCallback(paths.metrics), sigterm],
        peft_config=None if peft_applied else peft_config(config),
    )
    train_and_save(trainer, tokenizer, sigterm, config, paths, resume)
    if evaluation is not None:
        print(f"runner: eval {trainer.evaluate()}", flush=True)


if __name__ == "__main__":
    main()
