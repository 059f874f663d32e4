"""The outputs a job left on the box, fetched over SFTP: what `launch sync up --from-job JOB` pushes for a job that
ended `push_failed` (the store did not answer the agent's final push within --push-timeout; the box keeps them).

The agent pushes the experiment's model/, data/tokenized/ and reports/ (launcher/node/layout.py PUSHED); the same
folders come back here, from `<base>/datapool/experiments/<experiment>/`, into the caller's experiment folder.
Work in progress (dot-folders, tmp-checkpoint-N/) comes too: the push that follows skips it, as the agent's does.
"""
from __future__ import annotations

from pathlib import Path

from ...node.layout import PUSHED


def remote_experiment_dir(base: str, experiment: str) -> str:
    """The experiment's folder on the box, as SFTP takes it (relative to the login's home unless absolute)."""
    return f"{base.rstrip('/')}/datapool/experiments/{experiment}"


def fetch(client, base: str, experiment: str, into: Path) -> int:
    """Download the pushed folders of `experiment` from the box into `into` (the experiment dir here); returns
    the number of files fetched."""
    src = remote_experiment_dir(base, experiment)
    return sum(client.get_tree(f"{src}/{rel.rstrip('/')}", Path(into) / rel.rstrip("/")) for rel in PUSHED)
