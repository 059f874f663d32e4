"""The `launch` command line. Heavy modules are imported inside commands: `launch --help` must stay light."""
from __future__ import annotations

import importlib
import os
import sys

import click

from .fastmodels import without_plugins

with without_plugins():
    from .backends import DEFAULT_BACKEND, entries, entry

EXAMPLES = """
Examples:
  launch runners/rl_run.py --config configs/rl/smoke.yaml --task tasks/smoke_task.py
  launch --dry-run --gpu A100 runners/sft_run.py --config configs/sft/wordle.yaml --task tasks/wordle_task.py
  launch --detach --max-runtime 2h --env WANDB_MODE=offline runners/sft_run.py --config c.yaml
  launch jobs;  launch logs JOB -f;  launch down JOB;  launch down --expired
  launch sync up --experiment demo --datapool s3://bucket/pool
"""


class LaunchGroup(click.Group):
    """`launch [OPTIONS] SCRIPT ...` is `launch run [OPTIONS] SCRIPT ...`; other words are subcommands."""

    lazy_commands = {"sync": ("launcher.cli_sync", "sync"), "pipeline": ("launcher.cli_pipeline", "pipeline"),
                     "image": ("launcher.cli_image", "image")}
    # What `launch --help` says of the commands it does not import to say it (their own imports are heavier).
    lazy_help = {"sync": "Sync the datapool with its store (only changed files move, verified).",
                 "pipeline": "Run an experiment's STEPS, each a job.",
                 "image": "Build (and push) the node image from images/requirements.lock."}

    def parse_args(self, ctx, args):
        if args and args[0] not in self.list_commands(ctx) and args[0] not in ("--help", "-h", "--version"):
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx):
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx, name):
        if name in self.lazy_commands and name not in self.commands:
            module, attr = self.lazy_commands[name]
            try:
                self.add_command(getattr(importlib.import_module(module), attr), name)
            except ImportError:
                return None
        return self.commands.get(name)

    def format_help(self, ctx, formatter):
        formatter.write_usage("launch", "[OPTIONS] SCRIPT [SCRIPT_ARGS]...")
        formatter.write_usage("launch", "COMMAND [ARGS]...", prefix="   or: ")
        self.format_help_text(ctx, formatter)
        run = self.commands["run"]
        run.format_options(click.Context(run, info_name="launch", parent=ctx), formatter)
        with formatter.section("Commands"):
            rows = []
            for name in self.list_commands(ctx):
                cmd = self.commands.get(name)
                rows.append((name, cmd.get_short_help_str(100) if cmd else self.lazy_help.get(name, "")))
            formatter.write_dl(rows)
        with formatter.section("Examples"):
            lines = [*EXAMPLES.strip().splitlines()[1:], *(e.example for e in entries().values() if e.example)]
            for line in lines:
                formatter.write(" " * formatter.current_indent + line.strip() + "\n")
        formatter.write_paragraph()
        formatter.write_text("Everything after SCRIPT goes to the script untouched. `launch COMMAND --help` for more.")


@click.group(cls=LaunchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="launcher", prog_name="launch")
def cli():
    """Run an ML script on a GPU machine of any backend (--backend), with its datapool synced and every machine
    torn down when it ends. The same command runs the same job on your laptop's CPU (the default backend)."""


def _parse_env(items) -> dict[str, str]:
    from .errors import UserError

    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"bad --env {item!r}: use KEY=VALUE, e.g. --env WANDB_MODE=offline")
        env[key] = value
    return env


def _unique_flags():
    """Every backend's flags, each once (a flag several backends share, like --host, is one option)."""
    seen = {}
    for name, e in entries().items():
        for flag in e.flags:
            seen.setdefault(flag, []).append(name)
    return seen


def _backend_flags(f):
    for flag, owners in reversed(list(_unique_flags().items())):
        names = [flag.name] + ([flag.short] if flag.short else [])
        f = click.option(*names, flag.dest, is_flag=flag.is_flag, default=None, metavar=flag.metavar,
                         help=f"--backend {', '.join(owners)}: {flag.help}")(f)
    return f


