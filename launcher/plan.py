"""The Plan: everything a backend will do for a job, rendered before anything happens (`--dry-run` prints it).

How a plan is made (the same steps for every backend) lives in launcher/planner.py."""
from __future__ import annotations

import secrets as _random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .job import Job
from .spec import AgentSpec

if TYPE_CHECKING:
    from .snapshot import Snapshot


def new_job_id(job: Job) -> str:
    # ASCII [a-z0-9-] only, alphanumeric at both ends, <= 63 chars: the same id must be a k8s name (RFC 1123
    # label), an EC2 tag and a Modal app name. str.isalnum() is true for 'ü' or '²', so the test is ASCII; accents
    # are folded first so `my-script-ü` keeps its letter (`my-script-u`) instead of losing it.
    import re
    import unicodedata

    folded = unicodedata.normalize("NFKD", job.run_name).encode("ascii", "ignore").decode().lower()
    stem = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")[:40].rstrip("-") or "job"
    return f"{stem}-{_random.token_hex(3)}"


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


@dataclass
class Plan:
    """Everything a backend will do for a job, rendered offline. The backend's `render` fills `request`."""

    backend: str
    job_id: str
    job: Job
    created: float
    spec: AgentSpec  # what the agent on the node is told; inline in every remote request
    datapool: dict[str, Any]  # root on the machine, store, what is pulled and pushed
    snapshot: Snapshot | None = None  # the code snapshot for remote backends (its path None in a dry run)
    request: dict[str, Any] = field(default_factory=dict)  # argv, RunInstances, Job manifest, Modal spec, ssh steps
    price: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # What the user should read before paying: a check the backend does not make (a GPU type it cannot see),
    # a flag it ignores. Shown first in the summary (launcher/summary.py), in colour on a terminal.
    warnings: list[str] = field(default_factory=list)

    @property
    def deadline_at(self) -> float | None:
        return self.spec.deadline_at

    def to_dict(self) -> dict[str, Any]:
        from .backends import entries

        # The sections of other backends are always empty (the Job sets them aside): not worth a line each.
        job = self.job.model_dump(exclude_defaults=False, exclude={n for n in entries() if n != self.backend})
        job["workdir"] = str(Path(self.job.workdir).resolve())
        out: dict[str, Any] = {
            "backend": self.backend,
            "job_id": self.job_id,
            "job": job,
            "deadline_at": self.deadline_at,
            "deadline": iso(self.deadline_at),
            "datapool": self.datapool,
        }
        if self.snapshot:
            out["snapshot"] = {"sha256": self.snapshot.sha256, "size": self.snapshot.size, "files": self.snapshot.files}
        out["agent_spec"] = self.spec.model_dump()
        out["request"] = self.request
        if self.price:
            out["price"] = self.price
        if self.warnings:
            out["warnings"] = self.warnings
        if self.notes:
            out["notes"] = self.notes
        return out

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_yaml(self) -> str:
        import yaml

        class _Dumper(yaml.SafeDumper):
            pass

        def _str(dumper, data):
            # Scripts (user-data, bootstrap) print as readable blocks, not one escaped line.
            return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)

        _Dumper.add_representer(str, _str)
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
