"""The Modal function spec for a job, as a plain dict: pure (no `modal` import, no network), so `--dry-run` prints
offline exactly what app.py turns into Modal calls.

One app per job (name = job id; tags = job id, owner, deadline as epoch seconds: Modal tags reject ':'), one
function that runs the node bootstrap, started with `spawn` on a detached app. What only submit knows is a named slot
(launcher/backends/slots.py), filled by app.submit in this very spec, never a second rendering:

    timeout          Modal's timeout in seconds, counted from submit (`timeout_s`)
    snapshot_file    the packed code snapshot on this machine, the mount's local side
    secret_<name>    $NAME from your environment, for the Secret made from --secret NAME: never rendered
"""
from __future__ import annotations

import getpass
import math
from typing import NamedTuple
from urllib.parse import unquote, urlparse

from ...node import bootstrap
from ...errors import UserError
from ...gpus import GpuRequest
from ...job import Job
from ...plan import Plan
from ...spec import DEADMAN_MARGIN_S
from ...units import format_duration
from ..slots import slot
from .options import MODAL_NAME

# Everything of the job lives here in the container: code, state, the volume.
NODE_BASE = "/launcher-node"
VOLUME_MOUNT = f"{NODE_BASE}/volume"
FUNCTION_NAME = "launcher_node"
# Modal's limit per attempt (each retry gets a new one).
MAX_TIMEOUT_S = 24 * 3600
PRICE_TABLE_DATE = "2025-10-01"


class ModalGpu(NamedTuple):
    name: str  # Modal's gpu string, before ":COUNT"
    usd_per_gpu_hour: float  # list price, as of PRICE_TABLE_DATE


# Per catalog GPU (launcher/gpus.py); a type with no row is not offered on Modal.
GPUS: dict[str, ModalGpu] = {
    "T4": ModalGpu("T4", 0.59),
    "L4": ModalGpu("L4", 0.80),
    "A10G": ModalGpu("A10G", 1.10),
    "L40S": ModalGpu("L40S", 1.95),
    "A100-40GB": ModalGpu("A100-40GB", 2.10),
    "A100-80GB": ModalGpu("A100-80GB", 2.50),
    "H100": ModalGpu("H100", 3.95),
    "H200": ModalGpu("H200", 4.54),
}
# Most GPUs of one type a Modal container gets (8 for every type but A10G).
MAX_GPUS = {"A10G": 4}
# Modal list prices besides the GPU (USD per core-hour and per GiB-hour), as of PRICE_TABLE_DATE; a function that
# reserves nothing is billed at Modal's minimum (0.125 core, 128 MiB).
CPU_USD_PER_CORE_HOUR = 0.0472
MEMORY_USD_PER_GIB_HOUR = 0.0080
NONPREEMPTIBLE_MULTIPLIER = 3  # on CPU and memory, CPU-only functions (Modal GPUs are always preemptible)
TAG_JOB, TAG_OWNER, TAG_DEADLINE = "launcher-job", "launcher-owner", "launcher-deadline"


def volume_of(url: str) -> tuple[str, str]:
    """`modal-volume://NAME/path` -> (NAME, path inside the volume, '' for its root)."""
    parsed = urlparse(url)
    name, path = parsed.netloc, unquote(parsed.path).strip("/")
    if not MODAL_NAME.match(name or ""):
        raise UserError(f"bad datapool URL {url!r}: name the volume (letters, digits, '.', '_', '-'), "
                        "e.g. modal-volume://team-pool/datapool")
    if ".." in path.split("/"):
        raise UserError(f"bad datapool URL {url!r}: '..' is not a path inside a volume")
    return name, path


def is_volume(url: str | None) -> bool:
    return bool(url) and urlparse(url).scheme == "modal-volume"


def datapool_root(job: Job) -> str:
    if is_volume(job.datapool):
        _, path = volume_of(job.datapool)
        return f"{VOLUME_MOUNT}/{path}" if path else VOLUME_MOUNT
    return "datapool"


