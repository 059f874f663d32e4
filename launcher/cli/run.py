"""`launch [OPTIONS] SCRIPT [ARGS]...` (= `launch run`): build the job from the profile and flags, then plan
(--dry-run) or launch it."""
from __future__ import annotations

import os
import sys

import click

from ..envvars import option_default
from ..fastmodels import without_plugins
from .flags import DEFAULT_BACKEND, backend_flags, entries, given_backend_flags, parse_env, place_backend_flags


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--backend", "-b", default=None, metavar="NAME",
              shell_complete=lambda ctx, param, incomplete: [n for n in entries() if n.startswith(incomplete)],
              help="where to run: " + "; ".join(f"{n} ({e.summary})" for n, e in entries().items())
              + f" [default: {DEFAULT_BACKEND}]")
@click.option("--gpu", default=None, metavar="TYPE[:N]",
              help="GPU type and count, e.g. A10G, A100-80GB:2, H100:8; a count alone (2) where the backend's "
                   "machines decide the type")
@click.option("--cpus", type=float, default=None, help="CPU cores")
@click.option("--memory", default=None, metavar="SIZE", help="memory, e.g. 32Gi")
@click.option("--disk", default=None, metavar="SIZE", help="disk, e.g. 200Gi")
@click.option("--env", "-e", "env", multiple=True, metavar="K=V", help="environment variable for the script (repeatable)")
@click.option("--secret", "secrets", multiple=True, metavar="NAME",
              help="pass the env var NAME from here as a secret (repeatable; the value never enters plans or logs)")
@click.option("--experiment", default=None, help="experiment name: datapool folder experiments/NAME (default: default)")
@click.option("--datapool", default=None, metavar="URL", callback=option_default("DATAPOOL"),
              help="datapool store, e.g. file:///abs/dir or s3://bucket/prefix (the schemes each backend reaches: "
                   "its doc) "
                   "(default: $LAUNCHER_DATAPOOL)")
@click.option("--endpoint-url", default=None, metavar="URL",
              help="S3-compatible endpoint for an s3:// --datapool (default: $AWS_ENDPOINT_URL, else AWS)")
@click.option("--pending-timeout", default=None, metavar="DURATION",
              help="report and end a job still waiting for its machine after this long (default 10m)")
@click.option("--torchrun", is_flag=True, default=None,
              help="run a .py script under torchrun, one process per GPU (always with --num-nodes > 1)")
@click.option("--num-nodes", type=int, default=None, metavar="N",
              help="machines, each running the script under torchrun (the backend says how many it gives)")
@backend_flags
@click.option("--name", default=None, help="run name (default: the script's name)")
@click.option("--max-runtime", default=None, metavar="DURATION", help="stop the script after this long, e.g. 90m, 2h")
@click.option("--grace-period", default=None, metavar="DURATION", help="SIGTERM-to-SIGKILL grace (default 30s)")
@click.option("--push-interval", default=None, metavar="DURATION",
              help="push checkpoints and reports to the --datapool store this often while running (default 30s)")
@click.option("--push-timeout", default=None, metavar="DURATION",
              help="keep trying the last push this long when the store does not answer, then end the job "
                   "push_failed (exit 74); also kept free before the deadline (default 5m)")
@click.option("--spot", is_flag=True, default=None, help="use spot/preemptible capacity")
@click.option("--max-restarts", type=int, default=None, metavar="N",
              help="relaunch a preempted job up to N times (same id); it resumes from its newest pushed checkpoint")
@click.option("--terminate-after", is_flag=True, default=None, help="wait for the end, then tear the machine down")
@click.option("--keep-on-failure", is_flag=True, default=None, help="keep the machine after a failure, for debugging")
@click.option("--relay", "relay_url", default=None, metavar="URL",
              help="run as a worker of a relay run: the commander's URL (with --run-id; docs/relay.md)")
@click.option("--run-id", default=None, metavar="ID", help="with --relay: the relay run this worker serves")
@click.option("--worker-id", default=None, metavar="ID", help="with --relay: this worker's name (default: the job id)")
@click.option("--profile", default=None, metavar="FILE",
              help="YAML launch profile, over the default one ($LAUNCHER_PROFILE, else "
                   "~/.config/launcher/config.yaml); flags override both")
@click.option("--detach", "-d", is_flag=True, help="return at once; follow with `launch logs JOB -f`")
@click.option("--dry-run", is_flag=True, help="print the plan's summary (where, machine, price, deadline, datapool) "
                                              "and touch nothing")
@click.option("--full", is_flag=True, help="with --dry-run: the whole plan as YAML, the exact request included")
@click.option("--output", "-o", type=click.Choice(["summary", "yaml", "json"]), default=None, metavar="FORMAT",
              help="with --dry-run: summary (the default), yaml (the whole plan, = --full) or json")
@click.option("--yes", "-y", is_flag=True, help="launch without asking (a priced launch from a terminal asks first)")
@click.option("--json", "as_json", is_flag=True,
              help="machine-readable (= -o json): with --detach, {\"job_id\": ...} on stdout; with --dry-run, the plan")
