"""`launch check [--backend NAME]`: can this machine use each backend? One line per thing checked (its client
library, credentials, region / context / token, the datapool store), ✓ or the fix. Each backend says what to check
(`Backend.access_checks`); the store is checked here, the same way for every backend. Reads only; every wait is
bounded by launcher/netpolicy.py. Exit 0 when everything checked is fine, 1 otherwise."""
from __future__ import annotations

import sys

import click

from ..envvars import option_default
from .flags import backend_flags, entries, given_backend_flags, place_backend_flags

MARKS = {True: ("✓", "green"), False: ("✗", "red"), None: ("-", "yellow")}


@click.command()
@click.option("--backend", "-b", "backends", multiple=True, metavar="NAME",
              shell_complete=lambda ctx, param, incomplete: [n for n in entries() if n.startswith(incomplete)],
              help="check this backend only (repeatable; default: every one); its flags say where to look")
@click.option("--datapool", default=None, metavar="URL", callback=option_default("DATAPOOL"),
              help="the store to check (default: $LAUNCHER_DATAPOOL, else the default profile's datapool)")
@click.option("--endpoint-url", default=None, metavar="URL", help="S3-compatible endpoint for an s3:// --datapool")
@backend_flags
def check(backends, datapool, endpoint_url, **options):
    """Check each backend's access from here: client library, credentials, region/context/token, the store.

    The default profile (~/.config/launcher/config.yaml, or $LAUNCHER_PROFILE) says where each backend looks
    (its section: region, context, host); flags override it when one --backend is named."""
    from ..backends import check_backend
    from ..errors import UserError
    from ..profile import load_default_profile

    for name in backends:
        check_backend(name)
    names = list(dict.fromkeys(backends)) or list(entries())
    given = given_backend_flags(options)
    if given and len(names) != 1:
        flag = next(iter(given))
        raise UserError(f"{flag.name} says where one backend looks: name it, e.g. "
                        f"`launch check --backend {_owners(flag)[0]} {flag.name} ...`")
    defaults = load_default_profile()
    datapool = datapool or defaults.get("datapool")
    endpoint_url = endpoint_url or defaults.get("endpoint_url")
    probes: dict[str, tuple[bool, str]] = {}

    def one(name: str) -> list:
        from ..backends.base import Check

        try:
            opts = _options(name, defaults, given if len(names) == 1 else {})
        except UserError as exc:
            return [Check("options", False, str(exc))]
        from ..backends import get_backend

        backend = get_backend(name)
        try:
            found = list(backend.access_checks(opts))
        except Exception as exc:  # noqa: BLE001 - a backend's bug is one line here, not a traceback
            found = [Check("checks", False, f"{type(exc).__name__}: {exc}")]
        if all(c.ok is not False for c in found):
            found.append(_store_check(backend, opts, datapool, endpoint_url, probes))
        return [c for c in found if c is not None]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = dict(zip(names, pool.map(one, names)))
    ready = []
    for name, found in results.items():
        click.echo(click.style(name, bold=True))
        width = max(len(c.name) for c in found) if found else 0
        for c in found:
            mark, colour = MARKS[c.ok]
            click.echo(f"  {click.style(mark, fg=colour)} {c.name:<{width}}  {c.detail}")
        if all(c.ok is not False for c in found):
            ready.append(name)
    click.echo(f"ready: {', '.join(ready) or 'none'} ({len(ready)} of {len(names)})")
    sys.exit(0 if len(ready) == len(names) else 1)


def _owners(flag) -> list[str]:
    return [name for name, e in entries().items() if flag in e.flags]


def _options(name: str, defaults: dict, given: dict):
    """The backend's Options: the default profile's section, then its flags (None: the backend's own defaults)."""
    from .flags import backend_options

    section = defaults.get(name)
    fields = {"backend": name, **({name: section} if isinstance(section, dict) else {})}
    place_backend_flags(given, fields)
    return backend_options(name, fields.get(name))


def _default_store_check(backend, url: str):
    """No store named: the one a launch would use (and create on first use), and whether it is there yet."""
    from ..backends.base import Check

    try:
        missing = backend.create_datapool(url, dry_run=True)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        return Check("default store", False, f"{url}: {exc}")
    return Check("default store", True, f"{url} ({'created on first launch' if missing else 'there'}; "
                                        "--datapool names another)")


def _store_check(backend, options, datapool: str | None, endpoint_url: str | None, probes: dict):
    """The datapool store, as this backend's nodes would use it: a scheme they reach, and a store that answers one
    small LIST here (the one a launch makes before it records anything)."""
    from ..backends.base import Check
    from ..datapool import mount_only
    from ..datapool.url import StoreUrl
    from ..errors import UserError

    caps = backend.capabilities
    if not datapool:
        if not caps.remote:
            return None  # a local job's datapool is a folder here
        try:
            default = backend.default_datapool(options, online=True)
        except UserError as exc:
            return Check("default store", False, str(exc))
        if default is not None:
            return _default_store_check(backend, default)
        return Check("datapool", None, "none set: pass --datapool URL or set LAUNCHER_DATAPOOL (or datapool: in "
                                       "the default profile); remote jobs meet in a store")
    try:
        scheme = StoreUrl.of(datapool).scheme
    except ValueError as exc:
        return Check("datapool", False, str(exc))
    if scheme not in caps.datapool_schemes:
        return Check("datapool", False, f"{datapool}: {scheme}:// cannot be reached from {backend.name} nodes; use "
                                        + " or ".join(f"{s}://" for s in caps.datapool_schemes))
    if mount_only(datapool):
        return Check("datapool", None, f"{datapool}: only nodes mount it (its claim is checked at launch)")
    if datapool not in probes:
        probes[datapool] = _probe(datapool, endpoint_url)
    ok, detail = probes[datapool]
    return Check("datapool", ok, detail)


def _probe(url: str, endpoint_url: str | None) -> tuple[bool, str]:
    from ..datapool import open_store

    try:
        store = open_store(url, readonly=True, endpoint_url=endpoint_url)
        try:
            store.probe()
        finally:
            getattr(store, "close", lambda: None)()
    except Exception as exc:  # noqa: BLE001 - the store's own one-line errors (no bucket, denied, unreachable)
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return False, text
    return True, f"{url} answers"