def snapshot_path(sha: str) -> str:
    return f"{NODE_BASE}/snapshots/{sha}.tar.gz"


def gpu_spec(gpu: GpuRequest) -> str:
    """`A100-40GB` for one, `H100:8` for several."""
    name = GPUS[gpu.type.name].name
    return name if gpu.count == 1 else f"{name}:{gpu.count}"


def gpu(job: Job) -> str | None:
    """Modal's gpu string (`A100-40GB`, `H100:8`); a count Modal cannot give is exit 2 here, before any call."""
    req = job.gpu_request
    if req is None:
        return None
    most = MAX_GPUS.get(req.type.name, 8)
    if req.count > most:
        raise UserError(f"--gpu {job.gpu}: Modal gives at most {most} {req.type.name} per container; "
                        f"use --gpu {req.type.name}:{most} or fewer")
    return gpu_spec(req)


def attempts_needed(runtime: int) -> int:
    """How many Modal attempts (24 h each at most) a max runtime spans."""
    return max(1, math.ceil(runtime / MAX_TIMEOUT_S))


def check_runtime(job: Job) -> list[str]:
    """Modal ends an attempt after 24 h: a longer --max-runtime needs retries that resume from the checkpoints."""
    from ...planner import CLOUD_DEFAULT_MAX_RUNTIME

    notes = []
    runtime = job.max_runtime or CLOUD_DEFAULT_MAX_RUNTIME  # check() runs before the planner fills the default
    needed = attempts_needed(runtime)
    if needed > 1 and job.max_restarts + 1 < needed:
        raise UserError(f"--max-runtime {format_duration(runtime)} is over Modal's 24 h limit per attempt: "
                        f"use --max-runtime 24h or less, or --max-restarts {needed - 1} (each retry resumes from the "
                        "checkpoints the last attempt pushed)")
    if needed > 1:
        notes.append(f"--max-runtime {format_duration(runtime)}: Modal stops each attempt after 24 h; "
                     f"the job runs as up to {needed} attempts (--max-restarts), each resuming from its checkpoints")
    elif runtime + job.grace_period + job.push_timeout + DEADMAN_MARGIN_S > MAX_TIMEOUT_S:
        room = MAX_TIMEOUT_S - job.grace_period - job.push_timeout - DEADMAN_MARGIN_S
        notes.append("the Modal timeout is capped at 24 h: the last grace period and push may be cut; "
                     f"--max-runtime {format_duration(room // 60 * 60)} leaves them room")
    return notes


def timeout_s(plan: Plan, now: float) -> int:
    """Teardown layer 2 (Modal's own dead-man switch): the node's dead-man time, at most 24 h, counted from `now`."""
    deadman = plan.spec.deadman_at
    if deadman is None:
        return MAX_TIMEOUT_S
    return int(max(60, min(MAX_TIMEOUT_S, math.ceil(deadman - now))))


def tags(plan: Plan) -> dict[str, str]:
    """What the sweeper finds a leak by, with or without the registry."""
    return {TAG_JOB: plan.job_id, TAG_OWNER: getpass.getuser(), TAG_DEADLINE: str(int(plan.deadline_at or 0))}


def nonpreemptible(job: Job) -> bool:
    # Modal preempts every function by default and restarts it on the same input; only CPU functions can opt out.
    return not job.spot and not job.gpu


def image_spec(job: Job) -> dict:
    """What image.node_image() builds: the base, the lock(s) it installs, the lock's hash."""
    return image_for(gpu=bool(job.gpu))


