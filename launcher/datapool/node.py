"""The agent's side of the datapool: pull inputs before the script, push outputs during and after it.

Ordering is the contract: checkpoints and reports go up while the script runs (without blocking it),
everything under model/ and reports/ goes up after it exits, and result.json goes up last, alone, so a
result in the store means the outputs it describes are complete.
"""
from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

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

    @property
    def exp_dir(self) -> Path:
        return self.root / self.sub

    def _stores(self):
        return LocalStore(self.root, self.sub), open_store(self.store_url, self.sub)

    def _push(self, include: list[str], exclude: list[str] = (), settle: float = 0.0) -> None:
        with self._lock:
            local, remote = self._stores()
            try:
                sync(local, remote, include=include, exclude=list(exclude), settle_seconds=settle)
            finally:
                local.close()
                remote.close()

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
            while not self._stop.wait(self.push_interval):
                try:
                    if settled:
                        self._push(settled, exclude=[RESULT_GLOB, *IN_PROGRESS], settle=SETTLE_SECONDS)
                    if live:
                        self._push(live, exclude=[RESULT_GLOB, *IN_PROGRESS])
                except Exception as exc:  # noqa: BLE001 - a failed periodic push is retried next round
                    self.push_errors.append(str(exc))
                    sys.stderr.write(f"[launcher] warning: periodic datapool push failed: {exc}\n")

        self._thread = threading.Thread(target=loop, name="datapool-pusher", daemon=True)
        self._thread.start()

    def stop_pushing(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
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
