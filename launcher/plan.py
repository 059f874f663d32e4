"""The Plan: everything a backend will do for a job, rendered before anything happens (`--dry-run` prints it)."""
from __future__ import annotations

import secrets as _random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .job import Job


def new_job_id(job: Job) -> str:
    # Lowercase and dash-only so the same id works as a k8s name, an EC2 tag and a Modal app name.
    stem = "".join(c if c.isalnum() else "-" for c in job.run_name.lower()).strip("-")[:40] or "job"
    return f"{stem}-{_random.token_hex(3)}"


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


@dataclass
class Plan:
    backend: str
    job_id: str
    job: Job
    request: dict[str, Any]  # the exact request the backend sends: argv, RunInstances, Job manifest, Modal spec
    datapool: dict[str, Any]  # root on the machine, store, what is pulled and pushed
    created: float = field(default_factory=time.time)
    price: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def deadline(self) -> float | None:
        if self.job.max_runtime is None:
            return None
        return self.created + self.job.max_runtime + self.job.grace_period

    def to_dict(self) -> dict[str, Any]:
        job = self.job.model_dump(exclude_defaults=False)
        job["workdir"] = str(Path(self.job.workdir).resolve())
        out: dict[str, Any] = {
            "backend": self.backend,
            "job_id": self.job_id,
            "job": job,
            "deadline": iso(self.deadline),
            "datapool": self.datapool,
            "request": self.request,
        }
        if self.price:
            out["price"] = self.price
        if self.notes:
            out["notes"] = self.notes
        return out

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False, width=120)