def _place_backend_flags(given: dict, fields: dict) -> None:
    """Each given backend flag lands in the chosen backend's section of `fields`, over what the profile set there;
    a flag the chosen backend does not take is one error line."""
    from .errors import UserError

    chosen = fields.get("backend") or DEFAULT_BACKEND
    for flag, value in given.items():
        owners = [name for name, e in entries().items() if flag in e.flags]
        if chosen not in owners:
            raise UserError(f"{flag.name} applies to --backend {' or '.join(owners)}, not {chosen}; "
                            f"add --backend {owners[0]}")
        section = fields.get(chosen) if isinstance(fields.get(chosen), dict) else {}
        fields[chosen] = {**section, flag.field: value}


def _given_backend_flags(options: dict) -> dict:
    """Pops the backend flags out of `options`; returns those given, {Flag: value}."""
    return {flag: value for flag in _unique_flags() if (value := options.pop(flag.dest)) is not None}


@cli.command(context_settings={"allow_interspersed_args": False})
@click.option("--backend", "-b", default=None, metavar="NAME",
              help="where to run: " + "; ".join(f"{n} ({e.summary})" for n, e in entries().items())
              + " [default: local]")
@click.option("--gpu", default=None, metavar="TYPE[:N]", help="GPU type and count, e.g. A10G, A100-80GB:2, H100:8")
@click.option("--cpus", type=float, default=None, help="CPU cores")
@click.option("--memory", default=None, metavar="SIZE", help="memory, e.g. 32Gi")
@click.option("--disk", default=None, metavar="SIZE", help="disk, e.g. 200Gi")
@click.option("--env", "-e", "env", multiple=True, metavar="K=V", help="environment variable for the script (repeatable)")
@click.option("--secret", "secrets", multiple=True, metavar="NAME",
              help="pass the env var NAME from here as a secret (repeatable; the value never enters plans or logs)")
@click.option("--experiment", default=None, help="experiment name: datapool folder experiments/NAME (default: default)")
@click.option("--datapool", default=None, metavar="URL", envvar="LAUNCH_DATAPOOL",
              help="datapool store, e.g. file:///abs/dir or s3://bucket/prefix (the schemes each backend reaches: "
                   "its doc) "
                   "(default: $LAUNCH_DATAPOOL)")
@click.option("--endpoint-url", default=None, metavar="URL",
              help="S3-compatible endpoint for an s3:// --datapool (default: $AWS_ENDPOINT_URL, else AWS)")
@click.option("--pending-timeout", default=None, metavar="DURATION",
              help="report and end a job still waiting for its machine after this long (default 10m)")
@click.option("--torchrun", is_flag=True, default=None,
              help="run a .py script under torchrun, one process per GPU (always with --num-nodes > 1)")
@click.option("--num-nodes", type=int, default=None, metavar="N",
              help="machines, each running the script under torchrun (the backend says how many it gives)")
@_backend_flags
@click.option("--name", default=None, help="run name (default: the script's name)")
@click.option("--max-runtime", default=None, metavar="DURATION", help="stop the script after this long, e.g. 90m, 2h")
@click.option("--grace-period", default=None, metavar="DURATION", help="SIGTERM-to-SIGKILL grace (default 30s)")
@click.option("--push-interval", default=None, metavar="DURATION",
              help="push checkpoints and reports to the --datapool store this often while running (default 30s)")
@click.option("--spot", is_flag=True, default=None, help="use spot/preemptible capacity")
@click.option("--max-restarts", type=int, default=None, metavar="N",
              help="relaunch a preempted job up to N times (same id); it resumes from its newest pushed checkpoint")
