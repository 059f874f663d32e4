"""The job registry: one SQLite file under $LAUNCHER_HOME shared by every `launch` process on this machine.

WAL mode and one short transaction per call, so concurrent launches, `launch jobs` and detached agents never
corrupt it or block each other for long.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

ACTIVE_STATES = ("pending", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled", "timeout", "preempted", "lost")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    backend TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    ended REAL,
    deadline REAL,
    exit_code INTEGER,
    handle TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);
"""


def launcher_home() -> Path:
    return Path(os.environ.get("LAUNCHER_HOME") or Path.home() / ".launcher")


@dataclass
class JobRecord:
    id: str
    name: str
    backend: str
    state: str
    created: float
    ended: float | None
    deadline: float | None
    exit_code: int | None
    handle: dict[str, Any]


class Registry:
    def __init__(self, home: Path | None = None):
        self.home = home or launcher_home()
        self.path = self.home / "jobs.db"

    def _connect(self) -> sqlite3.Connection:
        self.home.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.executescript(_SCHEMA)
        return conn

    def add(self, job_id: str, name: str, backend: str, deadline: float | None, handle: dict[str, Any],
            state: str = "running") -> None:
        with closing(self._connect()) as c:
            c.execute(
                "INSERT INTO jobs (id, name, backend, state, created, deadline, handle) VALUES (?,?,?,?,?,?,?)",
                (job_id, name, backend, state, time.time(), deadline, json.dumps(handle)),
            )

    def update(self, job_id: str, **fields: Any) -> None:
        if "handle" in fields:
            fields["handle"] = json.dumps(fields["handle"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with closing(self._connect()) as c:
            c.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def finish(self, job_id: str, state: str, exit_code: int | None, ended: float | None = None) -> None:
        # Only the first final state sticks: a late status poll must not overwrite "cancelled" with "failed".
        with closing(self._connect()) as c:
            c.execute(
                "UPDATE jobs SET state = ?, exit_code = ?, ended = ? WHERE id = ? AND state IN ('pending', 'running')",
                (state, exit_code, ended or time.time(), job_id),
            )

    def get(self, job_id: str) -> JobRecord:
        if not self.path.exists():
            raise UserError(f"unknown job '{job_id}': no jobs yet; `launch jobs` lists them")
        with closing(self._connect()) as c:
            row = c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                matches = [r[0] for r in c.execute("SELECT id FROM jobs WHERE id LIKE ?", (job_id + "%",))]
        if row is None:
            if len(matches) == 1:
                return self.get(matches[0])
            raise UserError(f"unknown job '{job_id}'; `launch jobs` lists the job ids")
        return _record(row)

    def list(self, limit: int = 50) -> list[JobRecord]:
        if not self.path.exists():
            return []
        with closing(self._connect()) as c:
            rows = c.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [_record(r) for r in rows]

    def active(self) -> list[JobRecord]:
        if not self.path.exists():
            return []
        with closing(self._connect()) as c:
            rows = c.execute("SELECT * FROM jobs WHERE state IN ('pending', 'running')").fetchall()
        return [_record(r) for r in rows]


def _record(row: tuple) -> JobRecord:
    id_, name, backend, state, created, ended, deadline, exit_code, handle = row
    return JobRecord(id_, name, backend, state, created, ended, deadline, exit_code, json.loads(handle))
