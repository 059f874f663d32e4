"""`launch relay serve | up | down | status`: one run handed across preemptible workers (docs/relay.md)."""
from __future__ import annotations

import json
import sys
import time

import click

from .output import json_option, wants_json

SECRET_HELP = "file holding the shared secret (default: $RELAY_SHARED_SECRET)"


@click.group()
def relay():
    """Relay training: a commander hands one run across preemptible workers under leases.

    \b
      export RELAY_SHARED_SECRET=$(python -c 'import secrets; print(secrets.token_hex(32))')
      launch relay up configs/relay/mock-local.yaml
      launch relay status --commander-url http://127.0.0.1:8765
      launch relay down configs/relay/mock-local.yaml

    configs/relay/mock-local.yaml runs on this CPU; docs/relay.md lists every stack field, the lease timing and
    where the commander can live. One worker by hand: launch --relay URL --run-id RUN SCRIPT ...
    """


def _secret(file: str | None, value: str | None = None, env_name: str | None = None) -> str:
    from ..relay.auth import SECRET_ENV, load_secret

    return load_secret(file=file, value=value, env_name=env_name or SECRET_ENV)


@relay.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (0.0.0.0: every interface)")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--state-path", required=True, metavar="FILE", help="durable state (SQLite); survives kill -9")
@click.option("--shared-secret-file", metavar="FILE", help=SECRET_HELP)
@click.option("--shared-secret", metavar="VALUE", help="the secret itself (visible in `ps`: prefer the file)")
@click.option("--secret-env", default=None, metavar="NAME", help="env var holding the secret (default RELAY_SHARED_SECRET)")
@click.option("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
@click.option("--tls-key", metavar="FILE", help="its private key (PEM)")
@click.option("--keep-every", type=float, default=5.0, show_default=True, metavar="SECONDS",
              help="how often the keeper looks at each run's workers")
def serve(host, port, state_path, shared_secret_file, shared_secret, secret_env, tls_cert, tls_key, keep_every):
    """Run the commander: leases, checkpoint pointers and the keeper that replaces lost workers."""
    from ..errors import UserError
    from ..relay.server import serve as run_server

    secret = _secret(shared_secret_file, shared_secret, secret_env)
    if bool(tls_cert) != bool(tls_key):
        raise UserError("--tls-cert and --tls-key go together")
    run_server(host, port, state_path, secret, tls_cert=tls_cert, tls_key=tls_key, keep_every=keep_every)


@relay.command()
@click.argument("stack_file", metavar="STACK.yaml")
@click.option("--wait", "wait_s", type=float, default=120, show_default=True, metavar="SECONDS",
              help="how long to wait for the first workers to be launched")
def up(stack_file, wait_s):
    """Start (or reach) the commander, register the run, have it launch the workers; print one JSON summary."""
    from ..errors import UserError
    from ..relay import stack as st

    stack = st.load_stack(stack_file)
    secret = _secret(stack.commander.shared_secret_file, env_name=stack.commander.shared_secret_env)
    plans = stack.plan_backends()  # every entry plans offline and reaches the store, before anything starts
    for i, plan in enumerate(plans):
        for note in plan.notes:
            click.echo(f"[launcher] note: backends[{i}] ({plan.backend}): {note}", err=True)
    client = st.client_for(stack.commander.address, secret)
    commander = st.ensure_commander(stack, secret, client, say=lambda m: click.echo(f"[launcher] {m}", err=True))
    if stack.commander.worker_url != stack.commander.address:
        click.echo(f"[launcher] workers reach the commander at {stack.commander.worker_url}", err=True)
    from ..relay.client import RelayRefused

    since = time.time()
    try:
        client.register(stack.run, stack.run_config(), stack.ttl)
    except RelayRefused as exc:
        if commander["kind"] != "url":  # nothing of this `up` stays behind
            st.stop_commander({"commander": commander})
        raise UserError(f"run {stack.run}: {exc.message}") from None
    previous = st.read_record(stack.run) or {}
    if commander["kind"] == "url" and previous.get("url") == stack.commander.address:
        commander = previous.get("commander", commander)  # `up` again: what the first `up` started stays ours
    st.save_record(stack.run, {"run": stack.run, "url": stack.commander.address, "commander": commander,
                               "secret_file": stack.commander.shared_secret_file,
                               "secret_env": stack.commander.shared_secret_env})
    view = _wait_for_workers(client, stack.run, stack.worker.count, wait_s, since)
    workers = _import_workers(view)
    summary = {"commander_url": stack.commander.address, "public_url": stack.commander.worker_url,
               "run": stack.run, "ttl": stack.ttl, "workers": workers}
    if stack.worker.count > 1:
        # Paid hot standbys: each is a machine billed while it waits (priced as the first backend entry).
        summary["standbys"] = stack.worker.count - 1
        hourly = plans[0].price.get("usd_per_hour")
        if hourly is not None:
            summary["standby_usd_per_hour"] = round(hourly * (stack.worker.count - 1), 4)
    click.echo(json.dumps(summary, indent=2))


def _wait_for_workers(client, run_id: str, count: int, wait_s: float, since: float) -> dict:
    """The run once the keeper has `count` workers alive for it (launched since `since`, or still alive)."""
    from ..errors import UserError
    from ..relay.keeper import ALIVE

    deadline = time.time() + wait_s
    while True:
        view = client.run(run_id, events=20)
        alive = [w for w in view["workers"] if w["launched_at"] >= since - 1 or w["state"] in ALIVE]
        if len(alive) >= count or view["finished"]:
            return view
        refused = [e for e in view.get("events", []) if e["kind"] in ("launch_refused", "no_backend")]
        if time.time() > deadline:
            why = f": {refused[-1].get('error') or refused[-1].get('message')}" if refused else ""
            raise UserError(f"run {run_id}: the commander launched {len(view['workers'])} of {count} workers in "
                            f"{wait_s:.0f} s{why}; `launch relay status` shows its events")
        time.sleep(0.5)


def _import_workers(view: dict) -> list[dict]:
    """Copies the workers' job records into this machine's registry, so `launch jobs/logs/down` find them."""
    from ..registry import Registry

    from ..errors import UserError

    registry = Registry()
    for job_id, rec in (view.get("worker_records") or {}).items():
        if not rec:
            continue
        try:
            registry.get(job_id)  # known here already (a commander on this machine shares the registry)
        except UserError:
            registry.add(job_id, rec["name"], rec["backend"], rec.get("deadline"), rec["handle"],
                         state=rec.get("state", "running"))
    return [{"backend": w["backend"], "job_id": w["job_id"], "state": w["state"]} for w in view["workers"]]


def _run_and_client(target: str, commander_url: str | None, secret_file: str | None):
    """(run id, client, relay-up record) for a stack file or a run id."""
    from pathlib import Path

    from ..errors import UserError
    from ..relay import stack as st

    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        stack = st.load_stack(target)
        record = st.read_record(stack.run) or {}
        secret = _secret(secret_file or stack.commander.shared_secret_file, env_name=stack.commander.shared_secret_env)
        return stack.run, st.client_for(commander_url or stack.commander.address, secret), record
    record = st.read_record(target)
    if record is None and commander_url is None:
        raise UserError(f"unknown run {target!r} here: give its stack file, or --commander-url URL")
    record = record or {}
    secret = _secret(secret_file or record.get("secret_file"), env_name=record.get("secret_env"))
    return target, st.client_for(commander_url or record["url"], secret), record


@relay.command()
@click.argument("target", metavar="STACK.yaml|RUN")
@click.option("--commander-url", metavar="URL", help="the commander (default: from the stack or `relay up`)")
@click.option("--shared-secret-file", metavar="FILE", help=SECRET_HELP)
def down(target, commander_url, shared_secret_file):
    """End the run's workers, then the commander if `relay up` started it and it serves no other run."""
    from .. import api
    from ..errors import NotConfirmed, UserError
    from ..relay import stack as st
    from ..relay.client import RelayRefused

    run_id, client, record = _run_and_client(target, commander_url, shared_secret_file)
    st.check_answers(client)
    try:
        view = client.close(run_id)
    except RelayRefused as exc:
        raise UserError(f"run {run_id}: {exc.message}") from None
    _import_workers(client.run(run_id))
    for w in view["workers"]:
        try:
            state = api.down(w["job_id"])
        except (UserError, NotConfirmed) as exc:
            state = f"not ended here: {exc}"
        click.echo(f"[launcher] worker {w['job_id']} ({w['backend']}): {state}", err=True)
    others = [r["run_id"] for r in client.runs() if not r["finished"] and r["run_id"] != run_id]
    if record.get("commander") and not others:
        click.echo(f"[launcher] {st.stop_commander(record)}", err=True)
    elif others:
        click.echo(f"[launcher] the commander serves other runs ({', '.join(others)}): left running", err=True)
    click.echo(json.dumps({"run": run_id, "finished": True, "workers": [w["job_id"] for w in view["workers"]]}))


@relay.command()
@click.argument("run_id", required=False, metavar="[RUN]")
@click.option("--commander-url", metavar="URL", help="the commander (default: the one `relay up` used for RUN)")
@click.option("--shared-secret-file", metavar="FILE", help=SECRET_HELP)
@json_option
def status(run_id, commander_url, shared_secret_file, as_json, output):
    """Runs, lease holder, epoch, TTL left, committed checkpoint, workers and hand-offs."""
    as_json = wants_json(as_json, output)
    from ..errors import UserError
    from ..relay import stack as st
    from ..relay.client import RelayRefused

    if commander_url is None:
        records = [st.read_record(run_id)] if run_id else st.all_records()
        records = [r for r in records if r]
        if not records:
            raise UserError("no commander known here: pass --commander-url URL (or run `launch relay up` first)")
        commander_url = records[0]["url"]
        shared_secret_file = shared_secret_file or records[0].get("secret_file")
    client = st.client_for(commander_url, _secret(shared_secret_file))
    st.check_answers(client)
    try:
        # Each view carries its workers' job records, copied here for `launch jobs/logs/down` (a commander on
        # another box launches replacements that this machine has not seen yet).
        views = [client.run(run_id)] if run_id else client.runs()
    except RelayRefused as exc:
        raise UserError(f"{exc.message}") from None
    for view in views:
        _import_workers(view)
        view.pop("worker_records", None)
        if not as_json:
            view.pop("events", None)
    if as_json:
        click.echo(json.dumps({"commander_url": commander_url, "runs": views}, indent=2))
        return
    if not views:
        click.echo(f"no runs at {commander_url}")
    now = time.time()
    for v in views:
        state = "finished" if v["finished"] else (f"held by {v['holder']}, {v['ttl_left']:.0f}s left"
                                                  if v["holder"] else "waiting for a worker")
        ck = v["checkpoint"]
        ck_text = f"step {ck['step']} ({ck['age_s']:.0f}s ago, epoch {ck['epoch']})" if ck else "none yet"
        click.echo(f"{v['run_id']}: {state}; epoch {v['epoch']}; lease {v['ttl']:g}s; checkpoint {ck_text}; "
                   f"hand-offs {v['handoffs']}")
        for w in v["workers"]:
            click.echo(f"  {w['job_id']:<28} {w['backend']:<8} {w['state'] or '?':<12} "
                       f"launched {now - w['launched_at']:.0f}s ago")
    sys.stdout.flush()
