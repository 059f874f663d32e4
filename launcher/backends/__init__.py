"""Backends by name. A backend is one package under launcher/backends/ plus one line here; the core (job, cli,
planner, api, pipeline) never names one and asks this registry instead.

Each package's `__init__.py` holds its `ENTRY` (launcher/backends/entry.py: options, flags, the class to import),
light enough that `launch --help` reads every entry; the backend class is imported only when a job uses it.
"""
from __future__ import annotations

import importlib
import os
from functools import lru_cache

from ..errors import UserError, did_you_mean
from .entry import BackendEntry

# name -> package; the order is the order `--help` lists them in.
BACKENDS: dict[str, str] = {
    "local": "launcher.backends.local",
    "ssh": "launcher.backends.ssh",
    "ec2": "launcher.backends.ec2",
    "k8s": "launcher.backends.k8s",
    "modal": "launcher.backends.modal",
    "slurm": "launcher.backends.slurm",
}
DEFAULT_BACKEND = "local"
# Backends from outside this package, without editing it: LAUNCHER_BACKENDS="name=package,name2=package2" (each
# package on the PYTHONPATH, defining ENTRY like the ones above).
PLUGINS_ENV = "LAUNCHER_BACKENDS"


def _plugins() -> tuple[dict[str, str], list[str]]:
    found, bad = {}, []
    for item in filter(None, (p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(","))):
        name, sep, package = item.partition("=")
        if not sep or not name.strip() or not package.strip():
            bad.append(item)
        else:
            found[name.strip()] = package.strip()
    return found, bad


_found, _bad = _plugins()
BACKENDS.update(_found)


def check_plugins() -> None:
    """A malformed LAUNCHER_BACKENDS is one error line (the CLI asks first; importing never raises)."""
    if _bad:
        raise UserError(f"bad {PLUGINS_ENV} item {_bad[0]!r}: use NAME=PACKAGE, e.g. "
                        "mycloud=mycompany.launch_backend")


def register(name: str, package: str) -> None:
    """Add a backend at run time (a plugin, a test's toy backend): `package` defines ENTRY like the built-in ones."""
    BACKENDS[name] = package
    entries.cache_clear()


def check_backend(name: str) -> None:
    if name not in BACKENDS:
        raise UserError(f"unknown backend '{name}'{did_you_mean(name, list(BACKENDS))}; "
                        f"use --backend {' or '.join(BACKENDS)}")


@lru_cache(maxsize=None)
def entries() -> dict[str, BackendEntry]:
    return {name: importlib.import_module(package).ENTRY for name, package in BACKENDS.items()}


def entry(name: str) -> BackendEntry:
    check_backend(name)
    return entries()[name]


def get_backend(name: str):
    check_plugins()
    module, _, cls = entry(name).cls.partition(":")
    return getattr(importlib.import_module(module), cls)()


def names_where(test) -> list[str]:
    """The backends whose capabilities pass `test` (for an error line that says where a request would work).
    Imports the backend classes: for error paths, not for `--help`."""
    return [name for name in BACKENDS if test(get_backend(name).capabilities)]