def image_for(gpu: bool) -> dict:
    from ... import images

    root = images.IMAGES_DIR.parent
    lock = images.LOCK_FILE
    if not lock.is_file():
        raise UserError(f"{lock.relative_to(root)} is missing: the Modal image installs it; "
                        "generate it with `python images/lock.py`")
    locks = [str(lock.relative_to(root))]
    if gpu and images.GPU_LOCK_FILE.is_file():
        locks.append(str(images.GPU_LOCK_FILE.relative_to(root)))  # the gpu extra, where CUDA is
    return {"base": images.CUDA_BASE, "python": images.PYTHON_VERSION, "requirements": locks,
            "lock_hash": images.lock_hash()}


def bootstrap_script(plan: Plan) -> str:
    sha = plan.snapshot.sha256
    return bootstrap.render(plan.spec, base=NODE_BASE, snapshot_sha=sha, snapshot_tar=snapshot_path(sha),
                            python="", teardown="none", keep_on_failure=False)


def secret_slot(name: str) -> str:
    return f"secret_{name.lower()}"


def function_spec(plan: Plan) -> dict:
    """The whole request: app, image, function (resources, limits, secrets by name, volumes) and the call."""
    job = plan.job
    modal_opts = getattr(job, "modal", None)
    resources: dict = {}
    if job.gpu:
        resources["gpu"] = gpu(job)
    if job.cpus:
        resources["cpu"] = float(job.cpus)
    if job.memory:
        resources["memory"] = math.ceil(job.memory_bytes / 2**20)  # MiB
    if job.disk:
        resources["ephemeral_disk"] = math.ceil(job.disk_bytes / 2**20)  # MiB
    secrets = []
    if job.secrets:  # names here; the values fill their slots at submit
        slots = {name: secret_slot(name) for name in job.secrets}
        if len(set(slots.values())) < len(slots):
            raise UserError(f"--secret {', '.join(job.secrets)}: two names differ only in case; rename one")
        secrets.append({"from_dict": {name: slot(s) for name, s in slots.items()}})
    if modal_opts and modal_opts.secrets:
        secrets += [{"from_name": name} for name in modal_opts.secrets]
    volumes = {}
    if is_volume(job.datapool):
        name, _ = volume_of(job.datapool)
        volumes[VOLUME_MOUNT] = {"volume": name, "create_if_missing": True}
    sha = plan.snapshot.sha256
    return {
        "app": {"name": plan.job_id, "tags": tags(plan), "state": "detached"},
        "image": image_spec(job),
        "function": {
            "name": FUNCTION_NAME,
            **resources,
            "timeout": slot("timeout"),  # timeout_s(plan, now) at submit: it counts from then
            "retries": job.max_restarts,
            "nonpreemptible": nonpreemptible(job),
            "secrets": secrets,
            "volumes": volumes,
            # The code rides along as one file, uploaded at submit (copy=False: no image rebuild per change).
            "mounts": [{"local": slot("snapshot_file"), "remote": snapshot_path(sha), "copy": False}],
        },
        "spawn": {"spec": plan.spec.model_dump(), "bootstrap": bootstrap_script(plan), "base": NODE_BASE},
    }


def price(job: Job) -> dict:
    g = job.gpu_request
    gpu_hour = GPUS[g.type.name].usd_per_gpu_hour * g.count if g else 0.0
    cores = job.cpus or 0.125
    gib = (job.memory_bytes / 2**30) if job.memory else 0.125
    rest = cores * CPU_USD_PER_CORE_HOUR + gib * MEMORY_USD_PER_GIB_HOUR
    if nonpreemptible(job):
        rest *= NONPREEMPTIBLE_MULTIPLIER
    hourly = round(gpu_hour + rest, 4)
    out = {"usd_per_hour": hourly, "gpu_usd_per_hour": round(gpu_hour, 4), "price_table_date": PRICE_TABLE_DATE,
           "basis": "Modal list prices: GPU + CPU cores + memory, billed per second while the container runs"}
    if job.max_runtime:  # the container may run to the deadline: max runtime + grace period + push timeout
        out["worst_case_usd"] = round(hourly * job.billed_seconds / 3600, 2)
    return out


def gpus_offered() -> tuple[str, ...]:
    return tuple(GPUS)
