"""DPO: learn from preference pairs with TRL's DPOTrainer, full or LoRA.

    python runners/dpo_run.py --config configs/dpo/smoke.yaml --task tasks/smoke_task.py [--set key=value ...]

Task hook: get_dpo_dataset(config, tokenizer) -> rows with "prompt", "chosen", "rejected" (strings or chat
messages). With LoRA the frozen base is the reference model; a full fine-tune keeps a frozen copy.
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
from runners.common.paths import run_paths  # noqa: E402
from runners.common.tasks import load_task, validate_task_section  # noqa: E402
from runners.common.training import parse_args, start_outputs, train_and_save, trainer_args, user_errors  # noqa: E402


def main(argv=None):
    cli = parse_args(argv, "DPO with TRL")
    with user_errors():
        # 1. Check every input before building anything.
        config = load_config(cli.config, cli.set)
        if config.data.pretokenized:
            raise RunnerError("data.pretokenized is read by sft_run.py only; remove it from this config")
        task = load_task(cli.task, "dpo")
        validate_task_section(task, config.task)
        choice = select_backend(config.model.backend, cuda_available(), importable())
        import_backend(choice)  # Unsloth patches transformers/TRL only when imported before them
        from trl import DPOConfig, DPOTrainer

        check_trainer_keys(config, DPOConfig)
        paths = run_paths("dpo_run", config.run_name)
        source, must_build = model_source(config, paths.experiment_dir)
        args = trainer_args(DPOConfig, config, paths, max_length=config.trainer.get("max_length", config.model.max_seq_length))
        print(f"runner: backend {choice.loader} ({choice.reason})", flush=True)

        # 2. Model and preference pairs.
        build_if_needed(config, source, must_build, task)
        model, tokenizer, peft_applied = load_model_and_tokenizer(config, source, choice)
        dataset = task.get_dpo_dataset(config, tokenizer)
        missing = [c for c in ("prompt", "chosen", "rejected") if c not in dataset.column_names]
        if missing:
            raise RunnerError(f"get_dpo_dataset: rows lack {', '.join(missing)} (needs prompt, chosen, rejected)")

    # 3. Train (or resume), then save the final model.
    from runners.common.callbacks import MetricsCallback, SigtermCallback  # transformers: after the checks

    resume = start_outputs(config, paths)
    sigterm = SigtermCallback()
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[MetricsCallback(paths.metrics), sigterm],
        peft_config=None if peft_applied else peft_config(config),
    )
    train_and_save(trainer, tokenizer, sigterm, config, paths, resume)


if __name__ == "__main__":
    main()
