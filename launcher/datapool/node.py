"""The agent's side of the datapool: pull inputs before the script, push outputs during and after it.

Ordering is the contract: checkpoints and reports go up while the script runs (without blocking it),
everything under model/ and reports/ goes up after it exits, and result.json goes up last, alone, so a
result in the store means the outputs it describes are complete.

A store that does not answer costs time, not the job: a failed periodic push is tried again with backoff
(netpolicy.PUSH_BACKOFF), saying so once per outage; the agent retries the final push until its deadline
(`set_deadline`: no request starts, or waits, past it).
"""
from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

from .. import netpolicy
from ..node.layout import PULLED, PUSHED
from .local import LocalStore
from .stores import open_store
from .sync import sync

INPUTS, OUTPUTS = PULLED, PUSHED
# Work in progress that must never be pushed: dot-folders (tokenize builds `.<name>.tmp-<pid>/` and renames it
# when done) and transformers' `tmp-checkpoint-N/` (renamed to `checkpoint-N/` once complete).
IN_PROGRESS = (".*", "*/.*", "tmp-checkpoint-*", "*/tmp-checkpoint-*")
RESULT_GLOB = "reports/jobs/*/result.json"  # the agent pushes these itself, last
# A file written less than this long ago may be mid-save (torch.save writes in place): the next push takes it.
SETTLE_SECONDS = 2.0


