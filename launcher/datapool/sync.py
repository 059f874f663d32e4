"""The sync engine: compare two manifests, move only what differs, in parallel, verified, atomically.

A file moves when its size or content hash differs. Local hashes come from the hash cache; S3 objects are
compared through the ETag in their LIST entry, so a no-op sync reads no object. Every write lands whole
(temp + rename locally; S3 PUT/multipart complete are atomic), so a sync killed at any moment and run again
converges to the source tree.
"""
from __future__ import annotations

import fnmatch
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .base import Entry, Store
from .errors import DatapoolUserError, IntegrityError, SyncError
from .local import META_DIR, LocalStore

DEFAULT_WORKERS = 16


class PathFilter:
    """--include / --exclude globs on the path relative to the sync root.

    A pattern matches a path when fnmatch does (`*` crosses `/`), when it names one of the path's folders
    (`data` or `data/` matches `data/raw/x`), or, for a pattern without any `/`, when it matches the file
    name (`*.json`, `data`; `data/` names a folder only).
    No include means everything; an exclude always wins. Our own `.launcher/` folder is never synced.
    """

    def __init__(self, include=(), exclude=()):
        self.include = [p for p in include if p]
        self.exclude = [p for p in exclude if p]
        self.hits: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    def match(rel: str, pat: str) -> bool:
        pat = pat[2:] if pat.startswith("./") else pat
        bare = pat.rstrip("/")
        if fnmatch.fnmatchcase(rel, pat) or fnmatch.fnmatchcase(rel, bare + "/*"):
            return True
        return "/" not in pat and fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pat)

    def __call__(self, rel: str) -> bool:
        if rel == META_DIR or rel.startswith(META_DIR + "/"):
            return False
        if self.include:
            hit = [p for p in self.include if self.match(rel, p)]
            if not hit:
                return False
            with self._lock:
                self.hits.update(hit)
        return not any(self.match(rel, p) for p in self.exclude)

    def unmatched(self) -> list[str]:
        return [p for p in self.include if p not in self.hits]


@dataclass
class Plan:
    copy: list[tuple[str, int, str]] = field(default_factory=list)  # (path, size, "new" | "changed")
    delete: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # only at the destination, kept (no --delete)
    unchanged: int = 0

    @property
    def bytes(self) -> int:
        return sum(size for _, size, _ in self.copy)


@dataclass
class SyncResult:
    src: str
    dst: str
    plan: Plan
    copied: int = 0
    bytes: int = 0
    deleted: int = 0
    failed: list[str] = field(default_factory=list)
    dry_run: bool = False
    unmatched_includes: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Reporter:
    """Silent by default (the agent's pushes); the CLI passes one that prints."""

    def plan(self, result: SyncResult) -> None: ...
    def moved(self, action: str, path: str, size: int) -> None: ...
    def finish(self, result: SyncResult) -> None: ...


def same_content(s: Entry, d: Entry, src: Store, dst: Store) -> bool:
    if s.size != d.size:
        return False
    if s.sha256 and d.sha256:
        return s.sha256 == d.sha256
    if src.is_local and not dst.is_local and d.etag:
        return src.matches_etag(s, d.etag)
    if dst.is_local and not src.is_local and s.etag:
        return dst.matches_etag(d, s.etag)
    return False


def make_plan(src_entries: dict[str, Entry], dst_entries: dict[str, Entry], src: Store, dst: Store,
              delete: bool) -> Plan:
    plan = Plan()
    for rel in sorted(src_entries):
        s = src_entries[rel]
        d = dst_entries.get(rel)
        if d is None:
            plan.copy.append((rel, s.size, "new"))
        elif same_content(s, d, src, dst):
            plan.unchanged += 1
        else:
            plan.copy.append((rel, s.size, "changed"))
    gone = sorted(rel for rel in dst_entries if rel not in src_entries)
    if delete:
        plan.delete = gone
    else:
        plan.extra = gone
    return plan


def _transfer(src: Store, dst: Store, rel: str, entry: Entry):
    """Move one file; returns a row for the local side's hash cache (or None)."""
    if dst.is_local:
        if src.is_local:
            return dst.put_file(src.abspath(rel), rel, entry)
        tmp = dst.tmp_path()
        try:
            try:
                sha, etag = src.fetch(rel, entry, tmp, dst.threshold, dst.part_size)
            except IntegrityError:  # one more try: a flaky transfer heals, a corrupt object fails again
                sha, etag = src.fetch(rel, entry, tmp, dst.threshold, dst.part_size)
            return dst.commit(tmp, rel, sha, etag, entry.mtime)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    if src.is_local:
        sent = dst.put_file(src.abspath(rel), rel, entry)
        # The upload hashed what it sent; cache it for the source file if the file is still what was listed
        # and the ETag was computed with the same part layout as the cache's.
        if (entry.sha256 is None and sent.sha256 and (dst.threshold, dst.part_size) == (src.threshold, src.part_size)
                and src.unchanged_since_listing(rel)):
            return src.cache_row(rel, sent.sha256, sent.etag)
        return None
    raise DatapoolUserError("store-to-store sync is not supported: one side must be a local directory")


