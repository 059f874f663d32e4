"""HRM-LM trainer. Entry points: `python runners/hrm_lm_run.py ...` or `python -m runners.hrm_lm.train ...`.

Everything the user can get wrong is checked in `resolve()` before a model is built or a file is written; such
mistakes print one `error: ...` line and exit 2.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .config import HRMConfig, dump_config, load_config
from .errors import HRMUserError, fail

# The seed's `--config` default: the GPU-sized config beside this package, wherever the command runs from.
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "hrm_lm" / "default.yaml"
DEFAULT_RUN_NAME = "hrm_lm"

# Flags that override `train.<same name>` in the YAML config.
TRAIN_FLAGS = (
    "dataset", "batch_size", "eval_batch_size", "optimizer", "learning_rate", "lr_scheduler", "warmup_steps",
    "steps", "epochs", "val_every", "save_every", "checkpoint_limit", "save_best_model", "max_seq_len",
    "log_steps", "dataset_workers", "mixed_precision", "grad_clip", "compile", "seed", "weight_decay",
)


def _flag01(text: str) -> bool:
    """The seed writes `--dry_run 1` / `--dry_run 0`; a bare `--dry_run` means 1."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected 1 or 0, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hrm_lm_run.py", description="Train an HRM encoder + LM decoder. See docs/hrm_lm.md.",
        epilog="examples:\n"
               "  hrm_lm_run.py                        # no dataset named: one random batch through default.yaml\n"
               "  hrm_lm_run.py --config configs/hrm_lm/smoke.yaml --run_name demo     # CPU, seconds\n"
               "  hrm_lm_run.py --config configs/hrm_lm/smoke.yaml --epochs 2 --steps 0  # 2 epochs\n"
               "  hrm_lm_run.py --dataset data/tokenized/hrm_lm --run_name v1 --val_every 1000 --save_best_model",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="YAML with model/train/data sections (default: configs/hrm_lm/default.yaml)")
    p.add_argument("--dry_run", nargs="?", const=True, default=None, type=_flag01, metavar="1|0",
                   help="bare or 1: one forward/backward on a random batch, print the loss, write nothing; "
                        "0: train. Training also wins when --dataset is given (the seed's rule)")
    p.add_argument("--run_name", help=f"artifacts under $CHECKPOINT_DIR/<run_name>/ (default: {DEFAULT_RUN_NAME})")
    p.add_argument("--save_dir", help="put the checkpoints in exactly this directory instead (the seed's legacy "
                                      "flag; --run_name wins when both are given)")
    p.add_argument("--dataset", help="'synthetic' (built-in arithmetic) or a directory made by "
                                      "runners/hrm_lm/prepare.py; with none here or in the config (train.dataset) "
                                      "the run is one dry-run batch")
    p.add_argument("--batch_size", type=int)
    p.add_argument("--eval_batch_size", type=int)
    p.add_argument("--optimizer", choices=["adamw", "adamw_8bit"])
    p.add_argument("--learning_rate", type=float)
    p.add_argument("--weight_decay", type=float)
    p.add_argument("--lr_scheduler", choices=["cosine", "linear", "constant"])
    p.add_argument("--warmup_steps", type=int)
    p.add_argument("--steps", type=int, help="total optimizer steps (wins over --epochs); 0 = not limited by steps "
                                             "(--epochs N --steps 0 trains N epochs)")
    p.add_argument("--epochs", type=float, help="epochs over the train split (used when --steps is unset or 0)")
    p.add_argument("--val_every", type=int, help="evaluate every N steps and at the end; 0 = never")
    p.add_argument("--save_every", type=int, help="write step_N.pt every N steps (default: val_every; 0 = only "
                                                  "final.pt)")
    p.add_argument("--checkpoint_limit", type=int, help="keep the newest N step_*.pt (final.pt always kept)")
    p.add_argument("--save_best_model", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--max_seq_len", type=int, help="truncate encoder and decoder sequences to this length")
    p.add_argument("--log_steps", type=int)
    p.add_argument("--dataset_workers", type=int, help="DataLoader worker processes")
    p.add_argument("--mixed_precision", choices=["none", "bf16", "fp16"])
    p.add_argument("--grad_clip", type=float, help="max gradient norm, 0 = off")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model")
    p.add_argument("--seed", type=int)
    return p


@dataclass
class Plan:
    cfg: HRMConfig
    config_path: str
    run_name: str
    run_dir: Path
    reports_dir: Path
    tokenizer: object
    meta: dict
    dataset_dir: Path | None
    total_steps: int = 0
    n_train: int = 0
    train_samples: object = None
    val_samples: object = None
    resume_from: Path | None = None
    resume_step: int = 0
    device: str = "cpu"
    dry_run: bool = False
    # True when neither the command line nor the config names a dataset (the run is then a dry-run batch).
    no_dataset: bool = False


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_dataset_dir(raw: str) -> Path:
    """A relative path is tried against the cwd, then against $EXPERIMENT_DIR: `data/tokenized/hrm_lm` then names
    the same dataset on a laptop and on a node whose datapool lives elsewhere."""
    from launcher.layout import experiment_dir

    path = Path(raw)
    if path.is_absolute() or path.exists():
        return path.resolve()
    in_pool = experiment_dir() / path
    return in_pool if in_pool.exists() else path.resolve()


def is_dry_run(args, cfg: HRMConfig) -> bool:
    """Bare `--dry_run` or `--dry_run 1` is a dry run, `--dry_run 0` trains, and so does `--dry_run` with
    `--dataset` (the seed's rule: naming a dataset means training on it). Without `--dry_run`, a run with no dataset
    on the command line or in the config is a dry run too (the seed's default: one batch, not a training run on
    data nobody asked for)."""
    if args.dataset is not None:
        return False
    if args.dry_run is None:
        return cfg.train.dataset is None
    return bool(args.dry_run)


NO_DATASET_HINT = ("hrm_lm: no dataset given (neither --dataset nor train.dataset in the config): that was one dry-run "
                   "batch, nothing written.\n"
                   "hrm_lm: to train, add --dataset synthetic (built-in arithmetic) or --dataset DIR (made by "
                   "runners/hrm_lm/prepare.py), or set train.dataset in the config.")


def check_flags(args) -> None:
    """Values no config could make right: one line each, before anything is read or built."""
    if args.steps is not None and args.steps < 0:
        raise HRMUserError(f"--steps {args.steps}: must be >= 0 (0 = not limited by steps: --epochs N --steps 0 "
                           f"trains N epochs)")
    if args.epochs is not None and (args.epochs < 0 or not math.isfinite(args.epochs)):
        raise HRMUserError(f"--epochs {args.epochs:g}: must be a number >= 0 (0 = not limited by epochs)")


def resolve_run_dir(args) -> tuple[str, Path]:
    """(run name, checkpoint directory). --run_name: a folder under the run root; else --save_dir as given."""
    from . import checkpoint as ck

    if args.save_dir and not args.run_name:
        run_dir = Path(args.save_dir).expanduser().resolve()
        if run_dir.exists() and not run_dir.is_dir():
            raise HRMUserError(f"--save_dir {args.save_dir} is a file; give a directory")
        return run_dir.name, run_dir
    name = args.run_name if args.run_name is not None else DEFAULT_RUN_NAME
    if not name or "/" in name or name in (".", ".."):
        raise HRMUserError(f"--run_name {name!r} must be a plain folder name")
    return name, ck.run_root() / name


def resolve(args) -> Plan:
    """Validate config, flags and data; decide the run directory and the resume point. Writes nothing."""
    from . import checkpoint as ck
    from .data import load_split, read_meta, synthetic_samples
    from .tokenizer import CharTokenizer, load_tokenizer

    check_flags(args)
    overrides = {k: getattr(args, k) for k in TRAIN_FLAGS}
    cfg = load_config(args.config, overrides)
    dry = is_dry_run(args, cfg)
    if not dry and cfg.train.dataset is None:  # only `--dry_run 0` gets here: training asked for, on nothing
        raise HRMUserError("--dry_run 0 trains, but no dataset is given: add --dataset synthetic (built-in "
                           "arithmetic) or --dataset DIR, or set train.dataset in the config")
    t = cfg.train
    run_name, run_dir = resolve_run_dir(args)
    device = "cuda" if _cuda_available() else "cpu"
    if t.mixed_precision == "fp16" and device != "cuda":
        raise HRMUserError("--mixed_precision fp16 needs a CUDA GPU (GradScaler); use bf16 or none on CPU")
    if t.optimizer == "adamw_8bit":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise HRMUserError("--optimizer adamw_8bit needs bitsandbytes (pip install bitsandbytes); or use adamw")
        if device != "cuda":
            raise HRMUserError("--optimizer adamw_8bit needs a CUDA GPU; use adamw on CPU")

    dataset_dir = None
    if t.dataset in (None, "synthetic"):  # a dry run without a dataset uses the synthetic set's vocabulary
        tokenizer = CharTokenizer()
        meta = {"vocab_size": tokenizer.vocab_size, "pad_id": tokenizer.pad_id, "bos_id": tokenizer.bos_id,
                "eos_id": tokenizer.eos_id, "tokenizer": "char", "source": "synthetic"}
        meta_source = "the synthetic dataset's vocabulary"
    else:
        dataset_dir = resolve_dataset_dir(t.dataset)
        meta = read_meta(dataset_dir)
        meta_source = str(dataset_dir / "meta.json")
        tokenizer = load_tokenizer(dataset_dir / "tokenizer.json")
        if tokenizer.vocab_size != meta["vocab_size"]:
            raise HRMUserError(f"{dataset_dir}: tokenizer.json has {tokenizer.vocab_size} tokens but meta.json says "
                               f"{meta['vocab_size']}; re-run prepare.py")
    if cfg.model.vocab_size is None:
        cfg.model.vocab_size = meta["vocab_size"]
    elif cfg.model.vocab_size != meta["vocab_size"]:
        raise HRMUserError(f"{args.config}: model.vocab_size is {cfg.model.vocab_size} but {meta_source} has "
                           f"vocab_size {meta['vocab_size']}; set model.vocab_size: {meta['vocab_size']} or null")

    plan = Plan(cfg=cfg, config_path=args.config, run_name=run_name, run_dir=run_dir,
                reports_dir=ck.reports_dir(run_name), tokenizer=tokenizer, meta=meta, dataset_dir=dataset_dir,
                device=device, dry_run=dry, no_dataset=t.dataset is None)
    if dry:
        return plan

    if dataset_dir is None:
        plan.train_samples, plan.val_samples = synthetic_samples(cfg.data.synthetic, tokenizer, t.max_seq_len)
    else:
        plan.train_samples = load_split(dataset_dir, "train")
        if plan.train_samples is None or len(plan.train_samples) == 0:
            raise HRMUserError(f"{dataset_dir}: no train.jsonl or train-*.arrow with samples")
        plan.val_samples = load_split(dataset_dir, "val") if t.val_every else None
    plan.n_train = len(plan.train_samples)
    steps_per_epoch = max(1, plan.n_train // t.batch_size)
    # steps 0 or unset = not limited by steps: the epochs decide (the config guarantees one of them is > 0).
    plan.total_steps = t.steps if t.steps else max(1, math.ceil(t.epochs * steps_per_epoch))

    found = ck.latest(plan.run_dir)
    if found is not None:
        plan.resume_step, plan.resume_from = found
        state = ck.load(plan.resume_from, mmap=True)
        saved = state["config"]["model"]
        now = cfg.model.model_dump(mode="json")
        diff = sorted(k for k in now if saved.get(k) != now[k])
        if diff:
            raise HRMUserError(f"run '{run_name}' ({run_dir}) was trained with a different model config "
                               f"({', '.join(f'model.{k}: {saved.get(k)} -> {now[k]}' for k in diff[:3])}); "
                               f"use a new --run_name or the original config")
        check_same_tokenizer(state, plan)
    return plan


def check_same_tokenizer(state: dict, plan: Plan) -> None:
    """Resuming on data tokenized differently would silently train on garbage: compare the checkpoint's own
    tokenizer (embedded; older checkpoints: its meta's ids) with the dataset's."""
    where = f"run '{plan.run_name}' ({plan.resume_from})"
    saved_meta = state.get("meta") or {}
    for key in ("vocab_size", "pad_id", "bos_id", "eos_id"):
        if key in saved_meta and saved_meta[key] != plan.meta[key]:
            raise HRMUserError(f"{where} was trained with {key}={saved_meta[key]}, but the dataset has "
                               f"{plan.meta[key]}; use a new --run_name or the run's own dataset")
    if state.get("tokenizer") is not None and \
            json.loads(state["tokenizer"]) != json.loads(plan.tokenizer.to_json()):
        raise HRMUserError(f"{where} was trained with another tokenizer than the dataset's; use a new --run_name or "
                           f"the run's own dataset")


# ---- training ------------------------------------------------------------------------------------------------
def lr_lambda(kind: str, warmup: int, total: int, min_ratio: float):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "linear":
            return min_ratio + (1 - min_ratio) * (1 - progress)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def build_optimizer(model, t):
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Norm gains, biases and the Q-head bias stay out of weight decay.
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=t.learning_rate, betas=(t.beta1, t.beta2))
    if t.optimizer == "adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Deterministic shuffled batches for an epoch, so a resumed run sees exactly the batches it would have."""
    import torch

    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    if n < batch_size:
        return [perm]
    return [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def batch_stream(plan: Plan, start_step: int):
    """Yields batches from `start_step` on, across epochs, through a DataLoader (workers optional)."""
    from functools import partial

    from torch.utils.data import DataLoader

    from .data import TorchSamples, collate

    t = plan.cfg.train
    ds = TorchSamples(plan.train_samples, t.max_seq_len)
    per_epoch = len(epoch_batches(plan.n_train, t.batch_size, t.seed, 0))
    epoch, offset = divmod(start_step, per_epoch)
    coll = partial(collate, pad_id=plan.meta["pad_id"])
    while True:
        batches = epoch_batches(plan.n_train, t.batch_size, t.seed, epoch)[offset:]
        loader = DataLoader(ds, batch_sampler=batches, collate_fn=coll, num_workers=t.dataset_workers)
        yield from loader
        epoch, offset = epoch + 1, 0


class Trainer:
    def __init__(self, plan: Plan):
        import torch

        from .model import HRMLM

        self.plan = plan
        self.cfg = plan.cfg
        t = self.cfg.train
        self.device = torch.device(plan.device)
        torch.manual_seed(t.seed)
        self.model = HRMLM(self.cfg.model).to(self.device)
        self.optimizer = build_optimizer(self.model, t)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(t.lr_scheduler, t.warmup_steps, plan.total_steps, t.min_lr_ratio))
        self.scaler = torch.amp.GradScaler("cuda", enabled=t.mixed_precision == "fp16")
        self.fwd_model = torch.compile(self.model) if t.compile else self.model
        self.step = 0
        self.best_val = float("inf")
        self.generator = torch.Generator().manual_seed(t.seed + 1)
        self.stop_requested = False
        self.config_yaml = dump_config(self.cfg)
        # Embedded in every checkpoint (with meta and config), so a lone .pt loads; serialised once, not per save.
        self.tokenizer_json = plan.tokenizer.to_json()

    def autocast(self):
        import torch

        mp = self.cfg.train.mixed_precision
        if mp == "none":
            from contextlib import nullcontext

            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if mp == "bf16" else torch.float16)

    # -- state ------------------------------------------------------------------------------------------------
    def state(self) -> dict:
        import torch

        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best_val_loss": self.best_val,
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "config": self.cfg.model_dump(mode="json"),
            "meta": self.plan.meta,
            "tokenizer": self.tokenizer_json,
        }

    def load_state(self, path: Path) -> None:
        import torch

        from . import checkpoint as ck

        st = ck.load(path, map_location=self.device)
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        self.step = int(st["step"])
        self.best_val = float(st["best_val_loss"])
        torch.set_rng_state(st["rng"]["torch"].cpu())
        self.generator.set_state(st["rng"]["generator"].cpu())
        if st["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in st["rng"]["cuda"]])

    def save_step(self) -> Path:
        from . import checkpoint as ck

        return ck.save_step(self.state(), self.plan.run_dir, self.cfg.train.checkpoint_limit, self.config_yaml)

    # -- loop -------------------------------------------------------------------------------------------------
    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def train(self) -> int:
        import torch

        from . import checkpoint as ck
        from .steps import train_step

        plan, t = self.plan, self.cfg.train
        log = Logger(plan.reports_dir / "metrics.jsonl")
        ck.write_sidecars(plan.run_dir, self.config_yaml, plan.tokenizer, plan.meta)
        if plan.resume_from is not None:
            self.load_state(plan.resume_from)
            log.line(f"resumed from {plan.resume_from} at step {self.step}")
        save_every = t.save_every if t.save_every is not None else t.val_every
        if t.save_best_model and not t.val_every:
            log.line("note: --save_best_model needs validation; with --val_every 0 no best model is written")
        length = "" if t.steps else f" ({t.epochs:g} epochs)"
        log.line(f"HRM-LM run '{plan.run_name}': {self.model.num_params():,} params, {plan.n_train} train samples, "
                 f"steps {self.step}->{plan.total_steps}{length}, device {self.device.type}, dir {plan.run_dir}")
        stream = batch_stream(plan, self.step)
        window_tokens, window_start, window_loss = 0, time.perf_counter(), []
        last_eval = -1
        self.model.train()
        while self.step < plan.total_steps:
            batch = self._to_device(next(stream))
            self.optimizer.zero_grad(set_to_none=True)
            stats = train_step(self.fwd_model, batch, self.cfg.model, self.autocast, self.scaler, self.generator)
            self.scaler.unscale_(self.optimizer)
            clip = t.grad_clip if t.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            self.step += 1
            window_tokens += int(batch["encoder_mask"].sum() + batch["decoder_mask"].sum())
            window_loss.append(stats["loss"])
            if self.step % t.log_steps == 0 or self.step == plan.total_steps:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_start, 1e-9)
                # loss: mean over the steps since the last log line; the rest describe the latest step.
                log.metrics({"step": self.step, "loss": sum(window_loss) / len(window_loss), "lr": lr,
                             "grad_norm": grad_norm, "tokens_per_s": tps,
                             **{k: v for k, v in stats.items() if k != "loss"}})
                window_tokens, window_start, window_loss = 0, now, []
            if t.val_every and self.step % t.val_every == 0 and plan.val_samples is not None:
                self.evaluate(log)
                last_eval = self.step
            if self.stop_requested:
                path = self.save_step()
                log.line(f"SIGTERM: saved {path}, exiting 143")
                return 143
            if save_every and self.step % save_every == 0 and self.step < plan.total_steps:
                self.save_step()
        if t.val_every and plan.val_samples is not None and last_eval != self.step:
            self.evaluate(log)
        ck.save_checkpoint(self.state(), plan.run_dir / "final.pt", self.config_yaml)
        log.line(f"done: step {self.step}, final checkpoint {plan.run_dir / 'final.pt'}")
        return 0

    def evaluate(self, log: "Logger") -> dict:
        from . import checkpoint as ck
        from .data import TorchSamples, collate
        from .model import generate
        from .steps import eval_loss

        plan, t = self.plan, self.cfg.train
        ds = TorchSamples(plan.val_samples, t.max_seq_len)
        n = min(len(ds), t.eval_max_samples)
        self.model.eval()
        total_loss, total_tok, exact = 0.0, 0, 0
        for start in range(0, n, t.eval_batch_size):
            rows = [ds[i] for i in range(start, min(n, start + t.eval_batch_size))]
            batch = self._to_device(collate(rows, plan.meta["pad_id"]))
            loss_sum, tok = eval_loss(self.model, batch, self.cfg.model, self.autocast)
            total_loss += loss_sum
            total_tok += tok
            with self.autocast():
                outs = generate(self.model, batch["encoder_ids"], batch["encoder_mask"], plan.meta["bos_id"],
                                plan.meta["eos_id"], max_new_tokens=t.eval_max_new_tokens)
            for out, row in zip(outs, rows):
                exact += out == [x for x in row["labels"] if x != plan.meta["eos_id"]]
        self.model.train()
        val_loss = total_loss / max(1, total_tok)
        result = {"step": self.step, "val_loss": val_loss, "val_exact_match": exact / max(1, n)}
        improved = val_loss < self.best_val
        if improved:
            self.best_val = val_loss
        log.metrics(result)
        if improved and t.save_best_model:
            path = ck.save_best(self.state(), plan.run_dir, self.config_yaml)
            log.line(f"new best val_loss {val_loss:.4f} at step {self.step}: {path}")
        return result


