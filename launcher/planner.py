"""Job -> Plan, the same steps for every backend. Pure: reads the project's files, writes nothing, no network.

    check the script -> hold the job against the backend's capabilities (refuse, or note) -> default max runtime
    -> job id and the one deadline -> datapool binding -> code snapshot (remote) -> AgentSpec -> backend.render
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .backends import get_backend, names_where
from .backends.base import WARNING, Backend
from .datapool.url import EXAMPLES, StoreUrl
from .errors import UserError
from .job import Job
from .node.layout import PULLED, PUSHED
from .plan import Plan, new_job_id
from .spec import SPEC_VERSION, AgentSpec, deadline_for
from .units import format_duration

# Nothing on a rented machine runs forever by default.
CLOUD_DEFAULT_MAX_RUNTIME = 24 * 3600
DEFAULT_LOCAL_ROOT = "datapool"


def capability_notes(backend: Backend, job: Job) -> list[str]:
    """Refuse what the backend cannot do at all; name in the plan what it will not enforce."""
    caps, name, notes = backend.capabilities, backend.name, []
    if job.spot and not caps.spot:
        where = ", ".join(names_where(lambda c: c.spot))
        raise UserError(f"--spot needs a backend with spot capacity ({where}): --backend {name} has none; "
                        "drop --spot")
    if job.max_restarts and not (caps.spot or caps.preempts_on_demand):
        where = ", ".join(names_where(lambda c: c.spot or c.preempts_on_demand))
        raise UserError(f"--max-restarts relaunches a preempted job: --backend {name} is never preempted; "
                        f"drop --max-restarts (or use a backend that preempts: {where})")
    if job.max_restarts and not job.spot and not caps.preempts_on_demand:
        notes.append(f"{WARNING}--max-restarts {job.max_restarts} without --spot: on-demand capacity is not preempted, so "
                     "it will likely never be used")
    if job.num_nodes > caps.max_nodes:
        raise UserError(f"--num-nodes {job.num_nodes}: --backend {name} runs at most {caps.max_nodes} node(s)")
    if job.num_nodes > 1 and not job.script.endswith(".py"):
        notes.append(f"--num-nodes {job.num_nodes}: {job.script} is not a .py script, so it runs once per node "
                     "without torchrun (NODE_RANK, MASTER_ADDR, WORLD_SIZE are set)")
    if job.gpu:
        gpu = job.gpu_request
        if caps.gpus is None:  # the machine's GPUs: checked by the platform only where it enforces resources
            if not caps.resources_enforced:
                notes.append(f"{WARNING}gpu {job.gpu}: --backend {name} uses whatever GPUs the machine has; the type and "
                             "count are not checked")
        elif gpu.type is None:
            raise UserError(f"--gpu {job.gpu} names no GPU type: --backend {name} picks its machine by type; "
                            f"give TYPE:{gpu.count}, e.g. {caps.gpus[0]}:{gpu.count}")
        elif gpu.type.name not in caps.gpus:
            raise UserError(f"--gpu {gpu.type.name} is not offered by --backend {name}; "
                            f"available: {', '.join(caps.gpus)}")
    if not caps.resources_enforced:
        given = [f"--{f} {getattr(job, f)}" for f in ("cpus", "memory", "disk") if getattr(job, f) is not None]
        if given:
            notes.append(f"{WARNING}{', '.join(given)}: --backend {name} does not reserve or limit resources; "
                         "the job gets what the machine has")
    if job.datapool:
        scheme = job.datapool.scheme
        if scheme not in caps.datapool_schemes:
            raise UserError(f"--datapool {scheme}:// cannot be reached from --backend {name} nodes; use "
                            + " or ".join(f"{s}://" for s in caps.datapool_schemes))
    elif caps.remote:
        examples = " or ".join(EXAMPLES[s] for s in caps.datapool_schemes if s in EXAMPLES)
        raise UserError(f"--backend {name} needs a datapool store that both this machine and the node reach "
                        f"(it is where logs and results meet): pass --datapool {examples} "
                        "or set LAUNCHER_DATAPOOL")
    if job.terminate_after and not caps.remote:
        notes.append(f"--terminate-after: --backend {name} holds no machine; the job's processes end with it anyway")
    if job.keep_on_failure and not caps.remote:
        notes.append(f"--keep-on-failure: --backend {name} tears nothing down; nothing to keep")
    for section in job.unused_sections:
        notes.append(f"the profile's {section}: section is for --backend {section}; unused on --backend {name}")
    return notes


def with_default_datapool(backend: Backend, job: Job, *, online: bool = False) -> tuple[Job, list[str]]:
    """A remote job with no store named gets its backend's default store (a note says which); otherwise `job` as it
    is. `online`: the launch resolves what the offline plan leaves as a placeholder (see Backend.default_datapool)."""
    if job.datapool or not backend.capabilities.remote:
        return job, []
    url = backend.default_datapool(job.options, online=online)
    if url is None:
        return job, []  # capability_notes says that this backend needs one named
    job = job.model_copy(update={"datapool": StoreUrl(url)})
    return job, [f"no --datapool: the {backend.name} default store, made on first use"]


def local_binding(job: Job) -> tuple[str, str | None]:
    """(datapool root on this machine, store to sync with). A file:// store *is* the root: nothing to copy."""
    if job.datapool and job.datapool.scheme == "file":
        return job.datapool.path, None
    root = Path(os.environ.get("DATAPOOL_ROOT") or Path(job.workdir) / DEFAULT_LOCAL_ROOT)
    return str(root.resolve()), job.datapool


