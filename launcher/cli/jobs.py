"""`launch jobs | status | watch | logs | down`: what was launched, from any terminal."""
from __future__ import annotations

import sys

import click

from .output import echo_json, json_option, on_terminal, wants_json

_STATE_HELP = "only jobs in this state (repeatable or comma-separated; `active` = submitting, pending, running)"


@click.command()
@click.option("--limit", default=50, show_default=True, help="how many recent jobs")
@click.option("--all", "all_jobs", is_flag=True, help="every job the registry holds (no --limit)")
@click.option("--state", "states", multiple=True, metavar="STATE", help=_STATE_HELP)
@click.option("--backend", "-b", default=None, metavar="NAME", help="only jobs on this backend")
@json_option
def jobs(limit, all_jobs, states, backend, as_json, output):
    """List recent jobs with their state (--json: every field `launch status --json` has, one object per job)."""
    import shutil
    import time

    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .. import api
    from ..plan import iso
    from ..units import format_duration

    found = api.jobs(None if all_jobs else limit, state=list(states) or None, backend=backend)
    if wants_json(as_json, output):
        echo_json([j.to_dict() for j in found])
        return
    if not found:
        click.echo("no jobs match" if states or backend else "no jobs yet; start one with `launch SCRIPT`")
        return
    rows = []
    for j in found:
        created = iso(j.submitted) or ""
        state = j.state
        if state in ("submitting", "pending", "running") and (since := api.unreachable_since(j.job_id)):
            state = f"unreachable {time.strftime('%H:%M', time.localtime(since[0]))}"  # since then; still running
        rows.append({"ID": j.job_id, "NAME": j.name, "BACKEND": j.backend, "STATE": state,
                     "EXIT": "" if j.exit_code is None else str(j.exit_code), "CREATED": created,
                     "CREATED_SHORT": created[5:16].replace("T", " ") + "Z",
                     "DURATION": format_duration(j.duration_s),
                     "DEADLINE": iso(j.deadline) or "-"})
    # Widest first; the first layout that fits gets printed, so no row wraps. The id always stays whole: it is
    # what `launch logs` and `launch down` take.
    layouts = [("ID", "NAME", "BACKEND", "STATE", "EXIT", "CREATED", "DURATION", "DEADLINE"),
               ("ID", "BACKEND", "STATE", "EXIT", "CREATED_SHORT", "DURATION"),
               ("ID", "STATE", "EXIT", "DURATION"),
               ("ID", "STATE")]
    measure = Console(width=10_000)
    # COLUMNS, else the terminal's width; piped (no terminal) 80: a script's pipe or a log file reads like a
    # terminal of 80 columns, without the rule and colour (`--json` is for programs).
    terminal = on_terminal()
    width = shutil.get_terminal_size((80, 24)).columns
    for cols in layouts:
        table = Table(box=box.SIMPLE_HEAD if terminal else None, show_edge=False, pad_edge=False,
                      header_style="bold" if terminal else None)
        for c in cols:
            table.add_column(c.split("_")[0], no_wrap=c == "ID")
        for row in rows:
            table.add_row(*(row[c] for c in cols))
        need = measure.measure(table).maximum
        if need <= width:
            break
    console = Console(width=width, force_terminal=terminal, no_color=not terminal, highlight=False)
    with console.capture() as out:
        console.print(table)
    click.echo("\n".join(line.rstrip() for line in out.get().splitlines()))


@click.command()
@click.argument("job_id", metavar="JOB")
@json_option
def status(job_id, as_json, output):
    """Show a job's state and exit code (the first line, `STATE (exit code N)`, is for scripts), then its backend,
    where it runs, times, duration, cost so far, attempt, log and why it ended."""
    from .. import api
    from ..plan import iso
    from ..units import format_duration

    st = api.job_status(job_id)  # records a final state it finds; never relaunches
    if wants_json(as_json, output):
        echo_json(st.to_dict())
        return
    lines = [st.summary, f"backend: {st.backend}" + (f" ({st.where})" if st.where else "")]
    times = [("submitted", st.submitted), ("started", st.started), ("ended", st.ended)]
    lines.append(", ".join(f"{k} {iso(t)}" for k, t in times if t is not None))
    lines.append(f"duration: {format_duration(st.duration_s)}"
                 + (f" so far; deadline {iso(st.deadline)}" if st.deadline and st.active else ""))
    if st.cost_usd is not None:
        lines.append(f"cost so far: ${st.cost_usd:.2f} (${st.usd_per_hour:.2f}/h)")
    else:
        lines.append("cost so far: not known (no price for this backend's machines)")
    if st.max_attempts > 1:
        lines.append(f"attempt: {st.attempt} of at most {st.max_attempts} (--max-restarts {st.max_attempts - 1})")
    lines.append(f"log: {st.log or f'the backend keeps it: launch logs {st.job_id}'}")
    if st.reason and not st.active:
        lines.append(f"reason: {st.reason}")
    click.echo("\n".join(lines))


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
@click.option("--tail", "-n", "tail", type=click.IntRange(min=0), default=None, metavar="N",
              help="only the last N lines (with -f: then what comes after)")
