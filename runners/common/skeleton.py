"""The one run path of every training runner: SFT, DPO, GRPO, CPT (and PPO, SPO) differ only in their Recipe.

    run(recipe, argv)
      1. check every input, before anything is built or written: command line (ours + the seeds' spellings,
         runners/common/cli.py), config, trackers, task hooks, backend, trainer keys, paths, model source.
         A finished run stops here: exit 0, "already finished", nothing touched (runners/common/finished.py).
      2. build/load the model (recipe.load_model), the data (recipe.load_data), held-out eval data, the trainer
         (recipe.make_trainer); a dataset the trainer emptied is a user error too.
      3. first write; train or resume from the newest checkpoint; SIGTERM -> checkpoint -> exit 143; the final
         model (recipe.save_final), a final eval when there is eval data, summary.json.
    Every logging step goes to reports/<run>/metrics.jsonl, one console line and the trackers (output.report_to),
    with tokens/s everywhere and MFU on CUDA; every eval_interval steps an eval line goes the same way.

A new algorithm plugs in with a Recipe subclass in its runner script (see runners/dpo_run.py, the shortest):

    class PPO(Recipe):
        kind = "ppo"                   # model/ppo_checkpoints, reports/<run>; task hooks HOOKS["ppo"] (tasks.py)
        description = "PPO: ..."       # --help

        def config_class(self):        # a dataclass whose fields are the YAML's `trainer:` keys
            from runners.common.ppo import PPOConfig   # e.g. a transformers.TrainingArguments subclass
            return PPOConfig

        def load_data(self, ctx):      # ctx.task, ctx.config, ctx.tokenizer are ready
            ctx.train = ctx.task.get_rl_dataset(ctx.config)
            ctx.eval = self.optional_hook(ctx, "get_rl_eval_dataset", ctx.config)   # None: held out if needed

        def make_trainer(self, ctx, callbacks):
            return PPOTrainer(model=ctx.model, args=ctx.args, train_dataset=ctx.train, eval_dataset=ctx.eval,
                              processing_class=ctx.tokenizer, callbacks=callbacks, ...)

    if __name__ == "__main__":
        run(PPO())

The trainer must behave like a transformers.Trainer (subclassing it is the short way): `train(resume_from_
checkpoint=...)`, `evaluate()`, `state.global_step`, `model`, `is_world_process_zero()`, `_load_from_checkpoint`,
callbacks (`add_callback`/`remove_callback`), `checkpoint-N/trainer_state.json` on save, and `log(dict)` for its
metrics (any numeric key lands in metrics.jsonl and, as `train/<key>`, in the trackers; `eval_<key>` logged during
an evaluation lands as `eval/<key>`). Override `forced_args` (trainer arguments the recipe insists on),
`eval_rows_per_batch`, `check`, `load_model`, `model_source` or `save_final` only when the default does not fit.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from runners.common.errors import RunnerError
from runners.common.training import user_errors


@dataclass
class RunContext:
    """What the run path knows so far; each step fills its part and the recipe reads what it needs."""

    recipe: "Recipe"
    cli: Any
    config: Any = None
    task: ModuleType | None = None
    choice: Any = None  # runners.common.backend.BackendChoice
    paths: Any = None  # runners.common.paths.RunPaths
    source: str | None = None  # model path or hub id
    must_build: bool = False  # the tiny model is not built yet
    args: Any = None  # the trainer's config object
    model: Any = None
    tokenizer: Any = None
    peft_applied: bool = False  # Unsloth added the LoRA adapters already
    train: Any = None
    eval: Any = None
    extra: dict = field(default_factory=dict)  # recipe-private state


class Recipe:
    kind: str = ""
    description: str = ""
    needs_task: bool = True
    # The mixture mode this recipe's --data_config prepares (runners/common/prepared.py): "dpo" (pairs) or "rlaif"
    # (prompts); None = a recipe with its own data handling (SFT, CPT) or no mixtures at all.
    data_mode: str | None = None

    # ---- what a recipe must say ----
    def config_class(self) -> type:
        raise NotImplementedError

    def load_data(self, ctx: RunContext) -> None:
        raise NotImplementedError

    def make_trainer(self, ctx: RunContext, callbacks: list):
        raise NotImplementedError

    # ---- what it may change ----
    @property
    def script_stem(self) -> str:
        return f"{self.kind}_run"  # CHECKPOINT_DIR default: model/<kind>_checkpoints

    @property
    def hooks_kind(self) -> str:
        return self.kind

    def required_hooks(self, ctx: RunContext) -> list[str] | None:
        return None  # the HOOKS table's list for hooks_kind

    def load_config(self, path: str, overrides: list[str]):
        from runners.common.config import load_config

        return load_config(path, overrides)

    def check(self, ctx: RunContext) -> None:
        """Recipe-specific input checks, before anything is built."""
        if self.data_mode:
            from runners.common.prepared import check_data_section

            check_data_section(ctx.config.data, self.data_mode, ctx.paths.experiment_dir)
        elif getattr(ctx.config.data, "mixture", None) or getattr(ctx.config.data, "use_prepared", False):
            raise RunnerError(f"--data_config/--use_prepared (data.mixture, data.use_prepared): {self.script_stem}.py "
                              "reads its data from the task's hooks only")
        if getattr(ctx.config.data, "pretokenized", None):
            raise RunnerError("data.pretokenized is read by sft_run.py only; remove it from this config")

    def default_args(self, ctx: RunContext) -> dict:
        return {}

    def forced_args(self, ctx: RunContext) -> dict:
        return {}

    def model_source(self, ctx: RunContext) -> tuple[str, bool]:
        from runners.common.model import model_source

        return model_source(ctx.config, ctx.paths.experiment_dir)

    def load_model(self, ctx: RunContext) -> None:
        from runners.common.model import build_if_needed, load_model_and_tokenizer

        build_if_needed(ctx.config, ctx.source, ctx.must_build, ctx.task)
        ctx.model, ctx.tokenizer, ctx.peft_applied = load_model_and_tokenizer(ctx.config, ctx.source, ctx.choice)

    def peft_config(self, ctx: RunContext):
        from runners.common.model import peft_config

        return None if ctx.peft_applied else peft_config(ctx.config)

    def eval_rows_per_batch(self, ctx: RunContext) -> int:
        return int(ctx.args.per_device_eval_batch_size)

    def seq_len(self, ctx: RunContext) -> int:
        """Tokens per sequence, for the attention term of the MFU's FLOPs per token."""
        return int(getattr(ctx.args, "max_length", None) or ctx.config.model.max_seq_length)

    def empty_train_message(self, ctx: RunContext) -> str:
        return (f"no training example is left: every row is longer than model.max_seq_length "
                f"({self.seq_len(ctx)} tokens) or empty; raise model.max_seq_length or shorten the task's rows")

    def save_final(self, ctx: RunContext, trainer) -> None:
        from runners.common.model import save_final

        save_final(trainer.model, ctx.tokenizer, ctx.paths.final_model, ctx.config)

    @staticmethod
    def optional_hook(ctx: RunContext, name: str, *args):
        hook = getattr(ctx.task, name, None)
        return hook(*args) if callable(hook) else None


