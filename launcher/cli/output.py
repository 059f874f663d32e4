"""`--json` (alias `-o json`) for the commands that print something a script may want to read: one decorator, one
question (`wants_json`), one printer. Light: imported by `launch --help`'s commands."""
from __future__ import annotations

import json
import sys
from typing import Any

import click


def json_option(f):
    """Adds `--json` and `-o/--output json|text` (the same thing said two ways); the command gets `as_json` and
    `output`: pass both to `wants_json`."""
    f = click.option("--output", "-o", type=click.Choice(["text", "json"]), default=None,
                     help="output format: text (default) or json (= --json)")(f)
    return click.option("--json", "as_json", is_flag=True, help="machine-readable output (JSON on stdout)")(f)


def wants_json(as_json: bool, output: str | None) -> bool:
    return bool(as_json) or output == "json"


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def may_ask() -> bool:
    """A command may ask [Y/n]: a person at a terminal (stdin and stdout) and CI unset. -y skips the question."""
    import os

    try:
        return sys.stdin.isatty() and sys.stdout.isatty() and not os.environ.get("CI")
    except (AttributeError, ValueError):
        return False


def on_terminal() -> bool:
    """stdout is a terminal: rules and colour are for it; a pipe or a file gets plain text."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False
