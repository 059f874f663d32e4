"""Backend flags on the command line: every registered backend's `Flag`s, each declared once, and where a given
one lands (the chosen backend's section). Used by `launch run` and `launch down --expired --backend NAME`."""
from __future__ import annotations

import click

from ..fastmodels import without_plugins

with without_plugins():
    from ..backends import DEFAULT_BACKEND, entries, entry

    # Every backend's options model is built here (entries() is cached), not at run.py's first entries() call
    # outside this block: the first model class would scan every installed distribution's entry points.
    entries()


def parse_env(items) -> dict[str, str]:
    from ..errors import UserError

    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"bad --env {item!r}: use KEY=VALUE, e.g. --env WANDB_MODE=offline")
        env[key] = value
    return env


def unique_flags():
    """Every backend's flags, each once (a flag several backends share, like --host, is one option)."""
    seen = {}
    for name, e in entries().items():
        for flag in e.flags:
            seen.setdefault(flag, []).append(name)
    return seen


def backend_flags(f):
    for flag, owners in reversed(list(unique_flags().items())):
        names = [flag.name] + ([flag.short] if flag.short else [])
        f = click.option(*names, flag.dest, is_flag=flag.is_flag, default=None, metavar=flag.metavar,
                         help=f"--backend {', '.join(owners)}: {flag.help}")(f)
    return f


def place_backend_flags(given: dict, fields: dict) -> None:
    """Each given backend flag lands in the chosen backend's section of `fields`, over what the profile set there;
    a flag the chosen backend does not take is one error line."""
    from ..errors import UserError

    chosen = fields.get("backend") or DEFAULT_BACKEND
    for flag, value in given.items():
        owners = [name for name, e in entries().items() if flag in e.flags]
        if chosen not in owners:
            raise UserError(f"{flag.name} applies to --backend {' or '.join(owners)}, not {chosen}; "
                            f"add --backend {owners[0]}")
        section = fields.get(chosen) if isinstance(fields.get(chosen), dict) else {}
        fields[chosen] = {**section, flag.field: value}


def given_backend_flags(options: dict) -> dict:
    """Pops the backend flags out of `options`; returns those given, {Flag: value}."""
    return {flag: value for flag in unique_flags() if (value := options.pop(flag.dest)) is not None}


def backend_options(name: str, section):
    """A backend's options from its flags, validated in one line."""
    from pydantic import ValidationError

    from ..backends import check_backend
    from ..errors import UserError

    check_backend(name)
    if section is None:
        return None  # the backend's own defaults (its default region, the current context)
    try:
        return entry(name).parse_options(section)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise UserError(f"--backend {name}: {'.'.join(map(str, err['loc']))}: "
                        f"{err['msg'].removeprefix('Value error, ')}") from None
