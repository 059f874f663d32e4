"""launcher: run any ML runner script on Modal, EC2, Kubernetes or this machine with one command.

    from launcher import Job, launch
    run = launch(Job(script="runners/rl_run.py", args=["--config", "configs/rl/smoke.yaml"]))

Names are imported lazily so `import launcher` (and `launch --help`) stays fast and light.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Job": ("launcher.job", "Job"),
    "launch": ("launcher.api", "launch"),
    "dry_run": ("launcher.api", "plan"),  # `launcher.plan` is the module holding Plan
    "status": ("launcher.api", "status"),
    "logs": ("launcher.api", "logs"),
    "down": ("launcher.api", "down"),
    "jobs": ("launcher.api", "jobs"),
    "UserError": ("launcher.errors", "UserError"),
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'launcher' has no attribute {name!r}")
