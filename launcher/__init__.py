"""launcher: run any ML runner script on Modal, EC2, Kubernetes or this machine with one command.

    from launcher import Job, launch
    run = launch(Job(script="runners/rl_run.py", args=["--config", "configs/rl/smoke.yaml"]), detach=True)
    run.wait(); print(run.status().summary)

Names are imported lazily so `import launcher` (and `launch --help`) stays fast and light; type checkers and IDEs
see them through the `TYPE_CHECKING` imports below (the same names as `__all__`). docs/api.md has the whole API.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["Job", "JobStatus", "NotConfirmed", "Plan", "Run", "UserError", "down", "dry_run", "jobs", "launch",
           "logs", "status"]

if TYPE_CHECKING:
    from .api import JobStatus, Run, jobs, launch
    from .api import down_job as down
    from .api import job_status as status
    from .api import log_lines as logs
    from .api import plan as dry_run
    from .errors import NotConfirmed, UserError
    from typing import Any

    from .job import JobFields
    from .plan import Plan

    class Job(JobFields):
        """The model `launcher.job` builds at import: JobFields plus one optional section per registered backend
        (`ec2=...`, `k8s=...`), which no static signature can list; its fields are typed, its keywords checked
        when it is built (an error names the field)."""

        def __init__(self, **fields: Any) -> None: ...

_LAZY = {
    "Job": ("launcher.job", "Job"),
    "JobStatus": ("launcher.api", "JobStatus"),
    "NotConfirmed": ("launcher.errors", "NotConfirmed"),
    "Plan": ("launcher.plan", "Plan"),
    "Run": ("launcher.api", "Run"),
    "UserError": ("launcher.errors", "UserError"),
    "down": ("launcher.api", "down_job"),  # -> JobStatus
    "dry_run": ("launcher.api", "plan"),  # `launcher.plan` is the module holding Plan
    "jobs": ("launcher.api", "jobs"),  # -> list[JobStatus]
    "launch": ("launcher.api", "launch"),  # -> Run
    "logs": ("launcher.api", "log_lines"),  # -> str lines
    "status": ("launcher.api", "job_status"),  # -> JobStatus
}

if not TYPE_CHECKING:  # hidden from type checkers, so a name missing above is an error there, not `Any`

    def __getattr__(name: str):
        if name in _LAZY:
            import importlib

            module, attr = _LAZY[name]
            return getattr(importlib.import_module(module), attr)
        raise AttributeError(f"module 'launcher' has no attribute {name!r}")