@click.argument("script", required=False)
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def run(script, script_args, profile, detach, dry_run, env, secrets, relay_url, run_id, worker_id, full, output, yes,
        as_json, **options):
    """Run SCRIPT (the default command: `launch SCRIPT` = `launch run SCRIPT`; a profile with `script:` or a relay
    `mode:` may name it instead)."""
    with without_plugins():
        from .. import api
        from ..job import build_job
    from ..profile import launch_profile, merge

    base = launch_profile(profile, options.get("backend"))  # the default profile (config.yaml), then --profile
    if script is None and not base.get("script"):
        raise click.UsageError("Missing argument 'SCRIPT'.")
    if relay_url or run_id or worker_id:
        if not (relay_url or base.get("relay")) or not (run_id or (base.get("relay") or {}).get("run_id")):
            raise click.UsageError("--relay URL and --run-id ID go together (a worker of a relay run)")
        given_relay = {"url": relay_url, "run_id": run_id, "worker_id": worker_id}
        options["relay"] = {**(base.get("relay") or {}), **{k: v for k, v in given_relay.items() if v}}
    given = given_backend_flags(options)
    fields = merge(base, {**options, "env": parse_env(env), "secrets": list(secrets)})
    place_backend_flags(given, fields)
    fields["script"] = script or base["script"]
    fields["args"] = list(script_args) or base.get("args", [])
    job = build_job(f"profile {profile}" if profile else "launch", **fields)
    output = "json" if as_json else output  # --json is -o json
    if dry_run:
        from .. import summary

        p = api.plan(job)
        output = "yaml" if full and output in (None, "summary") else output or "summary"
        click.echo({"yaml": p.to_yaml, "json": p.to_json}.get(output, lambda: summary.text(
            p, color=sys.stdout.isatty()))(), nl=False)
        return
    if full or output in ("summary", "yaml"):
        raise click.UsageError(f"{'--full' if full else '-o ' + output} goes with --dry-run")

    def started(run):
        for warning in run.plan.warnings:
            click.echo(click.style(f"[launcher] warning: {warning}", fg="yellow") if sys.stderr.isatty()
                       else f"[launcher] warning: {warning}", err=True)
        for note in run.plan.notes:
            click.echo(f"[launcher] note: {note}", err=True)
        if detach:
            if output == "json":  # a script's handle on the job; the lines on stderr stay for people
                import json

                click.echo(json.dumps({"job_id": run.job_id, "backend": job.backend, "name": run.plan.job.run_name}))
            else:
                click.echo(run.job_id)
            click.echo(f"[launcher] started {run.job_id} on {job.backend}; follow: launch logs {run.job_id} -f; "
                       f"stop: launch down {run.job_id}", err=True)
        else:
            click.echo(f"[launcher] job {run.job_id} on {job.backend}; follow from another terminal: "
                       f"launch logs {run.job_id} -f", err=True)

    from ..errors import NotLaunched

    status_out = None
    if output == "json" and not detach:
        # Foreground with -o json: stdout is the final status's alone. The job's output (a forked agent writes to
        # fd 1 itself) and the launcher's lines go to stderr, through the same descriptor swap.
        sys.stdout.flush()
        status_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
    try:
        # progress: a remote launch's phases on stderr (stdout stays the job id's, the JSON's, the job's output)
        run = api.launch(job, detach=detach, on_start=started, confirm=None if yes else _confirm, progress=True)
    except NotLaunched:
        click.echo("[launcher] not launched", err=True)  # the user's "no": not an error, nothing was created
        sys.exit(1)
    if not detach:
        click.echo(f"[launcher] job {run.job_id} {run.state} (exit code {run.exit_code})", err=True)
        why = api.reason(run.job_id) if run.state != "succeeded" else None
        if why and run.exit_code in (2, 75):
            # The launcher ended it, not the script (a request the platform can never run: 2; capacity short past
            # the pending timeout: 75): the one error line says why.
            click.echo(f"error: {why}", err=True)
        elif why:
            click.echo(f"[launcher] reason: {why}", err=True)
        if run.teardown:
            click.echo(f"[launcher] {run.teardown}", err=True)
        if status_out is not None:
            import json

            status_out.write(json.dumps(api.job_status(run.job_id).to_dict(), indent=2, default=str) + "\n")
            status_out.flush()
        # Nothing is left to clean up: skip the interpreter's teardown of pydantic & co (~0.05-0.1 s a launch).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(run.exit_code)


def asks(plan) -> bool:
    """A launch asks first when its plan shows a price above 0, from an interactive terminal (stdin and stdout),
    with CI unset. -y skips it; the SDK never asks."""
    from .output import may_ask

    if not may_ask():
        return False  # checked first: a scripted launch imports nothing more
    from ..summary import priced

    return priced(plan)


def _confirm(plan, facts) -> bool:
    """The summary (the backend's facts filled in after preflight), then `[Y/n]`."""
    if not asks(plan):
        return True
    from ..summary import text

    click.echo(text(plan, facts(), color=sys.stderr.isatty(), dry_run=False), err=True, nl=False)
    return click.confirm("launch?", default=True, err=True)
