"""What the slurm backend sends, rendered from the plan alone (pure): the `sbatch` argv, the batch script Slurm
runs on the job's first node, and the wrapper `srun` runs once per node around the node bootstrap.

Layout on the cluster's shared filesystem, under `remote_dir` (default ~/.launcher-node; sbatch's --chdir):

    code/<sha>.tar.gz                 the snapshot, uploaded once per hash
    jobs/<id>/                        batch.sh, node.sh, bootstrap.sh, secrets.env (0600), slurm-<jobid>.out
    nodes/<rank>/                     each node's own bootstrap base (rank = SLURM_NODEID): code/<sha>/, venvs/,
                                      datapool/, jobs/<id>/ (spec.json, agent.pid, agent.log, setup.log, result.json)

Every node gets its own folder because the filesystem is shared: two agents of one job must not share a state dir
(pid files, result.json) or a datapool they both write. A folder per rank, not per job, so the unpacked code and a
venv are reused by the next job.

Time: one absolute deadline (launcher/spec.py). `--time` is fixed at submit (deadline + the dead-man margin - the
plan's creation, in minutes); the batch script lowers it at each start to what is left (a user may shorten a job's
limit), so a job that pended, or was requeued, never outlives the deadline in Slurm's books either.
"""
from __future__ import annotations

import math
import re
import shlex

from ...node import bootstrap
from ...gpus import GpuRequest
from ...plan import Plan
from .options import SlurmOptions


def options(plan: Plan) -> SlurmOptions:
    return getattr(plan.job, "slurm", None) or SlurmOptions()


def base_word(remote_dir: str) -> str:
    """The base dir as a shell word: relative to the user's home unless absolute."""
    return shlex.quote(remote_dir) if remote_dir.startswith("/") else f'"$HOME"/{shlex.quote(remote_dir)}'


def shown(remote_dir: str) -> str:
    return remote_dir if remote_dir.startswith("/") else f"~/{remote_dir}"


def job_dir(job_id: str) -> str:
    return f"jobs/{job_id}"


def gres_type(gpu: GpuRequest, opts: SlurmOptions) -> str | None:
    """The cluster's gres type for a catalog GPU: the profile's map, else the name lowercased without its memory
    (A100-80GB -> a100). None for a bare count (`--gpu 2`): any type the node has."""
    if gpu.type is None:
        return None
    return opts.gres_types.get(gpu.type.name) or re.sub(r"-\d+GB?$", "", gpu.type.name).lower()


def gres(plan: Plan) -> str | None:
    """--gres: the GPUs of --gpu, then the profile's other generic resources."""
    opts, gpu = options(plan), plan.job.gpu_request
    items = []
    if gpu is not None:
        kind = gres_type(gpu, opts)
        items.append(f"gpu:{kind}:{gpu.count}" if kind else f"gpu:{gpu.count}")
    if opts.gres:
        items.append(opts.gres)
    return ",".join(items) or None


def gpus_per_node(plan: Plan) -> int:
    gpu = plan.job.gpu_request
    return gpu.count if gpu is not None else 1


def time_limit_minutes(plan: Plan) -> int:
    """Slurm's limit at submit: the whole way to the dead-man switch, from the plan's creation, in whole minutes."""
    return max(1, math.ceil((plan.spec.deadman_at - plan.created) / 60))


def comment(plan: Plan) -> str:
    """The tag the sweeper finds a job by (no spaces: `scontrol -o` and squeue show it unquoted)."""
    return f"launcher:job={plan.job_id},deadline={int(plan.deadline_at)}"


def parse_comment(text: str) -> tuple[str, float] | None:
    m = re.search(r"launcher:job=([a-z0-9-]+),deadline=(\d+)", text or "")
    return (m[1], float(m[2])) if m else None


def sbatch_argv(plan: Plan) -> list[str]:
    """The exact sbatch command, run in the base dir: the job's working directory, which its relative paths
    (--output, the script) start from."""
    job, opts = plan.job, options(plan)
    jd = job_dir(plan.job_id)
    argv = ["sbatch", "--parsable", f"--job-name={plan.job_id}", f"--comment={comment(plan)}",
            f"--output={jd}/slurm-%j.out", "--open-mode=append",
            # The job starts from the user's login environment on the node, not this shell's (whose secrets and
            # paths mean nothing there); the batch script hands its own environment to the steps.
            "--export=NONE",
            f"--nodes={job.num_nodes}", "--ntasks-per-node=1", f"--time={time_limit_minutes(plan)}"]
    if job.cpus:
        argv.append(f"--cpus-per-task={math.ceil(job.cpus)}")
    if job.memory_bytes:
        argv.append(f"--mem={math.ceil(job.memory_bytes / 2**20)}M")
    g = gres(plan)
    if g:
        argv.append(f"--gres={g}")
    for flag, value in (("partition", opts.partition), ("account", opts.account), ("qos", opts.qos),
                        ("constraint", opts.constraint)):
        if value:
            argv.append(f"--{flag}={value}")
    # A requeue (preemption, a node failure, `scontrol requeue`) reruns the batch script: only with --max-restarts.
    argv.append("--requeue" if job.max_restarts else "--no-requeue")
    argv.append(f"{jd}/batch.sh")
    return argv


