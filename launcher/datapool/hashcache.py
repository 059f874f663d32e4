"""The local hash cache: (path, size, mtime_ns) -> hashes, so an unchanged tree is never re-hashed.

Lives in `<root>/.launcher/hashcache.sqlite` (never synced). Only the thread that opened it touches it.

The cache is a hint, never the truth: it decides what looks unchanged, but a hash that is published (an
object's sha256 metadata) or that would fail a transfer is recomputed from the bytes first, and a row that
disagrees with them is replaced. A corrupt file is set aside (`hashcache.sqlite.corrupt`) and rebuilt on the
next write; a cache that cannot be written costs re-hashing, never the sync.
"""
from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, etag TEXT NOT NULL, layout TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alt_etags (
    path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, part_size INTEGER NOT NULL,
    etag TEXT NOT NULL, PRIMARY KEY (path, part_size)
);
"""


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Corrupt (rebuild it) versus unusable right now (read-only, locked, disk full: leave it alone)."""
    name = getattr(exc, "sqlite_errorname", None)
    if name:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    return type(exc) is sqlite3.DatabaseError  # OperationalError and friends are not about the file's content


class HashCache:
    """Reads the cache if it exists; creates it only on the first write (a failed or dry sync leaves no trace)."""

    def __init__(self, meta_dir: Path, layout: str, readonly: bool = False):
        """layout names the multipart threshold/part size the cached ETags were computed with."""
        self.layout = layout
        self.meta_dir = meta_dir
        self.path = meta_dir / "hashcache.sqlite"
        self.readonly = readonly
        self.rows: dict[str, tuple[int, int, str, str]] = {}
        self.db = None
        self.corrupt = False  # set aside and rebuilt at the first write, so a dry or failed sync changes nothing
        self._warned = False
        if self.path.exists():
            try:
                self._open()
                if self.db is not None:
                    for p, size, mtime_ns, sha, etag in self.db.execute(
                            "SELECT path, size, mtime_ns, sha256, etag FROM files WHERE layout = ?", (layout,)):
                        self.rows[p] = (size, mtime_ns, sha, etag)
            except sqlite3.DatabaseError as exc:
                self._close_db()
                self.rows = {}  # rows read before the damage showed are not trusted either
                self.corrupt = _is_corrupt(exc)

    def _open(self) -> None:
        if self.readonly:
            self.db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None)
        else:
            self.meta_dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self.db.executescript(_SCHEMA)

    def _close_db(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
            self.db = None

    def _set_aside(self) -> None:
        """Move the corrupt file out of the way (kept once, for a post-mortem) and start an empty one.
        Its journal goes too: a hot journal of the old file would be rolled back into the new one."""
        self._close_db()
        self.corrupt = False
        try:
            os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
        except FileNotFoundError:
            pass
        for suffix in ("-journal", "-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    def _write(self, fn) -> None:
        """Run fn(db) in the cache; a corrupt file is rebuilt once and fn retried; any other failure turns the
        cache off for this run (with one warning): the sync goes on, the next one re-hashes."""
        if self.readonly:
            return
        for attempt in range(2):
            try:
                if self.corrupt:
                    self._set_aside()
                if self.db is None:
                    self._open()
                fn(self.db)
                return
            except sqlite3.DatabaseError as exc:
                self._close_db()
                if attempt == 0 and _is_corrupt(exc):
                    self.corrupt = True
                    continue
                self._give_up(exc)
                return
            except OSError as exc:
                self._close_db()
                self._give_up(exc)
                return

    def _give_up(self, exc: BaseException) -> None:
        self.readonly = True
        if not self._warned:
            self._warned = True
            sys.stderr.write(f"[launcher] warning: hash cache {self.path} not written ({exc}); "
                             f"the next sync re-hashes\n")

    def get(self, path: str, size: int, mtime_ns: int) -> tuple[str, str] | None:
        row = self.rows.get(path)
        if row and row[0] == size and row[1] == mtime_ns:
            return row[2], row[3]
        return None

    def put_many(self, rows: list[tuple[str, int, int, str | None, str | None]]) -> None:
        """Insert or replace these rows; a row whose sha256 is None is dropped instead (it disagreed with the
        bytes and nothing better is known)."""
        for p, size, mtime_ns, sha, etag in rows:
            if sha is None:
                self.rows.pop(p, None)
            else:
                self.rows[p] = (size, mtime_ns, sha, etag)
        if not rows:
            return

        def write(db):
            with db:  # one transaction: a kill leaves the cache as it was or complete
                db.execute("BEGIN")
                db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p, _, _, sha, _ in rows if sha is None])
                db.executemany(
                    "INSERT OR REPLACE INTO files (path, size, mtime_ns, sha256, etag, layout) VALUES (?,?,?,?,?,?)",
                    [(p, s, m, sha, etag, self.layout) for p, s, m, sha, etag in rows if sha is not None])

        self._write(write)

    def alt_etag(self, path: str, size: int, mtime_ns: int, part_size: int) -> str | None:
        if self.db is None:
            return None
        try:
            row = self.db.execute("SELECT size, mtime_ns, etag FROM alt_etags WHERE path = ? AND part_size = ?",
                                  (path, part_size)).fetchone()
        except sqlite3.DatabaseError:
            return None
        return row[2] if row and row[0] == size and row[1] == mtime_ns else None

    def put_alt_etag(self, path: str, size: int, mtime_ns: int, part_size: int, etag: str) -> None:
        self._write(lambda db: db.execute("INSERT OR REPLACE INTO alt_etags VALUES (?,?,?,?,?)",
                                          (path, size, mtime_ns, part_size, etag)))

    def forget_missing(self, present: set[str], under: str) -> None:
        gone = [p for p in self.rows if p.startswith(under) and p not in present]
        for p in gone:
            del self.rows[p]
        if not gone:
            return

        def write(db):
            with db:
                db.execute("BEGIN")
                db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in gone])

        self._write(write)

    def close(self) -> None:
        self._close_db()
