"""The job registry: one SQLite file under $LAUNCHER_HOME shared by every `launch` process on this machine.

WAL mode and one short transaction per call, so concurrent launches, `launch jobs` and detached agents never
corrupt it or block each other for long.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

# "submitting": recorded before the backend starts anything, so a crash mid-submit still leaves a record to clean up.
ACTIVE_STATES = ("submitting", "pending", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled", "timeout", "preempted", "lost", "push_failed")

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
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, deadline);
"""
# jobs_state: the active jobs (every `launch jobs` refreshes them) and the sweeper's expired ones are a few rows
# among many ended ones; without it each of those reads every record (100,000 of them in bench/scale.py).


# Job ids are `<stem>-<hex>` in these characters only (plan.new_job_id); anything else is never a prefix of one,
# and SQL wildcards (`%`, `_`) must never reach a query as a pattern.
_ID_CHARS = re.compile(r"[a-z0-9-]+")
_SHOWN_MATCHES = 5
_COLUMNS = ("name", "backend", "state", "created", "ended", "deadline", "exit_code", "handle")
_IN_ACTIVE = "(" + ", ".join(f"'{s}'" for s in ACTIVE_STATES) + ")"


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
        # Any thread may use it (one at a time, under _CONN_LOCK): see _db.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            # WAL + NORMAL: a crash can lose the last commit, never corrupt the file; saves an fsync per call.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _db(self):
        """A connection; a registry that cannot be opened or written is the user's to fix: one line naming it.

        One connection per process and file, kept between calls (and used by one thread at a time): opening one,
        and closing the last one (SQLite then checkpoints the WAL into the file and deletes it), cost ~2 ms and
        ~10 ms a write, paid a dozen times per job by `launch down --expired` (bench/scale.py, 1,000 jobs: 9.6 s,
        now 4.7 s with the sweeper's own query). It is dropped when the file at the path is no longer the one it
        opened (removed, replaced) or after an error, and never used in a forked child (SQLite connections must not
        cross fork())."""
        with _CONN_LOCK:
            key = str(self.path)
            conn = None
            try:
                conn = _reuse(key, self.path)
                if conn is None:
                    conn = self._connect()
                    st = os.stat(self.path)
                    _CONNS[key] = (os.getpid(), (st.st_dev, st.st_ino), conn)
                yield conn
                if conn.in_transaction:  # a caller's error mid-transaction: the next call starts clean
                    conn.rollback()
            except sqlite3.IntegrityError:
                raise  # a constraint (a duplicate id) is our bug, not the file's state
            except (sqlite3.Error, OSError) as exc:
                _drop(key, conn)
                raise self._unusable(exc) from None
            except BaseException:
                _drop(key, conn)
                raise

    def _unusable(self, exc: BaseException) -> UserError:
        name = getattr(exc, "sqlite_errorname", "") or ""
        above = self.home
        while not above.exists() and above.parent != above:
            above = above.parent
        if not above.is_dir():
            fix = f"{above} is a file: set LAUNCHER_HOME to a directory (or remove that file)"
        elif self.path.is_dir():
            fix = "it is a directory: remove or rename it (a new registry is created) or set LAUNCHER_HOME elsewhere"
        elif name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            fix = (f"it is not a valid database: move it aside (mv {self.path} {self.path}.bad; a new one is created) "
                   f"or set LAUNCHER_HOME elsewhere")
        elif self.path.exists() and not os.access(self.path, os.W_OK):
            fix = f"make {self.path} writable (chmod u+w) or set LAUNCHER_HOME to a writable directory"
        elif not os.access(above, os.W_OK | os.X_OK):
            fix = f"make {above} writable or set LAUNCHER_HOME to a writable directory"
        else:
            fix = f"check {self.home} (disk full? permissions?) or set LAUNCHER_HOME to another directory"
        return UserError(f"job registry {self.path} cannot be used ({_one_line(exc)}): {fix}")

    def check_writable(self) -> None:
        """Raise the UserError above unless a job could be recorded now: opens the registry, creates the schema,
        and writes a row in a transaction that is rolled back. Launch calls it before it provisions anything."""
        with self._db() as c:
            c.execute("BEGIN IMMEDIATE")  # takes the write lock: a read-only file or directory fails here
            try:
                c.execute("INSERT INTO jobs (id, name, backend, state, created) VALUES (?,?,?,?,?)",
                          (f"~write-check-{os.getpid()}", "~", "~", "submitting", time.time()))
            finally:
                c.execute("ROLLBACK")

    def add(self, job_id: str, name: str, backend: str, deadline: float | None, handle: dict[str, Any],
            state: str = "running") -> None:
        if state not in ACTIVE_STATES + FINAL_STATES:
            raise ValueError(f"unknown job state {state!r}")
        with self._db() as c:
            c.execute(
                "INSERT INTO jobs (id, name, backend, state, created, deadline, handle) VALUES (?,?,?,?,?,?,?)",
                (job_id, name, backend, state, time.time(), deadline, json.dumps(handle)),
            )

    def update(self, job_id: str, **fields: Any) -> None:
        """Set fields of a record. A job already in a final state keeps it: `update(state="running")` after
        `launch down` cancelled a job mid-submit must not bring it back to life (use finish() to end a job)."""
        unknown = set(fields) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job field(s): {', '.join(sorted(unknown))}")
        if "handle" in fields:
            fields["handle"] = json.dumps(fields["handle"])
        cols = ", ".join(f"{k} = CASE WHEN state IN {_IN_ACTIVE} THEN ? ELSE state END" if k == "state" else f"{k} = ?"
                         for k in fields)
        with self._db() as c:
            c.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def finish(self, job_id: str, state: str, exit_code: int | None, ended: float | None = None) -> None:
        # Only the first final state sticks: a late status poll must not overwrite "cancelled" with "failed".
        with self._db() as c:
            c.execute(
                f"UPDATE jobs SET state = ?, exit_code = ?, ended = ? WHERE id = ? AND state IN {_IN_ACTIVE}",
                (state, exit_code, ended or time.time(), job_id),
            )

    def recover(self, job_id: str, state: str, exit_code: int | None) -> bool:
        """A push_failed job whose outputs were pushed afterwards (`launch sync up --from-job`) gets the state its
        script earned. The one final state that may change, and only once: True if this call changed it."""
        if state not in FINAL_STATES or state == "push_failed":
            raise ValueError(f"a recovered job ends in a final state other than push_failed, not {state!r}")
        with self._db() as c:
            cur = c.execute("UPDATE jobs SET state = ?, exit_code = ? WHERE id = ? AND state = 'push_failed'",
                            (state, exit_code, job_id))
            return cur.rowcount == 1

    def get(self, job_id: str) -> JobRecord:
        """The job with this id, or the only one whose id starts with it. A prefix must be plain id characters and
        is compared literally: `%` or an empty string must never match a job (and cancel it). An exact id is
        taken as it is, so a record made before ids were ASCII-only can still be reached."""
        bad = UserError(f"bad job id {job_id!r}: job ids are lowercase letters, digits and '-' (an id or its "
                        f"start); `launch jobs` lists them")
        if not isinstance(job_id, str) or not job_id:
            raise bad
        plain = bool(_ID_CHARS.fullmatch(job_id))
        if not self.path.exists():
            raise bad if not plain else UserError(f"unknown job '{job_id}': no jobs yet; `launch jobs` lists them")
        with self._db() as c:
            row = c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is not None:
                return _record(row)
            if not plain:
                raise bad
            # A range on the primary key (every id starting with `job_id` sorts between it and the id one past
            # its last character) instead of substr() over every record.
            past = job_id[:-1] + chr(ord(job_id[-1]) + 1)
            matches = c.execute("SELECT * FROM jobs WHERE id >= ? AND id < ? AND substr(id, 1, ?) = ? "
                                "ORDER BY created DESC, id", (job_id, past, len(job_id), job_id)).fetchall()
        if len(matches) == 1:
            return _record(matches[0])
        if not matches:
            raise UserError(f"unknown job '{job_id}'; `launch jobs` lists the job ids")
        shown = ", ".join(r[0] for r in matches[:_SHOWN_MATCHES])
        more = f" and {len(matches) - _SHOWN_MATCHES} more" if len(matches) > _SHOWN_MATCHES else ""
        raise UserError(f"job id '{job_id}' is ambiguous: it starts {len(matches)} job ids ({shown}{more}); "
                        f"give more of the id")

    def list(self, limit: int | None = 50, *, states=None, backend: str | None = None) -> list[JobRecord]:
        """Newest first, at most `limit` (None: all); `states` and `backend` filter in SQL, so a filtered view of a
        big registry parses only the records it shows."""
        if not self.path.exists():
            return []
        where, args = [], []
        if states is not None:
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            args += list(states)
        if backend is not None:
            where.append("backend = ?")
            args.append(backend)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._db() as c:
            rows = c.execute(sql, args).fetchall()
        return [_record(r) for r in rows]

    def expired(self, now: float) -> list[JobRecord]:
        """Jobs past their deadline that the sweeper may have to end: active ones and lost ones (whose leftovers
        may still hold a machine), newest first (the order `launch jobs` shows)."""
        if not self.path.exists():
            return []
        with self._db() as c:
            rows = c.execute(f"SELECT * FROM jobs WHERE state IN {_IN_ACTIVE[:-1]}, 'lost') AND deadline < ? "
                             "ORDER BY created DESC", (now,)).fetchall()
        return [_record(r) for r in rows]

    def active(self) -> list[JobRecord]:
        if not self.path.exists():
            return []
        with self._db() as c:
            rows = c.execute(f"SELECT * FROM jobs WHERE state IN {_IN_ACTIVE}").fetchall()
        return [_record(r) for r in rows]


