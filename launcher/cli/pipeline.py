"""`launch pipeline`: an experiment's STEPS as one command (loaded only when used; see launcher/pipeline/)."""
from __future__ import annotations

import sys

import click

from .output import echo_json, json_option, wants_json

_CONFIG = click.option("-c", "--config", "config", metavar="FILE",
                       help="the pipeline: configs/experiments/NAME/pipeline.py (or pipeline.yaml)")
_DATAPOOL = click.option("--datapool", metavar="URL",
                         help="datapool store for every step: file:///abs/dir or s3://bucket/prefix "
                              "(default: the pipeline's DATAPOOL, then $LAUNCHER_DATAPOOL, then ./datapool)")
_PROFILE = click.option("--profile", metavar="FILE",
                        help="YAML launch profile: job defaults under the pipeline's own (default: its PROFILE)")


def _ask(summary: str) -> bool:
    """The steps' summary (what will run, where, the worst case), then [Y/n]."""
    click.echo(summary, err=True, nl=False)
    return click.confirm("run the pipeline?", default=True, err=True)


def _need(config):
    from ..errors import UserError

    if not config:
        raise UserError("give the pipeline file: launch pipeline -c configs/experiments/NAME/pipeline.py")
    return config


@click.group("pipeline", invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@_CONFIG
@click.option("--prepare-only", is_flag=True, help="create the experiment's datapool (base model, raw data) and stop")
@click.option("--dry-run", is_flag=True, help="print one row per step (backend, machine, max runtime, worst case) "
                                              "and the total; run and write nothing")
@click.option("--full", is_flag=True, help="with --dry-run: each step's whole plan as YAML (the request included)")
@click.option("--output", "-o", type=click.Choice(["summary", "yaml", "json"]), default=None, metavar="FORMAT",
              help="with --dry-run: summary (one row per step, the default), yaml (= --full) or json")
@click.option("--from", "start", metavar="STEP", help="re-run STEP and every enabled step after it")
@click.option("--only", metavar="STEP", help="re-run STEP alone (the steps before it stay as they are)")
@click.option("--force", multiple=True, metavar="STEP", help="re-run STEP even if it is up to date (repeatable)")
@click.option("-y", "--yes", is_flag=True, help="run without asking, even when a step is priced (never asked without "
                                              "a terminal or with CI set)")
@_DATAPOOL
@_PROFILE
@click.pass_context
def pipeline(ctx, config, prepare_only, dry_run, full, output, start, only, force, yes, datapool, profile):
    """Run an experiment's STEPS (tokenize -> train -> eval ...), each step a job on its own backend.

    \b
      launch pipeline -c configs/experiments/demo/pipeline.py              # prepare, then every step
      launch pipeline -c configs/experiments/demo/pipeline.py --dry-run    # each step's plan and the total price
      launch pipeline -c configs/experiments/demo/pipeline.py --prepare-only
      launch pipeline -c configs/experiments/demo/pipeline.py --from train_rl_0
      launch pipeline status -c configs/experiments/demo/pipeline.py

    A step whose last run succeeded with the same config and inputs, its outputs in the store, is skipped;
    a changed config re-runs that step and every step after it. See docs/pipelines.md.
    """
    ctx.ensure_object(dict)
    ctx.obj.update(config=config, datapool=datapool, profile=profile)
    if ctx.invoked_subcommand is not None:
        return
    from ..pipeline.run import run
    from .output import may_ask

    code = run(_need(config), datapool=datapool, profile=profile, prepare_only=prepare_only, dry=dry_run,
               start=start, only=only, force=tuple(force), confirm=None if yes or not may_ask() else _ask,
               output="yaml" if full and output in (None, "summary") else output or "summary")
    sys.stdout.flush()
    sys.exit(code)


@pipeline.command("status")
@_CONFIG
@_DATAPOOL
@_PROFILE
@json_option
@click.pass_context
def status(ctx, config, datapool, profile, as_json, output):
    """Show each step's state, backend, duration, cost and log path (--json: one object per step)."""
    from ..pipeline.run import status_rows, table

    obj = ctx.obj or {}
    path = _need(config or obj.get("config"))
    rows = status_rows(path, datapool=datapool or obj.get("datapool"), profile=profile or obj.get("profile"))
    if wants_json(as_json, output):
        echo_json({"pipeline": path, "steps": rows, "cost_usd": round(sum(r["cost_usd"] or 0.0 for r in rows), 4)})
        return
    click.echo(table(rows), nl=False)