@click.option("--terminate-after", is_flag=True, default=None, help="wait for the end, then tear the machine down")
@click.option("--keep-on-failure", is_flag=True, default=None, help="keep the machine after a failure, for debugging")
@click.option("--profile", default=None, metavar="FILE", help="YAML launch profile; flags override it")
@click.option("--detach", "-d", is_flag=True, help="return at once; follow with `launch logs JOB -f`")
@click.option("--dry-run", is_flag=True, help="print the plan (exact request, datapool, price) and touch nothing")
@click.argument("script")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def run(script, script_args, profile, detach, dry_run, env, secrets, **options):
    """Run SCRIPT (the default command: `launch SCRIPT` = `launch run SCRIPT`)."""
    with without_plugins():
        from . import api
        from .job import build_job
    from .profile import load_profile, merge

    base = load_profile(profile) if profile else {}
    given = _given_backend_flags(options)
    fields = merge(base, {**options, "env": _parse_env(env), "secrets": list(secrets)})
    chosen = fields.get("backend") or "local"
    _place_backend_flags(given, fields)
    fields["script"] = script
    fields["args"] = list(script_args) or base.get("args", [])
    job = build_job(f"profile {profile}" if profile else "launch", **fields)
    if dry_run:
        click.echo(api.plan(job).to_yaml(), nl=False)
        return

    def started(run):
        for note in run.plan.notes:
            click.echo(f"[launcher] note: {note}", err=True)
        if detach:
            click.echo(run.job_id)
            click.echo(f"[launcher] started {run.job_id} on {job.backend}; follow: launch logs {run.job_id} -f; "
                       f"stop: launch down {run.job_id}", err=True)
        else:
            click.echo(f"[launcher] job {run.job_id} on {job.backend}; follow from another terminal: "
                       f"launch logs {run.job_id} -f", err=True)

    run = api.launch(job, detach=detach, on_start=started)
    if not detach:
        click.echo(f"[launcher] job {run.job_id} {run.state} (exit code {run.exit_code})", err=True)
        if run.exit_code in (2, 75) and (why := api.reason(run.job_id)):
            # The launcher ended it, not the script (a request the platform can never run: 2; capacity short past
            # the pending timeout: 75): the one error line says why.
            click.echo(f"error: {why}", err=True)
        if run.teardown:
            click.echo(f"[launcher] {run.teardown}", err=True)
        # Nothing is left to clean up: skip the interpreter's teardown of pydantic & co (~0.05-0.1 s a launch).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(run.exit_code)


@cli.command()
@click.option("--limit", default=50, show_default=True, help="how many recent jobs")
def jobs(limit):
    """List recent jobs with their state."""
    import shutil
    import time

    from rich import box
    from rich.console import Console
    from rich.table import Table

    from . import api
    from .plan import iso
    from .units import format_duration

    records = api.jobs(limit)
    if not records:
        click.echo("no jobs yet; start one with `launch SCRIPT`")
        return
    now = time.time()
    rows = []
    for r in records:
        end = r.ended or (now if r.state in ("pending", "running") else None)
        created = iso(r.created)
        rows.append({"ID": r.id, "NAME": r.name, "BACKEND": r.backend, "STATE": r.state,
                     "EXIT": "" if r.exit_code is None else str(r.exit_code), "CREATED": created,
                     "CREATED_SHORT": created[5:16].replace("T", " ") + "Z",
                     "DURATION": format_duration(end - r.created if end else None),
                     "DEADLINE": iso(r.deadline) or "-"})
    # Widest first; a terminal gets the first layout that fits it, so no row wraps. The id always stays whole:
    # it is what `launch logs` and `launch down` take.
    layouts = [("ID", "NAME", "BACKEND", "STATE", "EXIT", "CREATED", "DURATION", "DEADLINE"),
               ("ID", "BACKEND", "STATE", "EXIT", "CREATED_SHORT", "DURATION"),
               ("ID", "STATE", "EXIT", "DURATION"),
               ("ID", "STATE")]
    measure = Console(width=10_000)
    # COLUMNS, else the terminal's width; 0 when piped, where nothing wraps and the widest layout is kept.
    width = shutil.get_terminal_size((0, 0)).columns
    for cols in layouts:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for c in cols:
            table.add_column(c.split("_")[0], no_wrap=c == "ID")
        for row in rows:
            table.add_row(*(row[c] for c in cols))
        need = measure.measure(table).maximum
        if not width or need <= width:
            break
    console = Console(width=width or need)
    with console.capture() as out:
        console.print(table)
    click.echo("\n".join(line.rstrip() for line in out.get().splitlines()))