_CONN_LOCK = threading.RLock()
_CONNS: dict[str, tuple[int, tuple[int, int], sqlite3.Connection]] = {}  # path -> (pid, (dev, inode), connection)
_INHERITED: list = []  # a forked child's copies of its parent's connections: referenced so they are never closed


def _reuse(key: str, path: Path) -> sqlite3.Connection | None:
    """The kept connection to this path if it is this process's and the file is still the one it opened."""
    kept = _CONNS.get(key)
    if kept is None:
        return None
    pid, ident, conn = kept
    if pid != os.getpid():  # inherited over fork: the parent's; kept, never used or closed here
        _INHERITED.append(_CONNS.pop(key))
        return None
    try:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) == ident:
            return conn
    except OSError:
        pass
    _drop(key, conn)
    return None


def _drop(key: str, conn: sqlite3.Connection | None) -> None:
    kept = _CONNS.get(key)
    if kept is not None and kept[2] is conn:
        del _CONNS[key]
    if conn is not None and (kept is None or kept[0] == os.getpid()):
        try:
            conn.close()
        except sqlite3.Error:
            pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _record(row: tuple) -> JobRecord:
    id_, name, backend, state, created, ended, deadline, exit_code, handle = row
    return JobRecord(id_, name, backend, state, created, ended, deadline, exit_code, json.loads(handle))
