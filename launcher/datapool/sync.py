"""The sync engine: compare two manifests, move only what differs, in parallel, verified, atomically.

A file moves when its size or content hash differs. Local hashes come from the hash cache; S3 objects are
compared through the ETag in their LIST entry, so a no-op sync reads no object. Every write lands whole
(temp + rename locally; S3 PUT/multipart complete are atomic), so a sync killed at any moment and run again
converges to the source tree.
"""
from __future__ import annotations

import fnmatch
import itertools
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


def _transfer(src: Store, dst: Store, rel: str, entry: Entry) -> list[tuple[Store, tuple]]:
    """Move one file; returns (local store, row) pairs for the hash caches that learned from it."""
    same_layout = (getattr(dst, "threshold", None), getattr(dst, "part_size", None)) == \
        (getattr(src, "threshold", None), getattr(src, "part_size", None))
    if dst.is_local:
        if src.is_local:
            row = dst.put_file(src.abspath(rel), rel, entry)
            # The copy was hashed as it was written: a source row that disagrees was wrong.
            fix = src.learned(rel, entry, row[3], row[4], same_layout)
            return [(dst, row)] + ([(src, fix)] if fix else [])
        tmp = dst.tmp_path()
        try:
            try:
                sha, etag = src.fetch(rel, entry, tmp, dst.threshold, dst.part_size)
            except IntegrityError:  # one more try: a flaky transfer heals, a corrupt object fails again
                sha, etag = src.fetch(rel, entry, tmp, dst.threshold, dst.part_size)
            return [(dst, dst.commit(tmp, rel, sha, etag, entry.mtime))]
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    if src.is_local:
        sent = dst.put_file(src.abspath(rel), rel, entry)
        # The upload hashed what it sent: that is what the cache learns (or is corrected to), provided the
        # file is still what was listed.
        fix = src.learned(rel, entry, sent.sha256, sent.etag, same_layout)
        return [(src, fix)] if fix else []
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
        if not dry_run:
            # A read-only root would otherwise fail half-way (the cache, a temp file, a folder): say so up front.
            for store in (src, dst):
                if isinstance(store, LocalStore):
                    store.check_writable(tree=store is dst)
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
        # Rows for the hash caches (source and/or destination) learned from the transfers; written here, on the
        # thread that opened the caches.
        rows: dict[int, tuple[Store, list[tuple]]] = {id(s): (s, []) for s in (src, dst) if s.is_local}

        def record_rows() -> None:
            for store, pending_rows in rows.values():
                store.record(pending_rows)
                pending_rows.clear()

        # Biggest first: the long transfers start at once and the small files fill the gaps around them.
        order = iter(sorted(plan.copy, key=lambda c: -c[1]))
        # At most `window` transfers queued at a time, topped up as they finish: a future for each of 100,000 files
        # at once was much of a cold upload's peak (bench/scale.py: 366 MB, now 119 MB with local.py's listing).
        window = max(2048, workers * 128)
        futures: dict = {}
        pending: set = set()

        def top_up() -> None:
            for rel, size, _ in itertools.islice(order, max(0, window - len(pending))):
                fut = pool.submit(_transfer, src, dst, rel, src_entries[rel])
                futures[fut] = (rel, size)
                pending.add(fut)

        top_up()
        user_error: BaseException | None = None
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                for fut in done:
                    rel, size = futures.pop(fut)
                    exc = fut.exception()
                    if exc is None:
                        for store, row in fut.result():
                            rows[id(store)][1].append(row)
                        result.copied += 1
                        result.bytes += size
                        reporter.moved("copy", rel, size)
                    elif isinstance(exc, DatapoolUserError):
                        user_error = exc
                    else:
                        result.failed.append(f"{rel}: {_one_line(exc)}")
                if sum(len(r) for _, r in rows.values()) >= 500:
                    record_rows()
                if user_error is not None:
                    for fut in pending:
                        fut.cancel()
                    break
                if len(pending) < window // 2:
                    top_up()
        except BaseException:  # Ctrl-C: don't start what is queued; what runs finishes whole or not at all
            for fut in pending:
                fut.cancel()
            raise
        finally:
            record_rows()  # what landed is cached even if we are interrupted
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
