"""PPO and SPO on the one run path (runners/common/skeleton.py): their Recipe base and their trainer.

TRL 1.16 has no PPO or SPO trainer, so `OnlineRLTrainer` is a transformers.Trainer whose `train()` is the explicit
loop below, top to bottom; everything around the loop is the Trainer's own, as for SFT/DPO/GRPO: optimizer and
scheduler, `checkpoint-N` folders (model, optimizer, scheduler, trainer_state.json; rotated by save_total_limit),
callbacks (metrics.jsonl, console line, trackers, MFU, SIGTERM) and `log()`.

    each step: pick prompts -> algorithm.step(rows, idx) (rollout, score, update) -> scheduler step -> log, eval, save

An algorithm (runners/common/ppo.py: PPO, runners/common/spo.py: SPO) holds what the Trainer does not: value head,
reference model, value tracker. It offers `step(rows, idx) -> dict of floats`, `extra_param_group()` (what it
trains besides the policy, as an optimizer param group, or None), `state_dict()` / `load_state_dict()` (saved as
`algo_state.pt` in each checkpoint, before trainer_state.json, so a checkpoint that has the state has everything),
and optionally `pick(step, batch, n)` to choose the step's prompts itself (SPO's prioritized draw). After each
step its `last_rollout` (prompts, completions, rewards, advantages, ...) is what `trainer.save_rollout_trajectories`
writes, as `<rollout_trajectory_subdir>/<rollout_trajectory_pattern>` with rollout_id = the step (one rollout each).
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import Trainer
from transformers.trainer_callback import ExportableState, TrainerState
from transformers.trainer_utils import TrainOutput

from runners.common.errors import RunnerError, die
from runners.common.ppo import TransformersSampler, VLLMSampler, rollout, score
from runners.common.rollouts import RolloutSaver
from runners.common.skeleton import Recipe, RunContext

ALGO_STATE = "algo_state.pt"


def prompt_indices(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Step `step`'s prompts: seeded permutations laid end to end, so a resumed run draws what a straight one would."""
    out, start = [], (step - 1) * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        out.extend(order[offset:offset + batch_size - len(out)])
    return out


def _average(rows: list[dict]) -> dict:
    keys = [k for k in rows[-1] if all(isinstance(r.get(k), (int, float)) for r in rows)]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


class OnlineRLTrainer(Trainer):
    def __init__(self, make_algorithm, *, model, args, train_dataset, eval_dataset, processing_class, callbacks,
                 reward_funcs, sampler_source: str, max_model_len: int, use_vllm: bool):
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, callbacks=callbacks, data_collator=lambda rows: rows)
        self.reward_funcs = reward_funcs
        self.sampler = VLLMSampler(self.model, processing_class, args, sampler_source, max_model_len) if use_vllm \
            else TransformersSampler(self.model, processing_class, args)
        self.algo = make_algorithm(self.model, processing_class, args, reward_funcs, self.sampler,
                                   len(train_dataset))
        self.rollout_saver = RolloutSaver.from_args(args)  # None unless trainer.save_rollout_trajectories

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        extra = self.algo.extra_param_group()
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if extra and id(extra["params"][0]) not in held:
            optimizer.add_param_group(extra)
        return optimizer

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        torch.save(self.algo.state_dict(), Path(output_dir) / ALGO_STATE)  # before trainer_state.json

    def _resume(self, ckpt: str) -> None:
        self._load_from_checkpoint(ckpt)
        self._load_optimizer_and_scheduler(ckpt)
        self.state = TrainerState.load_from_json(str(Path(ckpt) / "trainer_state.json"))
        try:
            self.algo.load_state_dict(torch.load(Path(ckpt) / ALGO_STATE, weights_only=True))
        except (OSError, ValueError, KeyError) as exc:  # e.g. the task's prompts changed under an SPO run
            die(f"{ckpt}: cannot resume this {type(self.algo).__name__} run from it ({exc}); "
                f"set output.resume: false to start over, or another run_name")

    def train(self, resume_from_checkpoint=None, **kwargs):
        args, n = self.args, len(self.train_dataset)
        self.create_optimizer_and_scheduler(num_training_steps=args.max_steps)
        self.algo.optimizer, self.algo.scheduler = self.optimizer, self.lr_scheduler
        self.state = TrainerState(stateful_callbacks=[
            cb for cb in self.callback_handler.callbacks + [self.control] if isinstance(cb, ExportableState)])
        self.state.train_batch_size = args.per_device_train_batch_size
        if resume_from_checkpoint:
            self._resume(resume_from_checkpoint)
        self.state.max_steps, self.state.logging_steps, self.state.save_steps = \
            args.max_steps, args.logging_steps, args.save_steps
        self.state.eval_steps = args.eval_steps
        self.model.train()
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)

        pending, tokens = [], self.state.num_input_tokens_seen or 0
        while self.state.global_step < args.max_steps:
            step = self.state.global_step + 1
            self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
            # Sampling depends on the step alone, so a resumed run goes on exactly as a straight one.
            torch.manual_seed(args.seed * 1_000_003 + step)
            picked = self.algo.pick(step, args.per_device_train_batch_size, n) if hasattr(self.algo, "pick") else None
            idx = picked.tolist() if picked is not None else \
                prompt_indices(step, args.per_device_train_batch_size, n, args.seed)
            stats = self.algo.step([self.train_dataset[i] for i in idx], torch.tensor(idx))
            if self.rollout_saver is not None and self.is_world_process_zero():
                self.rollout_saver.save(step, step=step, **self.algo.last_rollout)
            stats["learning_rate"] = self.lr_scheduler.get_last_lr()[0]
            self.lr_scheduler.step()
            tokens += stats["num_tokens"]
            pending.append(stats)

            self.state.global_step, self.state.epoch = step, step * args.per_device_train_batch_size / n
            self.state.num_input_tokens_seen = tokens
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            if step % args.logging_steps == 0 or step == args.max_steps or self.control.should_training_stop:
                self.log({**_average(pending), "num_tokens": tokens})
                pending = []
            if args.eval_strategy == "steps" and args.eval_steps and step % args.eval_steps == 0:
                self.evaluate()
            if step % args.save_steps == 0 or step == args.max_steps or self.control.should_save:
                self._save_checkpoint(self.model, trial=None)
                self.control.should_save = False
            if self.control.should_training_stop:
                break

        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        return TrainOutput(self.state.global_step, 0.0, {})

    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        """Mean reward of one sampled completion per held-out prompt (the training temperature, a fixed seed), and
        what the algorithm measures on them without learning (`eval_stats(batch, scores)`: PPO's policy loss, value
        loss and KL; SPO's KL when it has a reference)."""
        data = self.eval_dataset if eval_dataset is None else eval_dataset
        if data is None:
            return {}
        batch_size, device = self.args.per_device_eval_batch_size, next(self.model.parameters()).device
        totals, parts = [], {}
        with torch.random.fork_rng():  # the training run's sampling stays as it would be without evals
            torch.manual_seed(self.args.seed)
            for start in range(0, len(data), batch_size):
                rows = [data[i] for i in range(start, min(len(data), start + batch_size))]
                batch = rollout(self.sampler, self.processing_class, rows, device)
                scores, means = score(self.reward_funcs, rows, batch)
                totals.extend(scores.tolist())
                if hasattr(self.algo, "eval_stats"):
                    means.update(self.algo.eval_stats(batch, scores))
                for key, value in means.items():
                    parts.setdefault(key, []).append((value, len(rows)))
        metrics = {f"{metric_key_prefix}_reward": sum(totals) / max(len(totals), 1)}
        for key, pairs in parts.items():
            metrics[f"{metric_key_prefix}_{key}"] = sum(v * k for v, k in pairs) / sum(k for _, k in pairs)
        self.log(dict(metrics))
        return metrics