@click.option("--setup", is_flag=True, help="the node's setup.log and agent.log instead (from the job's store folder)")
def logs(job_id, follow, tail, setup):
    """Print a job's output (stdout and stderr as the script wrote them)."""
    from .. import api

    out = sys.stdout.buffer
    if setup:
        found = [(name, data) for name, data in api.setup_logs(job_id) if data is not None]
        if not found:
            click.echo(f"error: {job_id}: no setup.log or agent.log in its store folder yet (a remote node's agent "
                       "copies them there when it starts; a local job has none)", err=True)
            sys.exit(1)
        for name, data in found:
            out.write(f"==> {name} <==\n".encode() + data + (b"" if data.endswith(b"\n") or not data else b"\n"))
        out.flush()
        return
    if tail is not None:
        for line in api.log_lines(job_id, follow=follow, tail=tail):
            out.write(line.encode() + b"\n")
            out.flush()
        return
    for chunk in api.logs(job_id, follow=follow):
        out.write(chunk)
        out.flush()


def __getattr__(name: str):
    """`down` is built on first use: its decorator declares every backend's flags (flags.py imports each backend's
    options, ~0.25 s), which `launch jobs`, `status` and `logs`, loaded from this module, never need."""
    if name == "down":
        globals()["down"] = command = _down_command()
        return command
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _down_command():
    from .flags import backend_flags

    return _down_options(backend_flags(_down))


def _down_options(f):
    for option in reversed(_DOWN_OPTIONS):
        f = option(f)
    return click.command(name="down")(f)


_DOWN_OPTIONS = [
    click.argument("job_ids", metavar="[JOB]...", nargs=-1),
    click.option("--all", "all_jobs", is_flag=True,
                 help="every active job (narrowed by --state and --backend); asks first unless -y"),
    click.option("--state", "states", multiple=True, metavar="STATE", help="with --all: " + _STATE_HELP),
    click.option("--yes", "-y", is_flag=True, help="with --all: do not ask"),
    click.option("--expired", is_flag=True, help="end every job that outlived its deadline (the sweeper)"),
    click.option("--backend", "-b", default=None,
                 help="with --all: only this backend's jobs; with --expired: also end what this backend holds past "
                      "a deadline that no registry here knows"),
    click.option("--dry-run", is_flag=True, help="with --expired or --all: list what would be ended; end nothing"),
    click.option("--no-wait", is_flag=True,
                 help="when the backend cannot be reached: return once the cancel marker is in the store"),
]


def _down(job_ids, all_jobs, states, yes, expired, backend, dry_run, no_wait, **options):
    """Stop jobs and tear down everything they hold: `launch down JOB [JOB...]`, or `launch down --all [--state S]
    [--backend B] -y`.

    When the job's machine or cloud cannot be reached, the cancel marker written into the store is what stops it:
    `down` then waits for the job's result there (at most its grace period + push timeout; --no-wait returns at
    once). Exit code: 0 when every job is confirmed ended, 1 (with the reason) when one could not be confirmed.

    With --expired (the sweeper): end every job past its deadline (it never waits for an unreachable one: the
    next sweep asks again). With --expired --backend NAME, also ask that backend for what it holds past a
    deadline that no registry here knows (its flags say where to look)."""
    from .. import api
    from ..errors import NotConfirmed, UserError
    from ..registry import Registry
    from .flags import backend_options, given_backend_flags, place_backend_flags

    if sum((bool(job_ids), bool(expired), bool(all_jobs))) != 1:
        raise UserError("give JOB ids, --all or --expired, e.g. `launch down rl-run-3fa9c1` or "
                        "`launch down --all --state running -y`")
    if states and not all_jobs:
        raise UserError("--state goes with --all, e.g. `launch down --all --state running -y`")
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
    if given or (backend and not all_jobs) or (dry_run and not all_jobs):
        raise UserError("--backend, its flags and --dry-run go with --expired (or --backend and --dry-run with "
                        "--all), e.g. `launch down --expired --backend NAME`")
    if all_jobs:
        ids = [r.id for r in api.job_records(None, state=list(states) or "active", backend=backend)
               if r.state in ("submitting", "pending", "running")]
        if not ids:
            click.echo("no active jobs match")
            return
        if dry_run:
            click.echo("\n".join(ids))
            return
        if not yes:
            if not (sys.stdin.isatty() and on_terminal()):
                raise UserError(f"`launch down --all` would end {len(ids)} job(s) and there is no terminal to ask: "
                                "add -y (--yes)")
            click.confirm(f"end {len(ids)} job(s): {', '.join(ids)}?", abort=True)
    else:
        ids = list(dict.fromkeys(Registry().get(j).id for j in job_ids))  # every id known before anything is ended
    failed = 0
    for job_id in ids:
        try:
            state = api.down(job_id, wait=not no_wait)
        except NotConfirmed as exc:
            if len(ids) == 1:
                raise
            click.echo(f"error: {exc}", err=True)
            failed += 1
            continue
        if state in ("submitting", "pending", "running", "pushing", "unreachable"):  # --no-wait, the marker in place
            click.echo(f"{job_id}: cancel requested (--no-wait); `launch status {job_id}` says when it has ended")
            continue
        click.echo(f"{job_id}: {state}")
    if failed:
        sys.exit(1)
