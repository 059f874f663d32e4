"""The local hash cache: (path, size, mtime_ns) -> hashes, so an unchanged tree is never re-hashed.

Lives in `<root>/.launcher/hashcache.sqlite` (never synced). Only the thread that opened it touches it.
"""
from __future__ import annotations

import sqlite3
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
        if self.path.exists():
            self._open()
            if self.db is not None:
                try:
                    for p, size, mtime_ns, sha, etag in self.db.execute(
                            "SELECT path, size, mtime_ns, sha256, etag FROM files WHERE layout = ?", (layout,)):
                        self.rows[p] = (size, mtime_ns, sha, etag)
                except sqlite3.DatabaseError:
                    self.db = None

    def _open(self) -> None:
        try:
            if self.readonly:
                self.db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=30,
                                          isolation_level=None)
            else:
                self.meta_dir.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
                self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError:  # a corrupt or unreadable cache only costs a re-hash
            self.db = None

    def _writable(self) -> bool:
        if self.readonly:
            return False
        if self.db is None:
            self._open()
        return self.db is not None

    def get(self, path: str, size: int, mtime_ns: int) -> tuple[str, str] | None:
        row = self.rows.get(path)
        if row and row[0] == size and row[1] == mtime_ns:
            return row[2], row[3]
        return None

    def put_many(self, rows: list[tuple[str, int, int, str, str]]) -> None:
        for p, size, mtime_ns, sha, etag in rows:
            self.rows[p] = (size, mtime_ns, sha, etag)
        if not rows or not self._writable():
            return
        with self.db:  # one transaction: a kill leaves the cache as it was or complete
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, sha256, etag, layout) VALUES (?,?,?,?,?,?)",
                [(p, s, m, sha, etag, self.layout) for p, s, m, sha, etag in rows])

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
        if self._writable():
            self.db.execute("INSERT OR REPLACE INTO alt_etags VALUES (?,?,?,?,?)",
                            (path, size, mtime_ns, part_size, etag))

    def forget_missing(self, present: set[str], under: str) -> None:
        gone = [p for p in self.rows if p.startswith(under) and p not in present]
        for p in gone:
            del self.rows[p]
        if gone and self._writable():
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in gone])

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