class NodeDatapool:
    """Binds the node's datapool root to a store URL (None = the root *is* the store: nothing to move)."""

    def __init__(self, store_url: str | None, root: Path, experiment: str, push_interval: float = 30.0):
        self.store_url = store_url
        self.root = Path(root)
        self.experiment = experiment
        self.push_interval = push_interval
        self.sub = f"experiments/{experiment}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one sync at a time: the pusher and the final push never overlap
        self.push_errors: list[str] = []
        self.deadline: float | None = None  # set_deadline: the final push's (absolute, time.time())
        self._remote = None  # the store of the push in flight, so a deadline set meanwhile reaches it

    @property
    def exp_dir(self) -> Path:
        return self.root / self.sub

    def _stores(self):
        local, remote = LocalStore(self.root, self.sub), open_store(self.store_url, self.sub)
        try:
            self._bound(remote)
        except BaseException:
            local.close()
            remote.close()
            raise
        return local, remote

    def _bound(self, remote) -> None:
        """An S3 store's requests stop at the deadline (one that swallows requests cannot hold the agent past it)."""
        if self.deadline is not None and hasattr(type(remote), "http"):
            remote.http.deadline = self.deadline

    def set_deadline(self, deadline: float) -> None:
        """No push starts, and no request of one waits, past `deadline` (time.time()): the final push's end."""
        self.deadline = deadline
        remote = self._remote
        if remote is not None:
            try:
                self._bound(remote)
            except Exception:  # noqa: BLE001 - a push in flight that could not even open its client ends by itself
                pass

    def _push(self, include: list[str], exclude: list[str] = (), settle: float = 0.0) -> None:
        timeout = -1 if self.deadline is None else max(0.0, self.deadline - time.time())
        if not self._lock.acquire(timeout=timeout):
            raise TimeoutError("a periodic push to the store is still hanging")
        try:
            local, remote = self._stores()
            self._remote = remote
            try:
                sync(local, remote, include=include, exclude=list(exclude), settle_seconds=settle)
            finally:
                self._remote = None
                local.close()
                remote.close()
        finally:
            self._lock.release()

    def pull_inputs(self, resume: list[Path] = ()) -> None:
        """Before the script: bring the experiment's data/ and model/base from the store, plus `resume` (a
        relaunched job's checkpoints and report folder, so it carries on where the last attempt stopped)."""
        if self.store_url is None:
            return
        extra = [rel + "/" for rel in map(self._rel, resume) if rel not in (None, "", ".")]
        with self._lock:
            local, remote = self._stores()
            try:
                sync(remote, local, include=[*INPUTS, *extra])
            finally:
                local.close()
                remote.close()

    def pull_paths(self, paths: list[Path], exclude: list[str] = ()) -> None:
        """Bring these folders of the experiment from the store (a relay worker's committed checkpoint, the
        reports of the workers before it)."""
        rels = [rel + "/" for rel in map(self._rel, paths) if rel not in (None, "", ".")]
        if self.store_url is None or not rels:
            return
        with self._lock:
            local, remote = self._stores()
            try:
                sync(remote, local, include=rels, exclude=list(exclude))
            finally:
                local.close()
                remote.close()

    def push_path(self, path: Path) -> None:
        """Push one folder now and return once it is in the store (verified by the sync): a relay worker commits
        a checkpoint only after this."""
        if self.store_url is None:
            return
        rel = self._rel(path)
        if rel is None:
            raise ValueError(f"{path} is outside the experiment dir {self.exp_dir}")
        self._push([rel + "/"], exclude=[RESULT_GLOB, *IN_PROGRESS])

    def _rel(self, path: Path) -> str | None:
        """The path relative to the experiment dir, as a glob that matches only itself."""
        try:
            rel = Path(path).resolve().relative_to(self.exp_dir.resolve()).as_posix()
        except ValueError:
            return None
        return re.sub(r"([*?\[])", r"[\1]", rel)

    def start_pushing(self, paths: list[Path]) -> None:
        """While the script runs: push new or changed files under `paths` every push_interval, off the main thread."""
        if self.store_url is None or self._thread is not None:
            return
        settled, live = [], []
        for p in paths:
            rel = self._rel(p)
            if rel is None:
                sys.stderr.write(f"[launcher] warning: {p} is outside {self.exp_dir}; it is not pushed\n")
            elif rel not in ("", "."):
                # Reports (logs, metrics) go up as they are; checkpoints wait until they are quiet.
                (live if rel == "reports" or rel.startswith("reports/") else settled).append(rel + "/")
        if not (settled or live):
            return

        def loop() -> None:
            failures, wait = 0, self.push_interval
            while not self._stop.wait(wait):
                try:
                    if settled:
                        self._push(settled, exclude=[RESULT_GLOB, *IN_PROGRESS], settle=SETTLE_SECONDS)
                    if live:
                        self._push(live, exclude=[RESULT_GLOB, *IN_PROGRESS])
                except Exception as exc:  # noqa: BLE001 - a failed periodic push is tried again, with backoff
                    self.push_errors.append(str(exc))
                    if not failures:  # once per outage, not once per try
                        sys.stderr.write(f"[launcher] warning: periodic datapool push failed ({one_line(exc)}); "
                                         "retrying quietly until the store answers\n")
                    # Sooner than the push interval, backing off: what the script saved reaches the store soon
                    # after it comes back.
                    wait = min(self.push_interval, netpolicy.backoff(failures, netpolicy.PUSH_BACKOFF))
                    failures += 1
                    continue
                if failures:
                    sys.stderr.write(f"[launcher] the store answers again: periodic pushes resumed after {failures} "
                                     "failed tries\n")
                failures, wait = 0, self.push_interval

        self._thread = threading.Thread(target=loop, name="datapool-pusher", daemon=True)
        self._thread.start()

    def stop_pushing(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A push hanging on a store that does not answer is left to end by itself (its requests stop at the
            # deadline); the final push waits for the lock it holds at most until then.
            self._thread.join(None if self.deadline is None else max(0.0, self.deadline - time.time()))
            if not self._thread.is_alive():
                self._thread = None

    def final_push(self) -> None:
        """After the script exits (any reason): stop the pusher and push the outputs (not result.json, not work in
        progress)."""
        self.stop_pushing()
        if self.store_url is None:
            return
        self._push(list(OUTPUTS), exclude=[RESULT_GLOB, *IN_PROGRESS])

    def push_file(self, path: Path) -> None:
        """Push one file (the agent calls it with result.json, last, so a result in the store means outputs are complete)."""
        if self.store_url is None:
            return
        rel = self._rel(path)
        if rel is None:
            raise ValueError(f"{path} is outside the experiment dir {self.exp_dir}")
        self._push([rel])


def one_line(exc: BaseException) -> str:
    """An exception as one short line (its whitespace folded), for a log line or a result's error."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__
