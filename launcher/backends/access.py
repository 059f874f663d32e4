"""Helpers for the backends' `access_checks` (`launch check`): each check one line, a failure its fix."""
from __future__ import annotations

import importlib
from typing import Callable

from ..errors import UserError
from .base import Check


def library(module: str, install: str) -> Check:
    """The client library imports (its version shown), or how to install it."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        return Check("client library", False, f"{module} is not importable ({exc}): pip install {install}")
    from importlib import metadata

    try:
        version = metadata.version(module)
    except metadata.PackageNotFoundError:
        version = getattr(mod, "__version__", "")
    return Check("client library", True, f"{module} {version}".strip())


def attempt(name: str, fn: Callable[[], str]) -> Check:
    """`fn()` says what it found; a UserError (or any error) it raises is the fix, one line."""
    try:
        return Check(name, True, fn())
    except UserError as exc:
        return Check(name, False, str(exc))
    except Exception as exc:  # noqa: BLE001 - `launch check` reports, it never crashes
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Check(name, False, f"{type(exc).__name__}: {text}")