def run(recipe: Recipe, argv: list[str] | None = None) -> None:
    """The runner's main(): returns on success (or a no-op), exits 2 on a user error and 143 on SIGTERM."""
    ctx = RunContext(recipe=recipe, cli=None)
    with user_errors():
        _check_inputs(ctx, argv)
        done = _finished(ctx)
        if done is not None and done.final_present:
            print(f"runner: {ctx.config.run_name} already finished at step {done.step} (final model in "
                  f"{ctx.paths.final_model}); nothing to do. Raise trainer.max_steps to train further, or set "
                  "output.resume: false to start over.", flush=True)
            return
        _quiet_libraries()
        recipe.load_model(ctx)
        recipe.load_data(ctx)
        if ctx.train is None or (hasattr(ctx.train, "__len__") and len(ctx.train) == 0):
            raise RunnerError(f"the {recipe.kind} dataset is empty (the task's data hook returned no rows)")
        _held_out(ctx)
        callbacks, trackers, sigterm = _callbacks(ctx)
        ctx.extra["metrics_callback"] = callbacks[0]
        missing = [p for p in (ctx.paths.checkpoints, *ctx.paths.checkpoints.parents) if not p.exists()]
        trainer = recipe.make_trainer(ctx, callbacks)
        train_set = getattr(trainer, "train_dataset", None)
        if train_set is not None and hasattr(train_set, "__len__") and len(train_set) == 0:
            for made in missing:  # the trainer makes output_dir up front; a refused run leaves nothing behind
                if made.is_dir() and not any(made.iterdir()):
                    made.rmdir()
            raise RunnerError(recipe.empty_train_message(ctx))
    try:
        _train_and_save(ctx, trainer, sigterm, done)
    finally:
        trackers.close()


