"""The commander's durable state: runs, leases, committed-checkpoint pointers, workers, seen nonces, events.

SQLite in WAL mode with synchronous=FULL, one transaction per request: a `kill -9` of the commander loses nothing
it answered (a transaction either committed before the answer went out or did not happen), a lease grant and its
epoch bump are one compare-and-set, and the nonce table grows by one row per request without rewriting the file
(an atomic-replace JSON file would rewrite everything on every renew). The file never holds the shared secret.

Lease rules (the commander's clock only; a worker keeps its own, stricter, deadline):
- acquire(run, worker): granted when nobody holds a live lease; every grant to a new holder bumps `epoch`, which
  only grows. The holder asking again (a retry after a lost answer) gets its own lease back, renewed.
- renew / release / commit / finish name the epoch they hold; anything but the current epoch is refused, so a
  worker that was paused or cut off past its TTL can never move the pointer over its successor's.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .auth import NONCE_TTL_S

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, config TEXT NOT NULL, created_at REAL NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0, ttl REAL NOT NULL, holder TEXT, lease_until REAL,
    checkpoint TEXT, checkpoint_step INTEGER, checkpoint_epoch INTEGER, committed_at REAL,
    finished_at REAL);
CREATE TABLE IF NOT EXISTS workers (
    run_id TEXT NOT NULL, job_id TEXT NOT NULL, backend TEXT NOT NULL, entry INTEGER, launched_at REAL NOT NULL,
    record TEXT, state TEXT, state_at REAL, PRIMARY KEY (run_id, job_id));
CREATE TABLE IF NOT EXISTS backoff (
    run_id TEXT NOT NULL, entry INTEGER NOT NULL, until REAL NOT NULL, failures INTEGER NOT NULL,
    PRIMARY KEY (run_id, entry));
CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, seen_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, run_id TEXT, kind TEXT NOT NULL, detail TEXT);
"""