def sync(src: Store, dst: Store, include=(), exclude=(), delete: bool = False, dry_run: bool = False,
         workers: int = DEFAULT_WORKERS, reporter: Reporter | None = None, settle_seconds: float = 0.0) -> SyncResult:
    """Make dst's files (within the filters) equal to src's. Raises SyncError if some files failed."""
    if not (src.is_local or dst.is_local):
        raise DatapoolUserError("store-to-store sync is not supported: one side must be a local directory")
    reporter = reporter or Reporter()
    started = time.monotonic()
    filt = PathFilter(include, exclude)
    result = SyncResult(src.describe(), dst.describe(), Plan(), dry_run=dry_run)
    with ThreadPoolExecutor(workers, thread_name_prefix="sync") as pool:
        if isinstance(src, LocalStore) and not src.root.is_dir():
            raise DatapoolUserError(f"{src.root} does not exist: nothing to sync from")
        listed = {}
        remote = next((st for st in (src, dst) if not st.is_local), None)
        # The remote LIST (mostly waiting on the network) runs while the local tree is walked and hashed;
        # the local hash cache is written only once the remote answered, so a bad bucket or missing
        # credentials leave nothing behind.
        remote_list = pool.submit(remote.list, pool, 0.0, filt) if remote is not None else None
        try:
            for store in (src, dst):
                if store.is_local:
                    listed[id(store)] = store.list(pool, settle_seconds if store is src else 0.0, filt,
                                                   defer_cache=True, lazy=remote is not None)
            if remote_list is not None:
                listed[id(remote)] = remote_list.result()
        except BaseException:
            if remote_list is not None:
                remote_list.cancel()
                if remote_list.exception() is not None:
                    raise remote_list.exception() from None
            raise
        if remote is not None:
            # Hash only the local files a comparison needs: same path and same size on the other side.
            local = dst if remote is src else src
            mine, theirs = listed[id(local)], listed[id(remote)]
            need = [rel for rel, e in mine.items()
                    if e.sha256 is None and rel in theirs and theirs[rel].size == e.size]
            local.hash_missing(need, pool)
        if dst.is_local and not dry_run:
            dst.base.mkdir(parents=True, exist_ok=True)
        for store in (src, dst):
            if store.is_local:
                store.flush_cache()
        src_entries, dst_entries = listed[id(src)], listed[id(dst)]
        result.unmatched_includes = filt.unmatched()
        plan = make_plan(src_entries, dst_entries, src, dst, delete)
        result.plan = plan
        reporter.plan(result)
        if dry_run:
            result.seconds = time.monotonic() - started
            reporter.finish(result)
            return result
        if dst.is_local:
            dst.clean_stale_tmp()
        rows: list[tuple] = []
        cached = dst if dst.is_local else src  # whose hash cache learns from the transfers
        # Biggest first: the long transfers start at once and the small files fill the gaps around them.
        order = sorted(plan.copy, key=lambda c: -c[1])
        futures = {pool.submit(_transfer, src, dst, rel, src_entries[rel]): (rel, size) for rel, size, _ in order}
        pending = set(futures)
        user_error: BaseException | None = None
        try:
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
                for fut in done:
                    rel, size = futures[fut]
                    exc = fut.exception()
                    if exc is None:
                        row = fut.result()
                        if row:
                            rows.append(row)
                        result.copied += 1
                        result.bytes += size
                        reporter.moved("copy", rel, size)
                    elif isinstance(exc, DatapoolUserError):
                        user_error = exc
                    else:
                        result.failed.append(f"{rel}: {_one_line(exc)}")
                if len(rows) >= 500:
                    cached.record(rows)
                    rows = []
                if user_error is not None:
                    for fut in pending:
                        fut.cancel()
                    break
        except BaseException:  # Ctrl-C: don't start what is queued; what runs finishes whole or not at all
            for fut in pending:
                fut.cancel()
            raise
        finally:
            cached.record(rows)  # what landed is cached even if we are interrupted
        if user_error is not None:
            raise user_error
        if plan.delete and not result.failed:
            dst.delete(plan.delete)
            result.deleted = len(plan.delete)
            for rel in plan.delete:
                reporter.moved("delete", rel, 0)
    result.seconds = time.monotonic() - started
    reporter.finish(result)
    if result.failed:
        more = f" (and {len(result.failed) - 3} more)" if len(result.failed) > 3 else ""
        raise SyncError(f"{len(result.failed)} file(s) failed, the rest synced; re-run to retry: "
                        + "; ".join(result.failed[:3]) + more)
    return result


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def close(*stores: Store) -> None:
    for s in stores:
        closer = getattr(s, "close", None)
        if closer:
            closer()