class OnlineRLRecipe(Recipe):
    """PPO and SPO: GRPO's task hooks and data; a runner script sets kind, description, config_class and
    make_algorithm(policy, tokenizer, args, reward_funcs, sampler, num_prompts)."""

    data_mode = "rlaif"  # --data_config: prompt rows (and an optional `answer`), prepared as JSONL

    def required_hooks(self, ctx: RunContext):
        from runners.common.prepared import rl_required_hooks

        return rl_required_hooks(ctx)

    def make_algorithm(self, policy, tokenizer, args, reward_funcs, sampler, num_prompts):
        raise NotImplementedError

    def forced_args(self, ctx: RunContext) -> dict:
        wants = ctx.config.trainer.get("use_vllm")
        if wants and ctx.choice.generation != "vllm":
            raise RunnerError("trainer.use_vllm: vllm is not usable here (needs CUDA and vllm); remove it or set false")
        return {"use_vllm": ctx.choice.generation == "vllm" if wants is None else bool(wants)}

    def load_data(self, ctx: RunContext) -> None:
        from runners.common.prepared import mixture_rows

        mixed = mixture_rows(ctx, self.data_mode)  # None: no mixture, the task's prompts
        if mixed is not None:
            where = f"--data_config {ctx.config.data.mixture}"
            ctx.train, ctx.eval = _prompts(mixed[0], where), _prompts(mixed[1], where)
        else:
            ctx.train = _prompts(ctx.task.get_rl_dataset(ctx.config), "get_rl_dataset")
            ctx.eval = _prompts(self.optional_hook(ctx, "get_rl_eval_dataset", ctx.config), "get_rl_eval_dataset")
        from runners.common.reward_model import reward_funcs

        ctx.extra["rewards"] = reward_funcs(ctx)  # the task's, plus reward.model when set; with reward.weights

    def seq_len(self, ctx: RunContext) -> int:
        return int(ctx.config.model.max_seq_length)

    def make_trainer(self, ctx: RunContext, callbacks: list):
        model = ctx.model
        lora = self.peft_config(ctx)
        if lora is not None:
            from peft import get_peft_model

            model = get_peft_model(model, lora)
        return OnlineRLTrainer(
            self.make_algorithm, model=model, args=ctx.args, train_dataset=ctx.train, eval_dataset=ctx.eval,
            processing_class=ctx.tokenizer, callbacks=callbacks, reward_funcs=ctx.extra["rewards"],
            sampler_source=ctx.source, max_model_len=ctx.config.model.max_seq_length, use_vllm=ctx.args.use_vllm,
        )


def _prompts(dataset, hook: str):
    if dataset is None:
        return None
    columns = getattr(dataset, "column_names", None) or (list(dataset[0]) if len(dataset) else [])
    if len(dataset) and "prompt" not in columns:
        raise RunnerError(f"{hook}: rows need a 'prompt' column (string or chat messages); got {', '.join(columns)}")
    return dataset