class Logger:
    """Rich console lines plus a JSONL metrics file (appended, so a resumed run continues the same file)."""

    def __init__(self, path: Path):
        from rich.console import Console

        self.console = Console(highlight=False, soft_wrap=True)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def line(self, text: str) -> None:
        self.console.print(f"[bold cyan]hrm_lm[/] {text}")

    def metrics(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        parts = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        self.console.print(f"[bold cyan]hrm_lm[/] {parts}")


def dry_run(plan: Plan) -> int:
    import torch

    from .model import HRMLM
    from .steps import train_step

    t = plan.cfg.train
    torch.manual_seed(t.seed)
    model = HRMLM(plan.cfg.model)
    vocab, b, s = plan.cfg.model.vocab_size, min(t.batch_size, 4), min(t.max_seq_len, 16)
    g = torch.Generator().manual_seed(t.seed)
    batch = {
        "encoder_ids": torch.randint(4, vocab, (b, s), generator=g),
        "encoder_mask": torch.ones(b, s, dtype=torch.long),
        "decoder_input_ids": torch.randint(4, vocab, (b, s), generator=g),
        "decoder_mask": torch.ones(b, s, dtype=torch.long),
        "labels": torch.randint(4, vocab, (b, s), generator=g),
    }
    stats = train_step(model, batch, plan.cfg.model)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
    print(f"dry run: loss={stats['loss']:.4f} grad_norm={grad_norm:.4f} params={model.num_params():,}")
    if plan.no_dataset:
        print(NO_DATASET_HINT)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = resolve(args)
    except HRMUserError as exc:
        fail(str(exc))
    if args.save_dir and args.run_name:
        print(f"hrm_lm: --run_name given, so --save_dir {args.save_dir} is not used (checkpoints in {plan.run_dir})")
    if plan.dry_run:
        return dry_run(plan)
    if args.dry_run:
        print(f"hrm_lm: --dataset {args.dataset} given: training (not a dry run)")
    if plan.resume_from is not None and plan.resume_step >= plan.total_steps:
        print(f"hrm_lm: run '{plan.run_name}' already reached step {plan.resume_step} (>= {plan.total_steps} steps): "
              f"{plan.resume_from}; nothing to do")
        return 0
    trainer = Trainer(plan)

    def on_sigterm(signum, frame):
        trainer.stop_requested = True

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return trainer.train()
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
