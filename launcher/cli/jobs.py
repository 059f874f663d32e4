"""`launch jobs | status | watch | logs | down`: what was launched, from any terminal."""
from __future__ import annotations

import sys

import click

from .flags import backend_flags, backend_options, given_backend_flags, place_backend_flags

@click.command()
@click.option("--limit", default=50, show_default=True, help="how many recent jobs")
def jobs(limit):
    """List recent jobs with their state."""
    import shutil
    import time

    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .. import api
    from ..plan import iso
    from ..units import format_duration

    records = api.jobs(limit)
    if not records:
        click.echo("no jobs yet; start one with `launch SCRIPT`")
        return
    now = time.time()
    rows = []
    for r in records:
        end = r.ended or (now if r.state in ("pending", "running") else None)
        created = iso(r.created)
        state = r.state
        if state in ("submitting", "pending", "running") and (since := api.unreachable_since(r.id)):
            state = f"unreachable {time.strftime('%H:%M', time.localtime(since[0]))}"  # since then; still running
        rows.append({"ID": r.id, "NAME": r.name, "BACKEND": r.backend, "STATE": state,
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


@click.command()
@click.argument("job_id", metavar="JOB")
def status(job_id):
    """Show a job's state and exit code."""
    from .. import api

    state, code = api.reconcile(job_id)  # records a final state it finds; never relaunches
    click.echo(api.describe(job_id, state, code))
    tries = api.attempts(job_id)
    if tries:
        click.echo(f"attempt: {tries[0]} of at most {tries[1]} (--max-restarts {tries[1] - 1})")
    if state in ("failed", "lost", "timeout", "cancelled", "preempted", "push_failed"):
        why = api.reason(job_id)
        if not why and state == "preempted":  # the agent saw it coming (a SIGTERM nobody asked for) and said so
            why = "the machine was taken away (spot reclaim, drain or eviction); the agent pushed what it had" + (
                "" if tries else "; --max-restarts N relaunches such a job, resuming from its checkpoints")
        if why:
            click.echo(f"reason: {why}")


@click.command()
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

    from .. import api
    from ..units import parse_duration

    def said(state):
        tries = api.attempts(job_id)
        click.echo(f"{time.strftime('%H:%M:%S')} {job_id} {state}" + (f" (attempt {tries[0]} of at most {tries[1]})"
                                                                      if tries else ""))

    state, _ = api.watch(job_id, every=parse_duration(every, "--every") if every else None, on_change=said)
    sys.exit(0 if state == "succeeded" else 1)


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends")
def logs(job_id, follow):
    """Print a job's output (stdout and stderr as the script wrote them)."""
    from .. import api

    out = sys.stdout.buffer
    for chunk in api.logs(job_id, follow=follow):
        out.write(chunk)
        out.flush()


@click.command()
@click.argument("job_id", metavar="JOB", required=False)
@click.option("--expired", is_flag=True, help="end every job that outlived its deadline (the sweeper)")
@click.option("--backend", "-b", default=None,
              help="with --expired: also end what this backend holds past a deadline that no registry here knows")
@click.option("--dry-run", is_flag=True, help="with --expired: list what would be ended; end nothing")
@click.option("--no-wait", is_flag=True,
              help="when the backend cannot be reached: return once the cancel marker is in the store")
@backend_flags
def down(job_id, expired, backend, dry_run, no_wait, **options):
    """Stop a job and tear down everything it holds.

    When the job's machine or cloud cannot be reached, the cancel marker written into the store is what stops it:
    `down` then waits for the job's result there (at most its grace period + push timeout; --no-wait returns at
    once). Exit code: 0 when the job is confirmed ended, 1 (with the reason) when it could not be confirmed.

    With --expired (the sweeper): end every job past its deadline (it never waits for an unreachable one: the
    next sweep asks again). With --expired --backend NAME, also ask that backend for what it holds past a
    deadline that no registry here knows (its flags say where to look)."""
    from .. import api
    from ..errors import UserError

    if bool(job_id) == bool(expired):
        raise UserError("give either a JOB id or --expired, e.g. `launch down rl-run-3fa9c1`")
    given = given_backend_flags(options)
    if expired:
        if given and not backend:
            raise UserError(f"{next(iter(given)).name} says where a backend looks: it goes with "
                            "`launch down --expired --backend NAME`")
        settings = None
        if backend:
            fields = {"backend": backend}
            place_backend_flags(given, fields)
            settings = backend_options(backend, fields.get(backend))
        ended = api.down_expired(backend=backend, options=settings, dry_run=dry_run)
        click.echo("\n".join(ended) if ended else "no expired jobs")
        return
    if backend or given or dry_run:
        raise UserError("--backend, its flags and --dry-run go with --expired, e.g. `launch down --expired "
                        "--backend NAME`")
    state = api.down(job_id, wait=not no_wait)  # NotConfirmed (exit 1) when the end could not be confirmed
    if state in ("submitting", "pending", "running", "pushing", "unreachable"):  # --no-wait, the marker in place
        click.echo(f"{job_id}: cancel requested (--no-wait); `launch status {job_id}` says when it has ended")
        return
    click.echo(f"{job_id}: {state}")