BATCH = r"""#!/bin/bash
# launcher batch script for job @@JOB_ID@@: Slurm runs it on the job's first node, and again after each requeue.
# Generated; see launcher/backends/slurm/script.py.
set -uo pipefail
JOB_ID=@@JOB_ID_Q@@
JOBDIR=@@JOBDIR@@
MAX_RESTARTS=@@MAX_RESTARTS@@
DEADMAN_AT=@@DEADMAN_AT@@
RESTARTS=${SLURM_RESTART_COUNT:-0}
STATE0=nodes/0/$JOBDIR
say() { echo "[launcher $(date -u +%H:%M:%S)] $*"; }

# Steps inherit this script's environment (sbatch --export=NONE gave it the login environment); the agent counts a
# requeue's rerun as a new attempt (SLURM_RESTART_COUNT) and knows how many are allowed.
export SLURM_EXPORT_ENV=ALL LAUNCH_MAX_RESTARTS=$MAX_RESTARTS
# Slurm signals every process of the job itself (requeue, preemption, time limit, scancel): this shell only has to
# outlive that SIGTERM and wait for its step; if it ended now, the job would end and take the agents with it.
trap 'say "SIGTERM: the agents stop their scripts and push"' TERM

say "Slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, restart $RESTARTS of $MAX_RESTARTS"
# The secrets: a 0600 file (never argv, never the plan) into this environment; kept while a requeue may need it.
if [ -f "$JOBDIR/secrets.env" ]; then set -a; . "$JOBDIR/secrets.env"; set +a; fi
[ "$RESTARTS" -ge "$MAX_RESTARTS" ] && rm -f "$JOBDIR/secrets.env"

if [ "$RESTARTS" -gt "$MAX_RESTARTS" ]; then
  # Requeued once more than --max-restarts allows: not run again. The last attempt's result stands; without one
  # (it was killed before writing it) this record says why.
  say "requeued after --max-restarts $MAX_RESTARTS restart(s): not run again"
  if [ ! -f "$STATE0/result.json" ]; then
    mkdir -p "$STATE0"
    printf '{"job_id": "%s", "exit_code": null, "reason": "preempted", "error": "%s"}\n' "$JOB_ID" \
      "Slurm requeued the job after its --max-restarts $MAX_RESTARTS restart(s); not run again" > "$STATE0/result.json"
  fi
  exit 0
fi

# Slurm's own limit: what is left until the dead-man switch (a user may lower a job's limit, never raise it).
LEFT=$(( (DEADMAN_AT - $(date +%s) + 59) / 60 ))
if [ "$LEFT" -ge 1 ]; then
  scontrol update JobId="$SLURM_JOB_ID" TimeLimit="$LEFT" > /dev/null 2>&1 || say "time limit not lowered to $LEFT min"
fi
@@RENDEZVOUS@@
srun --export=ALL --nodes=@@NODES@@ --ntasks=@@NODES@@ --ntasks-per-node=1@@SRUN_CPUS@@ bash "$JOBDIR/node.sh" &
STEP=$!
while :; do wait "$STEP"; RC=$?; kill -0 "$STEP" 2> /dev/null || break; done
say "step ended ($RC)"
exit "$RC"
"""

RENDEZVOUS = r"""
# torchrun's static rendezvous: every node knows the first one's address (its NodeAddr: names need not resolve).
FIRST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
ADDR=$(scontrol show node "$FIRST" | grep -o 'NodeAddr=[^ ]*' | head -n 1 | cut -d= -f2)
export LAUNCH_NUM_NODES=@@NODES@@ LAUNCH_TORCHRUN=1 MASTER_ADDR="${ADDR:-$FIRST}" MASTER_PORT=@@PORT@@ \
  NPROC_PER_NODE=@@NPROC@@ WORLD_SIZE=@@WORLD@@
say "rendezvous at $MASTER_ADDR:$MASTER_PORT ($FIRST)"
"""

RENDEZVOUS_ONE = r"""
export LAUNCH_NUM_NODES=1 LAUNCH_TORCHRUN=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=@@PORT@@ NPROC_PER_NODE=@@NPROC@@ \
  WORLD_SIZE=@@NPROC@@
"""