def endpoint_url(job: Job) -> str | None:
    """The S3 endpoint the node uses: --endpoint-url, else this machine's AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
    (what the client itself uses, so client and node meet at the same store). Only for an s3:// datapool."""
    if job.endpoint_url or not job.datapool or job.datapool.scheme != "s3":
        return job.endpoint_url
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_plan(job: Job, *, snapshot=None, job_id: str | None = None, created: float | None = None,
              attempt: int = 1, backend: Backend | None = None) -> Plan:
    """`snapshot` (a launcher.snapshot.Snapshot) is built by the caller for remote backends; None renders a
    dry-run snapshot that is hashed but kept nowhere. A relaunch (`attempt` > 1) passes the job's id and creation
    time, so it keeps its id and its one deadline. `backend`: the job's, when the caller has it already."""
    backend = backend or get_backend(job.backend)
    job.check_script()
    job, default_note = with_default_datapool(backend, job)
    notes = capability_notes(backend, job) + default_note
    notes += backend.check(job)
    if backend.capabilities.remote and job.max_runtime is None:
        job = job.model_copy(update={"max_runtime": CLOUD_DEFAULT_MAX_RUNTIME})
        notes.append(f"max runtime {format_duration(CLOUD_DEFAULT_MAX_RUNTIME)} (the default for remote backends; "
                     "--max-runtime changes it)")
    created = time.time() if created is None else created
    job_id = job_id or new_job_id(job)
    if not backend.capabilities.remote:
        snapshot = None
    elif snapshot is None:
        import dataclasses
        import tempfile

        from .snapshot import build

        with tempfile.TemporaryDirectory(prefix="launch-dry-run-") as tmp:
            # Hashed, kept nowhere: its file goes with the temporary folder.
            snapshot = dataclasses.replace(build(Path(job.workdir), cache_dir=Path(tmp)), path=None)
    paths = backend.node_paths(job, job_id, snapshot.sha256 if snapshot else None)
    store = job.datapool if backend.capabilities.remote else local_binding(job)[1]
    store = None if store is None else str(store)  # the spec carries text: it crosses to the node as JSON
    node_store = None if paths.root_is_store else store  # None: the node's root is the store, nothing moves
    exp = f"experiments/{job.experiment}"
    node = job.node
    spec = AgentSpec(
        version=SPEC_VERSION, job_id=job_id, backend=backend.name, run_name=job.run_name, script=job.script,
        args=job.args, env=job.env, secrets=job.secrets, experiment=job.experiment, workdir=paths.workdir,
        datapool_root=paths.datapool_root, store_url=node_store, endpoint_url=endpoint_url(job), state_dir=paths.state_dir,
        https_proxy=node.https_proxy if node else None, no_proxy=node.no_proxy if node else None,
        ca_bundle=node.ca_pem() if node else None,
        deadline_at=deadline_for(created, job.max_runtime, job.grace_period, job.push_timeout),
        grace_period=job.grace_period, push_interval=job.push_interval, push_timeout=job.push_timeout, attempt=attempt,
        preemptible=job.spot or backend.capabilities.preempts_on_demand,
        relay=job.relay.model_copy(update={"worker_id": job.relay.worker_id or job_id}) if job.relay else None,
    )
    if job.relay is not None:
        from .relay.config import stop_margin

        ttl = job.relay.ttl
        notes.append(f"relay worker of run {job.relay.run_id} at {job.relay.url}: lease {ttl:g} s, renewed every "
                     f"{ttl / 4:g} s; cut off from the commander, the script gets SIGTERM "
                     f"{ttl - stop_margin(ttl) - job.grace_period:g} s after the last renewal and is dead "
                     f"{stop_margin(ttl):g} s before the lease ends")
    plan = Plan(
        backend=backend.name, job_id=job_id, job=job, created=created, spec=spec, snapshot=snapshot,
        datapool={
            "root": paths.datapool_root,
            "store": store,
            **({"endpoint": spec.endpoint_url} if spec.endpoint_url else {}),  # where client and node meet it
            "pull": [f"{exp}/{p}" for p in PULLED] if node_store else [],
            "push": [f"{exp}/{p}" for p in PUSHED] if node_store else [],
        },
        notes=[n for n in notes if not n.startswith(WARNING)],
        warnings=[n.removeprefix(WARNING) for n in notes if n.startswith(WARNING)],
    )
    plan.request = backend.render(plan)
    plan.price = backend.price(job)
    return plan