# ---- 1. inputs ----
def _check_inputs(ctx: RunContext, argv) -> None:
    from runners.common.cli import parse_cli
    from runners.common.paths import run_paths
    from runners.common.tasks import load_task, validate_task_section
    from runners.common.tracking import check_trackers

    recipe = ctx.recipe
    # Every training runner takes the seed's data flags; one that has no use for them says so in check().
    ctx.cli = cli = parse_cli(argv, f"runners/{recipe.script_stem}.py", recipe.description, recipe.needs_task)
    ctx.config = config = recipe.load_config(cli.config, cli.overrides)
    if cli.wandb_project and "wandb" not in config.output.report_to:
        config.output.report_to.append("wandb")  # the seed's flag means "log to wandb, here"
    check_trackers(config.output.report_to)
    required = recipe.required_hooks(ctx) if recipe.needs_task else []
    if recipe.needs_task and (cli.task is not None or required != []):  # tokenized data needs no task
        ctx.task = load_task(cli.task, recipe.hooks_kind, required=required)
        validate_task_section(ctx.task, config.task)
    ctx.paths = run_paths(recipe.script_stem, config.run_name)
    recipe.check(ctx)
    ctx.source, ctx.must_build = recipe.model_source(ctx)  # cheap path checks first: no torch import yet
    from runners.common.backend import cuda_available, import_backend, importable, select_backend

    ctx.choice = select_backend(getattr(config.model, "backend", "transformers"), cuda_available(), importable())
    import_backend(ctx.choice)  # Unsloth patches transformers/TRL only when imported before them
    cls = recipe.config_class()
    from runners.common.config import check_trainer_keys

    check_trainer_keys(config, cls)
    from runners.common.training import trainer_args

    ctx.args = trainer_args(cls, config, ctx.paths, recipe.default_args(ctx),
                            **_eval_args(config), **recipe.forced_args(ctx))
    from runners.common.reward_model import check_reward_section

    check_reward_section(ctx)  # reward.model's path, before any model is built or anything written
    print(f"runner: backend {ctx.choice.loader}/{ctx.choice.generation} ({ctx.choice.reason})", flush=True)


def _eval_args(config) -> dict:
    if not config.eval_interval:
        return {}
    return {"eval_strategy": "steps", "eval_steps": config.eval_interval}


def _finished(ctx: RunContext):
    if not ctx.config.output.resume:
        return None
    from runners.common.finished import finished

    done = finished(ctx.paths.checkpoints, ctx.paths.final_model, ctx.args)
    if done is not None and not ctx.config.output.save_final and not done.final_present:
        # Nothing to save at the end: a finished state is all there is.
        return type(done)(done.step, done.checkpoint, True)
    return done