NODE = r"""#!/bin/bash
# launcher node wrapper for job @@JOB_ID@@: srun runs it once per node; SLURM_NODEID is the node's rank, and its
# folder nodes/<rank>/. Generated; see launcher/backends/slurm/script.py.
RANK=${SLURM_NODEID:-0}
STATE=nodes/$RANK/@@JOBDIR@@
CODE=nodes/$RANK/code/@@SHA@@
# Slurm signals every process of the step at once; the bootstrap must outlive that SIGTERM to wait for the agent,
# which handles it (the script's grace period, then the last push). Ignored here, ignored in the bootstrap's helpers
# too: so the dead-man switch is ended here, by pid, once the bootstrap is done.
trap '' TERM
# Jobs that start together share the rank's folder: one unpacks the snapshot, the others wait for it (two unpacks of
# one snapshot race to rename it into place, and the loser fails).
mkdir -p "nodes/$RANK/code"
exec 9> "nodes/$RANK/code/.unpack.lock"
[ ! -d "$CODE" ] && command -v flock > /dev/null && flock 9
bash @@JOBDIR@@/bootstrap.sh 9>&- &
BOOT=$!
while kill -0 "$BOOT" 2> /dev/null && [ ! -d "$CODE" ]; do sleep 0.2; done
exec 9>&-
wait "$BOOT"
RC=$?
if read -r p s < "$STATE/deadman.pid" 2> /dev/null \
    && [ "$(sed -E 's/^.*\) //' "/proc/$p/stat" 2> /dev/null | cut -d' ' -f20)" = "$s" ]; then
  kill -KILL -- "-$p" 2> /dev/null
fi
exit "$RC"
"""


def _fill(template: str, values: dict[str, str]) -> str:
    # @@NAME@@ placeholders: the scripts are full of shell braces that str.format would trip on.
    return re.sub(r"@@([A-Z_0-9]+)@@", lambda m: values[m[1]], template)


def batch_script(plan: Plan) -> str:
    job, opts = plan.job, options(plan)
    nproc = gpus_per_node(plan)
    values = {"JOB_ID": plan.job_id, "JOB_ID_Q": shlex.quote(plan.job_id), "JOBDIR": job_dir(plan.job_id),
              "MAX_RESTARTS": str(job.max_restarts), "DEADMAN_AT": str(int(plan.spec.deadman_at)),
              "NODES": str(job.num_nodes), "NPROC": str(nproc),
              "PORT": str(opts.master_port) if opts.master_port else "$((20000 + SLURM_JOB_ID % 20000))",
              "WORLD": str(nproc * job.num_nodes),
              # 22.05 on: a step no longer inherits the job's --cpus-per-task; ask for it again.
              "SRUN_CPUS": f" --cpus-per-task={math.ceil(job.cpus)}" if job.cpus else ""}
    if job.num_nodes > 1:
        values["RENDEZVOUS"] = _fill(RENDEZVOUS, values)
    elif getattr(job, "torchrun", False):
        values["RENDEZVOUS"] = _fill(RENDEZVOUS_ONE, values)
    else:
        values["RENDEZVOUS"] = ""
    return _fill(BATCH, values)


def node_script(plan: Plan) -> str:
    return _fill(NODE, {"JOB_ID": plan.job_id, "JOBDIR": job_dir(plan.job_id), "SHA": plan.snapshot.sha256})


def bootstrap_script(plan: Plan) -> str:
    """The node bootstrap every backend uses, based in this node's own folder; the snapshot is the shared one."""
    opts, sha = options(plan), plan.snapshot.sha256
    return bootstrap.render(plan.spec, base=f'{base_word(opts.remote_dir)}/nodes/"${{SLURM_NODEID:-0}}"',
                            snapshot_sha=sha, snapshot_tar=f"../../code/{sha}.tar.gz", python=opts.python,
                            teardown="none", keep_on_failure=plan.job.keep_on_failure)


def files(plan: Plan) -> dict[str, tuple[str, int]]:
    """What start() writes under the base dir besides the snapshot and the secrets: {relative path: (text, mode)}."""
    jd = job_dir(plan.job_id)
    return {f"{jd}/bootstrap.sh": (bootstrap_script(plan), 0o755), f"{jd}/node.sh": (node_script(plan), 0o755),
            f"{jd}/batch.sh": (batch_script(plan), 0o755)}


def secrets_file(names: list[str], environ) -> bytes:
    return "".join(f"{name}={shlex.quote(environ[name])}\n" for name in names).encode()


def render(plan: Plan) -> dict:
    opts, sha = options(plan), plan.snapshot.sha256
    where = shown(opts.remote_dir)
    jd = job_dir(plan.job_id)
    out: dict = {"submit": f"over ssh on the login node {opts.host}" if opts.host else "sbatch on this machine",
                 "cwd": where}
    if opts.host:
        out.update(host=opts.host, identity=opts.identity, known_hosts=opts.known_hosts or "~/.ssh/known_hosts")
    if opts.slurm_env:
        out["slurm_env"] = opts.slurm_env
    uploads = [{"path": f"{where}/code/{sha}.tar.gz", "bytes": plan.snapshot.size,
                "when": bootstrap.UPLOAD_WHEN}]
    uploads += [{"path": f"{where}/{rel}", "bytes": len(text.encode())} for rel, (text, _) in files(plan).items()]
    if plan.job.secrets:
        uploads.append({"path": f"{where}/{jd}/secrets.env", "mode": "0600", "holds": list(plan.job.secrets)})
    out["upload"] = uploads
    out["sbatch"] = sbatch_argv(plan)
    out["batch_script"] = batch_script(plan)
    out["node_script"] = node_script(plan)
    out["bootstrap"] = bootstrap_script(plan)
    return out