@cli.command()
@click.argument("job_id", metavar="JOB")
def status(job_id):
    """Show a job's state and exit code."""
    from . import api

    state, code = api.reconcile(job_id)  # records a final state it finds; never relaunches
    click.echo(state if code is None else f"{state} (exit code {code})")
    if state == "unreachable":
        click.echo(f"reason: {api.observe(job_id).reason}; the job is not ended by this: ask again later")
    tries = api.attempts(job_id)
    if tries:
        click.echo(f"attempt: {tries[0]} of at most {tries[1]} (--max-restarts {tries[1] - 1})")
    if state in ("failed", "lost", "timeout", "cancelled", "preempted"):
        why = api.reason(job_id)
        if not why and state == "preempted":  # the agent saw it coming (a SIGTERM nobody asked for) and said so
            why = "the machine was taken away (spot reclaim, drain or eviction); the agent pushed what it had" + (
                "" if tries else "; --max-restarts N relaunches such a job, resuming from its checkpoints")
        if why:
            click.echo(f"reason: {why}")


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.option("--every", default=None, help="how often to look, e.g. 30s or 1m  [default: 15s, or LAUNCHER_WATCH_EVERY]")
def watch(job_id, every):
    """Look at a job until it ends, relaunching it after a preemption (--max-restarts).

    A detached job launched with --max-restarts gets a watcher by itself (it writes watch.log in
    $LAUNCHER_HOME/jobs/JOB). A laptop that sleeps stops it: then run this on a machine that stays up, e.g.
    `nohup launch watch JOB &` on a server with the same LAUNCHER_HOME (LAUNCHER_WATCH=0 starts no watcher).
    Exit code: 0 when the job succeeded, else 1.
    """
    import time

    from . import api
    from .units import parse_duration

    def said(state):
        tries = api.attempts(job_id)
        click.echo(f"{time.strftime('%H:%M:%S')} {job_id} {state}" + (f" (attempt {tries[0]} of at most {tries[1]})"
                                                                      if tries else ""))

    state, _ = api.watch(job_id, every=parse_duration(every, "--every") if every else None, on_change=said)
    sys.exit(0 if state == "succeeded" else 1)


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends")
def logs(job_id, follow):
    """Print a job's output (stdout and stderr as the script wrote them)."""
    from . import api

    out = sys.stdout.buffer
    for chunk in api.logs(job_id, follow=follow):
        out.write(chunk)
        out.flush()


@cli.command()
@click.argument("job_id", metavar="JOB", required=False)
@click.option("--expired", is_flag=True, help="end every job that outlived its deadline (the sweeper)")
@click.option("--backend", "-b", default=None,
              help="with --expired: also end what this backend holds past a deadline that no registry here knows")
@click.option("--dry-run", is_flag=True, help="with --expired: list what would be ended; end nothing")
@_backend_flags
def down(job_id, expired, backend, dry_run, **options):
    """Stop a job and tear down everything it holds.

    With --expired (the sweeper): end every job past its deadline. With --expired --backend NAME, also ask that
    backend for what it holds past a deadline that no registry here knows (its flags say where to look)."""
    from . import api
    from .errors import UserError

    if bool(job_id) == bool(expired):
        raise UserError("give either a JOB id or --expired, e.g. `launch down rl-run-3fa9c1`")
    given = _given_backend_flags(options)
    if expired:
        if given and not backend:
            raise UserError(f"{next(iter(given)).name} says where a backend looks: it goes with "
                            "`launch down --expired --backend NAME`")
        settings = None
        if backend:
            fields = {"backend": backend}
            _place_backend_flags(given, fields)
            settings = _backend_options(backend, fields.get(backend))
        ended = api.down_expired(backend=backend, options=settings, dry_run=dry_run)
        click.echo("\n".join(ended) if ended else "no expired jobs")
        return
    if backend or given or dry_run:
        raise UserError("--backend, its flags and --dry-run go with --expired, e.g. `launch down --expired "
                        "--backend NAME`")
    click.echo(f"{job_id}: {api.down(job_id)}")


def _backend_options(name: str, section):
    """A backend's options from its flags, validated in one line."""
    from pydantic import ValidationError

    from .backends import check_backend
    from .errors import UserError

    check_backend(name)
    if section is None:
        return None  # the backend's own defaults (its default region, the current context)
    try:
        return entry(name).parse_options(section)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise UserError(f"--backend {name}: {'.'.join(map(str, err['loc']))}: "
                        f"{err['msg'].removeprefix('Value error, ')}") from None


def main(argv=None) -> None:
    from .errors import CapacityError, UserError

    try:
        from .backends import check_plugins

        check_plugins()
        cli.main(args=argv, prog_name="launch", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except CapacityError as exc:  # the request is right; the capacity is short now: exit 75, try later/elsewhere
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        # One line, like our own errors, instead of click's three-line usage dump.
        ctx = getattr(exc, "ctx", None)
        path = ctx.command_path.replace("launch run", "launch") if ctx else "launch"
        click.echo(f"error: {exc.format_message().rstrip('.')}; see `{path} --help`", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
