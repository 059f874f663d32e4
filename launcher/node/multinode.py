"""The agent's side of a multi-node job: its rank, torchrun around the script, and who pushes what.

The k8s backend renders a pod's static env (`LAUNCH_NUM_NODES`, `LAUNCH_TORCHRUN`, `MASTER_ADDR`, `MASTER_PORT`,
`NPROC_PER_NODE`, `WORLD_SIZE`); the Job controller adds `JOB_COMPLETION_INDEX` to each pod of an Indexed Job (the
slurm backend's batch script exports the same names, and srun gives each node's agent `SLURM_NODEID`). From
those the agent sets `NODE_RANK`, runs a `.py` script as

    python -m torch.distributed.run --nnodes N --nproc-per-node P --node-rank R --master-addr A --master-port M
        script.py ARGS

(static rendezvous: every rank knows pod 0's name, no etcd), and only rank 0 pushes outputs and result.json. Every
rank writes its log; ranks above 0 push only theirs, as `log-rank<R>.txt` beside rank 0's `log.txt`.

Without `LAUNCH_NUM_NODES` (every other backend) nothing here changes anything. Stdlib only.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Mapping


def num_nodes(environ: Mapping[str, str]) -> int:
    return int(environ.get("LAUNCH_NUM_NODES") or 1)


def node_rank(environ: Mapping[str, str]) -> int:
    if num_nodes(environ) == 1:
        return 0
    # A k8s Indexed Job's pod, else a Slurm step's node (srun runs one agent per node: SLURM_NODEID is its rank).
    index = environ.get("JOB_COMPLETION_INDEX", environ.get("SLURM_NODEID"))
    if index is None or not index.isdigit():
        raise RuntimeError("a multi-node agent without JOB_COMPLETION_INDEX (a k8s Indexed Job) or SLURM_NODEID "
                           "(a Slurm step)")
    return int(index)


def is_primary(environ: Mapping[str, str]) -> bool:
    return node_rank(environ) == 0


def rank_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What the script sees beyond the pod's env: NODE_RANK (and NNODES, torchrun's name for the node count)."""
    if "LAUNCH_NUM_NODES" not in environ:
        return {}
    return {"NODE_RANK": str(node_rank(environ)), "NNODES": str(num_nodes(environ))}


def wrap(cmd: list[str], environ: Mapping[str, str]) -> list[str]:
    """The script's command under torchrun, when the job asks for it and the script is Python."""
    if environ.get("LAUNCH_TORCHRUN") != "1" or len(cmd) < 3 or not cmd[2].endswith(".py"):
        return cmd
    python, _unbuffered, script, *args = cmd
    return [python, "-u", "-m", "torch.distributed.run", "--nnodes", str(num_nodes(environ)),
            "--nproc-per-node", environ.get("NPROC_PER_NODE", "1"), "--node-rank", str(node_rank(environ)),
            "--master-addr", environ["MASTER_ADDR"], "--master-port", environ.get("MASTER_PORT", "29500"),
            script, *args]


def log_name(environ: Mapping[str, str]) -> str:
    return "log.txt" if is_primary(environ) else f"log-rank{node_rank(environ)}.txt"


def datapool_for_rank(pool, environ: Mapping[str, str], log_path: Path):
    """Rank 0 keeps the whole datapool binding; the others pull the same inputs but push only their own log."""
    if is_primary(environ):
        return pool
    return _SecondaryRank(pool, log_path)


class _SecondaryRank:
    def __init__(self, pool, log_path: Path):
        self.pool, self.log_path = pool, log_path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def pull_inputs(self, resume=()) -> None:
        self.pool.pull_inputs(resume)

    def start_pushing(self, paths) -> None:
        interval = float(getattr(self.pool, "push_interval", 30.0))

        def loop() -> None:
            while not self._stop.wait(interval):
                self._push_log()

        self._thread = threading.Thread(target=loop, name="rank-log-pusher", daemon=True)
        self._thread.start()

    def _push_log(self) -> None:
        try:
            self.pool.push_file(self.log_path)
        except Exception as exc:  # noqa: BLE001 - retried next round; the pod's own log has it all anyway
            sys.stderr.write(f"[launcher] warning: log push failed: {exc}\n")

    def final_push(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._push_log()

    def push_file(self, path) -> None:
        """result.json: rank 0's alone says how the job ended; this rank's stays in its pod and its log."""
