"""The agent's side of the datapool: pull inputs before the script, push outputs during and after it.

STUB written by the lead so the agent can call it; issue 3 replaces the bodies (keep the signatures).
"""
from __future__ import annotations

from pathlib import Path


class NodeDatapool:
    """Binds the node's datapool root to a store URL (None = the root *is* the store: nothing to move)."""

    def __init__(self, store_url: str | None, root: Path, experiment: str, push_interval: float = 30.0):
        self.store_url = store_url
        self.root = Path(root)
        self.experiment = experiment
        self.push_interval = push_interval

    def pull_inputs(self) -> None:
        """Before the script: bring the experiment's data/ and model/base from the store."""

    def start_pushing(self, paths: list[Path]) -> None:
        """While the script runs: push new or changed files under `paths` every push_interval, off the main thread."""

    def final_push(self) -> None:
        """After the script exits (any reason): stop the pusher and push model/ and reports/ (not result.json)."""

    def push_file(self, path: Path) -> None:
        """Push one file (the agent calls it with result.json, last, so a result in the store means outputs are complete)."""
