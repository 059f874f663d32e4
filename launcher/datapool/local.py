"""A directory as a store: `file:///abs/dir`, and the local datapool root itself.

Writes go to `<root>/.launcher/tmp/` then `os.replace` into place, so a reader (or a sync killed at any
moment) never sees a partial file. Hashes come from the hash cache; only new or changed files are read.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from concurrent.futures import Executor
from pathlib import Path
from typing import Iterator, NamedTuple

from .base import Entry, Store
from .errors import DatapoolUserError, IntegrityError
from .hashcache import HashCache
from .hashing import (DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, StreamHasher, candidate_part_sizes,
                      etag_with_part_size, hash_file)

META_DIR = ".launcher"
_COPY_BUF = 1024 * 1024
_STALE_TMP_S = 3600


class _Stat(NamedTuple):
    """What a listing keeps of a file's stat: a full os.stat_result is ~5x the size, and a 100,000-file tree
    kept one per file (bench/scale.py's sync row)."""

    st_size: int
    st_mtime_ns: int


class LocalStore(Store):
    is_local = True

    def __init__(self, root: Path, sub: str = "", *, threshold: int = DEFAULT_MULTIPART_THRESHOLD,
                 part_size: int = DEFAULT_PART_SIZE, readonly: bool = False):
        root = Path(root).expanduser()
        if not root.is_absolute():
            root = root.resolve()
        if root.exists() and not root.is_dir():
            raise DatapoolUserError(f"datapool root {root} is a file, not a directory: pass a directory")
        self.root = root
        self.sub = sub.strip("/")
        self.base = root / self.sub if self.sub else root
        if self.base.exists() and not self.base.is_dir():
            raise DatapoolUserError(f"{self.base} is a file, not a directory: pass a directory")
        # A path through a file (`/data/x.txt/pool`) does not "exist" either, and mkdir would fail mid-sync.
        above = _existing_ancestor(self.base)
        if above != self.base and not above.is_dir():
            raise DatapoolUserError(f"datapool root {root} is under {above}, which is not a directory: "
                                    f"pass a directory")
        self.url = root.as_uri()
        self.threshold, self.part_size = threshold, part_size
        self.readonly = readonly
        self.flag = "--root"  # the option that names this directory, for error messages
        self.meta = root / META_DIR
        self._cache: HashCache | None = None
        self._stat: dict[str, _Stat] = {}
        self.hashed = 0  # files read to hash them while listing (not counting uploads), for tests and reports

    # --- paths
    def _key(self, rel: str) -> str:
        """Cache key: relative to the root, so every experiment view shares one cache."""
        return f"{self.sub}/{rel}" if self.sub else rel

    def abspath(self, rel: str) -> Path:
        return self.base / rel

    @property
    def cache(self) -> HashCache:
        if self._cache is None:
            self._cache = HashCache(self.meta, f"{self.threshold}:{self.part_size}", readonly=self.readonly)
        return self._cache

    def check_writable(self, tree: bool) -> None:
        """Raise a DatapoolUserError, before anything moves, if what a sync writes here cannot be written:
        the hash cache (and temp files) under `.launcher/`, and with tree=True the synced folder itself."""
        if self.readonly:
            return
        targets = [self.meta, self.meta / "tmp", self.meta / "hashcache.sqlite"]
        if tree:
            targets.append(self.base)
        for target in targets:
            blocked = blocked_at(target)
            if blocked is None:
                continue
            spot, why = blocked
            if why == FILE_IN_THE_WAY:
                raise DatapoolUserError(f"datapool root {self.root}: {spot} is a file, not a directory: "
                                        f"pass a directory")
            where = "" if spot == self.root else f" ({spot} is not)"
            what = "the synced files and the hash cache go" if tree else "the hash cache (.launcher/) goes"
            raise DatapoolUserError(f"{self.root} is not writable{where}, and {what} there: make it writable "
                                    f"or pass {self.flag} a writable directory")

    # --- listing
    def _walk(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every file under the base with its stat, as the walk finds it (never all of them held at once)."""
        if not self.base.is_dir():
            return
        skip = str(self.meta)
        stack = [(str(self.base), "")]
        while stack:
            d, prefix = stack.pop()
            try:
                it = os.scandir(d)
            except FileNotFoundError:
                continue
            with it:
                for de in it:
                    rel = prefix + de.name
                    if de.is_dir(follow_symlinks=False):
                        if de.path != skip:
                            stack.append((de.path, rel + "/"))
                    elif de.is_file():  # follows a symlink to a file; skips sockets, fifos, dangling links
                        try:
                            st = de.stat()
                        except FileNotFoundError:
                            continue
                        yield rel, st

    def list(self, pool: Executor | None = None, settle_seconds: float = 0.0, want=None,
             defer_cache: bool = False, lazy: bool = False) -> dict[str, Entry]:
        """Every file under the base with its sha256 and ETag. `want(rel)` filters before any hashing.

        defer_cache keeps new hashes in memory until flush_cache() (so a failed sync writes nothing).
        lazy leaves files missing from the hash cache unhashed (sha256 None) until hash_missing() is asked
        for the ones a comparison needs: a file the other side lacks is hashed while it is uploaded.
        """
        cache = self.cache
        now = time.time()
        entries: dict[str, Entry] = {}
        todo: list[str] = []
        present: set[str] = set()
        self._pending = ([], None)
        for rel, st in self._walk():
            present.add(self._key(rel))
            if want is not None and not want(rel):
                continue
            if settle_seconds and st.st_mtime > now - settle_seconds:
                continue  # still being written (a checkpoint mid-save): the next push takes it
            self._stat[rel] = _Stat(st.st_size, st.st_mtime_ns)
            hit = cache.get(self._key(rel), st.st_size, st.st_mtime_ns)
            entries[rel] = Entry(rel, st.st_size, st.st_mtime, *(hit or (None, None)), hint=hit is not None)
            if not hit:
                todo.append(rel)
        self._present = present if want is None else None
        self._entries = entries
        if not lazy:
            self.hash_missing(todo, pool)
        if not defer_cache:
            self.flush_cache()
        return entries

    def hash_missing(self, rels: list[str], pool: Executor | None = None) -> None:
        """Hash these listed files (in parallel) and fill in their entries; a file that changed or vanished
        while being hashed is dropped from the listing, left for the next run."""
        def work(rel):
            st = self._stat[rel]
            try:
                sha, etag = hash_file(self.abspath(rel), st.st_size, self.threshold, self.part_size)
                after = os.stat(self.abspath(rel))
            except FileNotFoundError:
                return rel, None
            if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                return rel, None
            return rel, (sha, etag)

        results = pool.map(work, rels) if (pool is not None and len(rels) > 1) else map(work, rels)
        rows, _ = self._pending
        for rel, hashed in results:
            self.hashed += 1
            if hashed is None:
                self._entries.pop(rel, None)
                continue
            e = self._entries[rel]
            e.sha256, e.etag = hashed
            e.hint = False
            rows.append(self.cache_row(rel, *hashed))

    def cache_row(self, rel: str, sha256: str | None, etag: str | None) -> tuple:
        st = self._stat[rel]
        return (self._key(rel), st.st_size, st.st_mtime_ns, sha256, etag)

    def learned(self, rel: str, entry: Entry, sha256: str | None, etag: str | None, same_layout: bool):
        """A cache row for hashes computed from this file's bytes during a transfer, or None.

        A file still as listed gets the computed hashes (replacing a cached row that disagreed); when the
        ETag was computed for another part layout, a disagreeing row is dropped instead.
        """
        if not sha256 or not self.unchanged_since_listing(rel):
            return None
        if same_layout:
            if (entry.sha256, entry.etag) != (sha256, etag):
                return self.cache_row(rel, sha256, etag)
            return None
        if entry.sha256 is not None and entry.sha256 != sha256:
            return self.cache_row(rel, None, None)
        return None

    def unchanged_since_listing(self, rel: str) -> bool:
        st = self._stat.get(rel)
        try:
            now = os.stat(self.abspath(rel))
        except FileNotFoundError:
            return False
        return st is not None and (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)

    def flush_cache(self) -> None:
        rows, _ = getattr(self, "_pending", ([], None))
        present = getattr(self, "_present", None)
        self._pending, self._present = ([], None), None
        if self.readonly or not self.root.is_dir():
            return
        self.cache.put_many(rows)
        if present is not None:
            self.cache.forget_missing(present, f"{self.sub}/" if self.sub else "")

    def matches_etag(self, entry: Entry, remote_etag: str) -> bool:
        """Do the local bytes have this ETag (written by any tool, with any part size)?"""
        if entry.etag == remote_etag:
            return True
        st = self._stat.get(entry.path) or os.stat(self.abspath(entry.path))
        if "-" in remote_etag:
            sizes = candidate_part_sizes(entry.size, remote_etag)
        else:
            sizes = [0]  # one PUT: the md5 of the whole file
        own = 0 if entry.size <= self.threshold else self.part_size
        for ps in sizes:
            if ps == own:
                if not entry.hint:
                    continue  # hashed from the bytes in this run: its ETag is the one for this layout
                # The remote was written with our layout, so a cached row should have matched: re-hash to tell a
                # wrong row from different content, and correct the row either way.
                self._verify_hint(entry)
                if entry.etag == remote_etag:
                    return True
                continue
            key = self._key(entry.path)
            etag = self.cache.alt_etag(key, st.st_size, st.st_mtime_ns, ps)
            if etag is None:
                etag = etag_with_part_size(self.abspath(entry.path), ps or None)
                if not self.readonly:
                    self.cache.put_alt_etag(key, st.st_size, st.st_mtime_ns, ps, etag)
            if etag == remote_etag:
                return True
        return False

    def _verify_hint(self, entry: Entry) -> None:
        """Re-hash a file whose hashes came from the cache; a row that disagrees is replaced (main thread only)."""
        rel = entry.path
        try:
            sha, etag = hash_file(self.abspath(rel), entry.size, self.threshold, self.part_size)
        except FileNotFoundError:
            return
        row = self.learned(rel, entry, sha, etag, same_layout=True)
        entry.sha256, entry.etag, entry.hint = sha, etag, False
        if row is not None:
            self.record([row])

    # --- writing
    def tmp_path(self) -> Path:
        tmp = self.meta / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{uuid.uuid4().hex}.part"

    def clean_stale_tmp(self) -> None:
        """Leftovers of a killed sync; they were never visible in the tree."""
        tmp = self.meta / "tmp"
        if not tmp.is_dir():
            return
        cutoff = time.time() - _STALE_TMP_S
        for p in tmp.iterdir():
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except FileNotFoundError:
                pass

    def commit(self, tmp: Path, rel: str, sha256: str, etag: str, mtime: float | None) -> tuple:
        """Move a verified temp file into place atomically; returns the cache row."""
        dest = self.abspath(rel)
        if mtime is not None:  # the source's time, so mtime-based tools (aws s3 sync) see it as unchanged
            os.utime(tmp, (mtime, mtime))
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(f"{rel}: a parent path is a file locally, cannot place the file: {exc}") from None
        if dest.is_dir():
            tmp.unlink(missing_ok=True)
            raise IntegrityError(f"{rel}: is a directory locally, cannot replace it with a file")
        os.replace(tmp, dest)
        st = os.stat(dest)
        return (self._key(rel), st.st_size, st.st_mtime_ns, sha256, etag)

    def record(self, rows: list[tuple]) -> None:
        if rows and not self.readonly and self.root.is_dir():
            self.cache.put_many(rows)

    def put_file(self, src: Path, rel: str, entry: Entry) -> tuple:
        """Copy a local file in (file:// store), verified against the source's sha256."""
        tmp = self.tmp_path()
        h = StreamHasher(entry.size, self.threshold, self.part_size)
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while buf := fin.read(_COPY_BUF):
                    h.update(buf)
                    fout.write(buf)
            sha, etag = h.result()
            # A cached sha256 (a hint) that disagrees with the bytes copied is the cache's fault, not the file's:
            # the copy is hashed as written, and the caller corrects the source's row.
            if entry.sha256 and not entry.hint and sha != entry.sha256:
                raise IntegrityError(f"{rel}: changed while copying (sha256 {sha[:12]} != {entry.sha256[:12]})")
            shutil.copystat(src, tmp)
            return self.commit(tmp, rel, sha, etag, entry.mtime)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def fetch(self, rel: str, entry: Entry, dest_tmp: Path, dest_threshold: int, dest_part_size: int):
        """Copy out (file:// store as a source): returns (sha256, etag for the destination's layout)."""
        h = StreamHasher(entry.size, dest_threshold, dest_part_size)
        with open(self.abspath(rel), "rb") as fin, open(dest_tmp, "wb") as fout:
            while buf := fin.read(_COPY_BUF):
                h.update(buf)
                fout.write(buf)
        sha, etag = h.result()
        if entry.sha256 and not entry.hint and sha != entry.sha256:
            raise IntegrityError(f"{rel}: sha256 mismatch on copy ({sha[:12]} != {entry.sha256[:12]}): source changed or corrupt")
        return sha, etag

    def delete(self, paths: list[str]) -> None:
        for rel in paths:
            self.abspath(rel).unlink(missing_ok=True)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


FILE_IN_THE_WAY, READ_ONLY = "a file, not a directory", "read-only"


def blocked_at(target: Path) -> tuple[Path, str] | None:
    """Where writing `target` (and the folders above it that do not exist yet) would fail, and why
    (FILE_IN_THE_WAY or READ_ONLY); None when it would not. A read-only mount counts even for root."""
    spot = _existing_ancestor(target)
    if spot != target and not spot.is_dir():
        return spot, FILE_IN_THE_WAY
    try:
        readonly = bool(os.statvfs(spot).f_flag & os.ST_RDONLY)
    except OSError:
        readonly = False
    if readonly or not os.access(spot, os.W_OK | (os.X_OK if spot.is_dir() else 0)):
        return spot, READ_ONLY
    return None


def _existing_ancestor(path: Path) -> Path:
    """The path itself if it exists, else its nearest existing parent (which may be a file)."""
    p = path
    while not os.path.lexists(p) and p.parent != p:
        p = p.parent
    return p