class Refused(Exception):
    """A request the state cannot honour: `status` is the HTTP answer (404 unknown, 409 conflict, 410 finished)."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


@dataclass(frozen=True)
class Lease:
    run_id: str
    worker: str
    epoch: int
    ttl: float
    expires_in: float
    checkpoint: dict | None  # {"path", "step", "epoch"}: what the new holder seeds its folder with

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "worker": self.worker, "epoch": self.epoch, "ttl": self.ttl,
                "expires_in": round(self.expires_in, 3), "checkpoint": self.checkpoint}


class RelayState:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # one connection per thread (the server's loop, the keeper)
        self._db().executescript(SCHEMA)  # its own transaction (executescript commits by itself)

    # -- plumbing ------------------------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")  # writers queue here: every check-then-write is atomic
            return self.db

        def __exit__(self, kind, exc, tb):
            # A refusal keeps what it recorded (its event): the refused write itself never happened.
            self.db.execute("COMMIT" if kind is None or issubclass(kind, Refused) else "ROLLBACK")
            return False

    def _tx(self):
        return self._Tx(self._db())

    def _run(self, db, run_id: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise Refused(404, f"unknown run {run_id!r}; register it first (launch relay up STACK.yaml)")
        return row

    def _event(self, db, run_id: str | None, kind: str, now: float, **detail: Any) -> None:
        db.execute("INSERT INTO events (at, run_id, kind, detail) VALUES (?, ?, ?, ?)",
                   (now, run_id, kind, json.dumps(detail, sort_keys=True)))

    def event(self, run_id: str | None, kind: str, now: float | None = None, **detail: Any) -> None:
        with self._tx() as db:
            self._event(db, run_id, kind, time.time() if now is None else now, **detail)

    # -- nonces --------------------------------------------------------------------------------------------------

    def first_use(self, nonce: str, now: float | None = None) -> bool:
        """Records the nonce; False when it was seen before (a replay, also across restarts)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            fresh = db.execute("INSERT OR IGNORE INTO nonces (nonce, seen_at) VALUES (?, ?)", (nonce, now)).rowcount
            if fresh and now % 50 < 1:  # now and then: forget nonces whose timestamps would be refused anyway
                db.execute("DELETE FROM nonces WHERE seen_at < ?", (now - NONCE_TTL_S,))
        return bool(fresh)

    # -- runs ----------------------------------------------------------------------------------------------------

    def register(self, run_id: str, config: dict, ttl: float, now: float | None = None) -> dict:
        """A new run, or an unfinished run's new config (its epoch, lease and pointer stay)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                db.execute("INSERT INTO runs (run_id, config, created_at, ttl) VALUES (?, ?, ?, ?)",
                           (run_id, json.dumps(config, sort_keys=True), now, ttl))
                self._event(db, run_id, "registered", now, ttl=ttl)
            elif row["finished_at"] is not None:
                raise Refused(410, f"run {run_id!r} finished already; pick a new run id")
            else:
                db.execute("UPDATE runs SET config = ?, ttl = ? WHERE run_id = ?",
                           (json.dumps(config, sort_keys=True), ttl, run_id))
                self._event(db, run_id, "updated", now, ttl=ttl)
        return self.view(run_id, now)

    def runs(self) -> list[str]:
        return [r["run_id"] for r in self._db().execute("SELECT run_id FROM runs ORDER BY created_at")]

    def config(self, run_id: str) -> dict:
        return json.loads(self._run(self._db(), run_id)["config"])

    # -- leases --------------------------------------------------------------------------------------------------

    def acquire(self, run_id: str, worker: str, now: float | None = None) -> Lease:
        now = time.time() if now is None else now
        with self._tx() as db:
            row = self._run(db, run_id)
            if row["finished_at"] is not None:
                raise Refused(410, f"run {run_id!r} is finished", finished=True)
            live = row["holder"] is not None and row["lease_until"] > now
            if live and row["holder"] != worker:
                raise Refused(409, f"run {run_id!r} is held by {row['holder']} (epoch {row['epoch']})",
                              holder=row["holder"], expires_in=round(row["lease_until"] - now, 3))
            epoch = row["epoch"] if live else row["epoch"] + 1
            db.execute("UPDATE runs SET epoch = ?, holder = ?, lease_until = ? WHERE run_id = ?",
                       (epoch, worker, now + row["ttl"], run_id))
            if not live:
                self._event(db, run_id, "acquired", now, worker=worker, epoch=epoch,
                            previous=row["holder"], checkpoint_step=row["checkpoint_step"])
            return Lease(run_id, worker, epoch, row["ttl"], row["ttl"], _pointer(row))

    def _current(self, db, run_id: str, worker: str, epoch: int, now: float, action: str) -> sqlite3.Row:
        row = self._run(db, run_id)
        if row["finished_at"] is not None:
            raise Refused(410, f"run {run_id!r} is finished", finished=True)
        if epoch != row["epoch"]:
            self._event(db, run_id, f"{action}_refused", now, worker=worker, epoch=epoch, current=row["epoch"])
            raise Refused(409, f"stale epoch {epoch}: the run is at epoch {row['epoch']} (held by {row['holder']})",
                          epoch=row["epoch"])
        return row

    def renew(self, run_id: str, worker: str, epoch: int, now: float | None = None) -> Lease:
        now = time.time() if now is None else now
        with self._tx() as db:
            row = self._current(db, run_id, worker, epoch, now, "renew")
            if row["holder"] != worker or row["lease_until"] is None or row["lease_until"] <= now:
                self._event(db, run_id, "renew_refused", now, worker=worker, epoch=epoch, reason="expired")
                raise Refused(409, f"the lease of epoch {epoch} expired; acquire again", epoch=row["epoch"])
            db.execute("UPDATE runs SET lease_until = ? WHERE run_id = ?", (now + row["ttl"], run_id))
            return Lease(run_id, worker, epoch, row["ttl"], row["ttl"], _pointer(row))

    def release(self, run_id: str, worker: str, epoch: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._tx() as db:
            row = self._current(db, run_id, worker, epoch, now, "release")
            if row["holder"] != worker:
                raise Refused(409, f"{worker} does not hold run {run_id!r} (held by {row['holder']})")
            db.execute("UPDATE runs SET holder = NULL, lease_until = NULL WHERE run_id = ?", (run_id,))
            self._event(db, run_id, "released", now, worker=worker, epoch=epoch)

    def commit(self, run_id: str, worker: str, epoch: int, checkpoint: str, step: int | None,
               now: float | None = None) -> dict:
        """Compare-and-set: the pointer moves only under the current epoch."""
        now = time.time() if now is None else now
        with self._tx() as db:
            self._current(db, run_id, worker, epoch, now, "commit")
            db.execute("UPDATE runs SET checkpoint = ?, checkpoint_step = ?, checkpoint_epoch = ?, committed_at = ? "
                       "WHERE run_id = ?", (checkpoint, step, epoch, now, run_id))
            self._event(db, run_id, "committed", now, worker=worker, epoch=epoch, checkpoint=checkpoint, step=step)
            return {"checkpoint": checkpoint, "step": step, "epoch": epoch}

    def finish(self, run_id: str, worker: str, epoch: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._tx() as db:
            self._current(db, run_id, worker, epoch, now, "finish")
            db.execute("UPDATE runs SET finished_at = ?, holder = NULL, lease_until = NULL WHERE run_id = ?",
                       (now, run_id))
            self._event(db, run_id, "finished", now, worker=worker, epoch=epoch)

    # -- workers and relaunch bookkeeping ------------------------------------------------------------------------

    def add_worker(self, run_id: str, job_id: str, backend: str, entry: int | None, record: dict | None = None,
                   now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._tx() as db:
            self._run(db, run_id)
            db.execute("INSERT OR REPLACE INTO workers (run_id, job_id, backend, entry, launched_at, record, state, "
                       "state_at) VALUES (?, ?, ?, ?, ?, ?, 'submitted', ?)",
                       (run_id, job_id, backend, entry, now, json.dumps(record) if record else None, now))
            self._event(db, run_id, "worker_launched", now, job_id=job_id, backend=backend, entry=entry)

    def workers(self, run_id: str) -> list[dict]:
        rows = self._db().execute("SELECT * FROM workers WHERE run_id = ? ORDER BY launched_at", (run_id,))
        return [{**dict(r), "record": json.loads(r["record"]) if r["record"] else None} for r in rows]

    def set_worker_state(self, run_id: str, job_id: str, state: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute("UPDATE workers SET state = ?, state_at = ? WHERE run_id = ? AND job_id = ?",
                       (state, now, run_id, job_id))

    def backoff(self, run_id: str, now: float | None = None) -> dict[int, float]:
        """entry index -> until when it is skipped (capacity short there)."""
        now = time.time() if now is None else now
        rows = self._db().execute("SELECT entry, until FROM backoff WHERE run_id = ? AND until > ?", (run_id, now))
        return {r["entry"]: r["until"] for r in rows}

    def back_off(self, run_id: str, entry: int, base: float, cap: float, now: float | None = None) -> float:
        """Skip `entry` for base * 2^failures (at most cap) seconds; returns the wait."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT failures FROM backoff WHERE run_id = ? AND entry = ?", (run_id, entry)).fetchone()
            failures = (row["failures"] if row else 0) + 1
            wait = min(cap, base * 2 ** (failures - 1))
            db.execute("INSERT OR REPLACE INTO backoff (run_id, entry, until, failures) VALUES (?, ?, ?, ?)",
                       (run_id, entry, now + wait, failures))
            return wait

    def clear_backoff(self, run_id: str, entry: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM backoff WHERE run_id = ? AND entry = ?", (run_id, entry))

    def launches_since(self, run_id: str, since: float) -> int:
        return self._db().execute("SELECT COUNT(*) FROM events WHERE run_id = ? AND kind = 'worker_launched' "
                                  "AND at >= ?", (run_id, since)).fetchone()[0]

    # -- reading -------------------------------------------------------------------------------------------------

    def events(self, run_id: str | None = None, limit: int = 200) -> list[dict]:
        q = "SELECT * FROM events" + (" WHERE run_id = ?" if run_id else "") + " ORDER BY id DESC LIMIT ?"
        rows = self._db().execute(q, ((run_id, limit) if run_id else (limit,))).fetchall()
        return [{"at": r["at"], "run_id": r["run_id"], "kind": r["kind"], **json.loads(r["detail"] or "{}")}
                for r in reversed(rows)]

    def view(self, run_id: str, now: float | None = None) -> dict:
        """What `launch relay status` shows of one run."""
        now = time.time() if now is None else now
        db = self._db()
        row = self._run(db, run_id)
        live = row["holder"] is not None and row["lease_until"] is not None and row["lease_until"] > now
        handoffs = db.execute("SELECT COUNT(*) FROM events WHERE run_id = ? AND kind = 'acquired'",
                              (run_id,)).fetchone()[0]
        pointer = _pointer(row)
        if pointer:
            pointer["age_s"] = round(now - row["committed_at"], 1)
        return {
            "run_id": run_id,
            "finished": row["finished_at"] is not None,
            "finished_at": row["finished_at"],
            "epoch": row["epoch"],
            "ttl": row["ttl"],
            "holder": row["holder"] if live else None,
            "ttl_left": round(row["lease_until"] - now, 1) if live else None,
            "expired_holder": row["holder"] if row["holder"] is not None and not live else None,
            "checkpoint": pointer,
            "handoffs": max(0, handoffs - 1),
            "workers": [{k: w[k] for k in ("job_id", "backend", "entry", "state", "launched_at")}
                        for w in self.workers(run_id)],
            "config": json.loads(row["config"]),
        }


def _pointer(row: sqlite3.Row) -> dict | None:
    if row["checkpoint"] is None:
        return None
    return {"path": row["checkpoint"], "step": row["checkpoint_step"], "epoch": row["checkpoint_epoch"]}
