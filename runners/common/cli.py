"""The training runners' command line: ours (`--config`, `--task`, `--set`) plus the seeds' spellings.

Every seed flag is a `--set` in disguise, so a YAML key and a flag never disagree about what a setting means:

    --task-module M        = --task M                     (seed Abstract Runners)
    --eval_interval N      = --set eval_interval=N        (seed MiniMind; also --eval-interval)
    --eval_batches K       = --set eval_batches=K
    --wandb_project P      = --set output.wandb_project=P, and wandb added to output.report_to
    --data_config MIX      = --set data.mixture=MIX       (a mixture YAML, prepared for this run: tokenized for
                                                          SFT/CPT, mixed JSONL rows for DPO/GRPO/PPO/SPO)
    --use_prepared         = --set data.use_prepared=true (train on the mixture's prepared output as it is)
"""
from __future__ import annotations

import argparse
import json

from runners.common.errors import RunnerError


class _Parser(argparse.ArgumentParser):
    """A usage mistake is a user error like any other: one `error:` line and exit 2, no usage dump."""

    def error(self, message):
        raise RunnerError(f"{message} (see --help)")


def build_parser(prog: str | None, description: str, needs_task: bool, train_flags: bool = True):
    p = _Parser(prog=prog, description=description)
    p.add_argument("--config", required=True, help="run YAML (configs/<kind>/*.yaml)")
    if needs_task:
        p.add_argument("--task", "--task-module", dest="task",
                       help="task plugin: a file (tasks/smoke_task.py) or a module name (tasks.smoke_task); "
                            "SFT on tokenized data (data.pretokenized, --data_config) needs none")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set trainer.max_steps=10 (repeatable; values are YAML)")
    if not train_flags:
        return p
    p.add_argument("--eval_interval", "--eval-interval", type=int, metavar="N",
                   help="evaluate on held-out data every N optimizer steps (YAML: eval_interval; 0 = off)")
    p.add_argument("--eval_batches", "--eval-batches", type=int, metavar="K",
                   help="batches per evaluation (YAML: eval_batches; 0 = the whole held-out set)")
    p.add_argument("--wandb_project", "--wandb-project", metavar="NAME",
                   help="log to Weights & Biases under this project (YAML: output.wandb_project + report_to)")
    p.add_argument("--data_config", "--data-config", metavar="MIXTURE_YAML",
                   help="a mixture YAML (configs/data/{pretrain,posttrain/{sft,dpo,rlaif}}/*.yaml) to prepare, then "
                        "train on (data.mixture)")
    p.add_argument("--use_prepared", "--use-prepared", action="store_true",
                   help="train on the mixture's prepared output as it is, never prepare (data.use_prepared)")
    return p


def overrides_from(ns: argparse.Namespace) -> list[str]:
    """The seed flags as `--set` items, after the explicit --set ones so a flag wins over the YAML."""
    out = list(ns.set)
    if getattr(ns, "eval_interval", None) is not None:
        out.append(f"eval_interval={ns.eval_interval}")
    if getattr(ns, "eval_batches", None) is not None:
        out.append(f"eval_batches={ns.eval_batches}")
    if getattr(ns, "wandb_project", None) is not None:
        out.append(f"output.wandb_project={json.dumps(ns.wandb_project)}")  # JSON is YAML: stays a string
    if getattr(ns, "data_config", None):
        out.append(f"data.mixture={json.dumps(ns.data_config)}")
    if getattr(ns, "use_prepared", False):
        out.append("data.use_prepared=true")
    return out


def parse_cli(argv: list[str] | None, prog: str | None, description: str, needs_task: bool = True,
              train_flags: bool = True) -> argparse.Namespace:
    ns = build_parser(prog, description, needs_task, train_flags).parse_args(argv)
    ns.overrides = overrides_from(ns)
    ns.task = getattr(ns, "task", None)
    return ns
