"""GRPO: sample completions for the task's prompts, score them with the task's rewards, push up the better ones.

    python runners/rl_run.py --config configs/rl/smoke.yaml --task tasks/smoke_task.py [--set key=value ...]

Task hooks: get_rl_dataset(config) -> rows with "prompt"; get_reward_funcs(config, tokenizer) -> [f(prompts,
completions, **columns) -> list[float]]. SIGTERM saves a checkpoint and exits 143; a restart resumes.
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
    cli = parse_args(argv, "GRPO training with TRL")
    with user_errors():
        # 1. Check every input before building anything.
        config = load_config(cli.config, cli.set)
        if config.data.pretokenized:
            raise RunnerError("data.pretokenized is read by sft_run.py only; remove it from this config")
        task = load_task(cli.task, "rl")
        validate_task_section(task, config.task)
        choice = select_backend(config.model.backend, cuda_available(), importable())
        import_backend(choice)  # Unsloth patches transformers/TRL only when imported before them
        from trl import GRPOConfig, GRPOTrainer

        check_trainer_keys(config, GRPOConfig)
        paths = run_paths("rl_run", config.run_name)
        source, must_build = model_source(config, paths.experiment_dir)
        if config.trainer.get("use_vllm") and choice.generation != "vllm":
            raise RunnerError("trainer.use_vllm: vllm is not usable here (needs CUDA and vllm); remove it or set false")
        vllm = {"use_vllm": True, "vllm_mode": config.trainer.get("vllm_mode", "colocate")} if choice.generation == "vllm" else {}
        args = trainer_args(GRPOConfig, config, paths, **vllm)
        print(f"runner: backend {choice.loader}/{choice.generation} ({choice.reason})", flush=True)

        # 2. Model, data, rewards.
        build_if_needed(config, source, must_build, task)
        model, tokenizer, peft_applied = load_model_and_tokenizer(config, source, choice)
        dataset = task.get_rl_dataset(config)
        reward_funcs = task.get_reward_funcs(config, tokenizer)

    # 3. Train (or resume), then save the final model.
    from runners.common.callbacks import MetricsCallback, SigtermCallback  # transformers: after the checks

    resume = start_outputs(config, paths)
    sigterm = SigtermCallback()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[MetricsCallback(paths.metrics), sigterm],
        peft_config=None if peft_applied else peft_config(config),
    )
    train_and_save(trainer, tokenizer, sigterm, config, paths, resume)


if __name__ == "__main__":
    main()