def _quiet_libraries() -> None:
    """Job logs get one line per step: no \\r progress bars, no deprecation notes about the libraries' own calls."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated")
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated.*activation_checkpointing")
    if not sys.stdout.isatty():
        import datasets
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Writing model shards", "Loading weights"
        datasets.disable_progress_bars()  # "Tokenizing train dataset"


# ---- 2. data ----
def _held_out(ctx: RunContext) -> None:
    """Eval data: the task's (recipe.load_data set it), else a seeded 10% of train when the eval loop needs it;
    eval_batches caps it at K batches."""
    config = ctx.config
    if ctx.eval is None and config.eval_interval:
        if not hasattr(ctx.train, "__len__"):
            raise RunnerError("eval_interval: a streamed training set cannot be split; give the task an eval hook")
        n = len(ctx.train)
        if n < 2:
            raise RunnerError(f"eval_interval: {n} training row(s) cannot spare a held-out split; "
                              "add an eval dataset hook to the task or drop eval_interval")
        size = max(1, n // 10)
        if config.eval_batches:
            size = min(size, config.eval_batches * ctx.recipe.eval_rows_per_batch(ctx))
        ctx.train, ctx.eval = _split(ctx.train, size, config.seed)
        print(f"runner: eval on {size} held-out rows of the training data (the task has no eval data)", flush=True)
    elif ctx.eval is not None and config.eval_batches:
        ctx.eval = _head(ctx.eval, config.eval_batches * ctx.recipe.eval_rows_per_batch(ctx))


def _split(data, size: int, seed: int):
    if hasattr(data, "train_test_split"):  # datasets.Dataset
        parts = data.train_test_split(test_size=size, seed=seed, shuffle=True)
        return parts["train"], parts["test"]
    import random

    from torch.utils.data import Subset

    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    return Subset(data, sorted(order[size:])), Subset(data, sorted(order[:size]))


def _head(data, rows: int):
    if len(data) <= rows:
        return data
    if hasattr(data, "select"):
        return data.select(range(rows))
    if isinstance(data, list):
        return data[:rows]
    from torch.utils.data import Subset

    return Subset(data, range(rows))


def _callbacks(ctx: RunContext):
    from runners.common.callbacks import MetricsCallback, SigtermCallback
    from runners.common.tracking import Trackers

    config = ctx.config
    trackers = Trackers(config.output.report_to, config.run_name, ctx.paths.reports,
                        getattr(config.output, "wandb_project", None), config.model_dump(mode="json"))
    sigterm = SigtermCallback()
    return [MetricsCallback(ctx.paths.metrics, trackers, _mfu(ctx)), sigterm], trackers, sigterm


def _mfu(ctx: RunContext):
    import torch

    if not torch.cuda.is_available():
        return None
    from runners.common.mfu import flops_per_token, peak_flops

    name = torch.cuda.get_device_name()
    peak = peak_flops(name)
    if peak is None:
        print(f"runner: no MFU: {name} has no bf16 peak in runners/common/mfu.py", flush=True)
        return None
    return flops_per_token(ctx.model.config, ctx.recipe.seq_len(ctx)), peak, max(int(ctx.args.world_size), 1)


# ---- 3. train ----
def _train_and_save(ctx: RunContext, trainer, sigterm, done) -> None:
    from runners.common.callbacks import quiet_console
    from runners.common.training import start_outputs

    config, paths = ctx.config, ctx.paths
    resume = start_outputs(config, paths)
    quiet_console(trainer)
    _hide_tied_weight_warning(trainer.model)
    if done is not None:
        # Finished, but the final model is missing (cut short while saving it): save it from the last checkpoint
        # without training, since resuming a finished state trains one more step.
        print(f"runner: {config.run_name} finished at step {done.step}; saving its final model from "
              f"{done.checkpoint}", flush=True)
        trainer._load_from_checkpoint(str(done.checkpoint))
        trainer.state.global_step = done.step
        metrics = {}
    else:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        metrics = dict(result.metrics or {}) if result is not None else {}
    if sigterm.received:
        print(f"runner: checkpoint saved at step {trainer.state.global_step}; exiting 143", flush=True)
        sys.exit(143)
    summary = {"run_name": config.run_name, "global_step": trainer.state.global_step, **metrics}
    last_eval = ctx.extra["metrics_callback"].last_eval
    if last_eval and last_eval.get("step") == trainer.state.global_step:
        summary.update({k: v for k, v in last_eval.items() if k.startswith("eval_")})  # the loop's last pass
    elif ctx.eval is not None and done is None:
        final_eval = trainer.evaluate()
        summary.update(final_eval)
        print("runner: final eval " + "  ".join(f"{k.removeprefix('eval_')} {v:.4g}" for k, v in final_eval.items()
                                               if isinstance(v, (int, float)) and k not in _EVAL_TIMING), flush=True)
    if config.output.save_final and trainer.is_world_process_zero():
        ctx.recipe.save_final(ctx, trainer)
        print(f"runner: final model in {paths.final_model}", flush=True)
    (paths.reports / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


_EVAL_TIMING = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch"}


class _TiedKeysFilter:
    """Resuming loads checkpoint weights non-strictly; a tied lm_head is not stored (it *is* the embedding), so
    transformers reports it missing. That is not a problem, so it is not printed; other missing keys still are."""

    def __init__(self, tied: set[str]):
        self.tied = tied

    def filter(self, record) -> bool:
        msg = record.getMessage()
        if "missing keys in the checkpoint" not in msg:
            return True
        import ast

        try:
            keys = set(ast.literal_eval(msg.split("loaded:", 1)[1].strip().rstrip(".")))
        except (ValueError, SyntaxError, IndexError):
            return True
        return not keys or not keys <= self.tied


def _hide_tied_weight_warning(model) -> None:
    import logging

    tied = getattr(model, "_tied_weights_keys", None) or getattr(getattr(model, "base_model", None),
                                                                 "_tied_weights_keys", None) or {}
    names = set(tied) if not isinstance(tied, dict) else set(tied)
    config = getattr(model, "config", None)
    if getattr(config, "tie_word_embeddings", False):
        names.add("lm_head.weight")
    if names:
        logging.getLogger("transformers.trainer").addFilter(_TiedKeysFilter(names))
