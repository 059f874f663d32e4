"""The manifests for a job, rendered from the plan: pure (no network, no cluster), so `--dry-run` shows what is sent.

    Job       <job>            backoffLimit 0, activeDeadlineSeconds, TTL, podFailurePolicy, Indexed for N > 1
    ConfigMap <job>-spec       run.sh (the container's command), the node bootstrap, the AgentSpec
    Secret    <job>-secrets    --secret values from your environment (only when no existing Secret is named)
    Service   <job>            headless, --num-nodes > 1 only: pod 0's DNS name for the torchrun rendezvous

The Job is created suspended, the others with ownerReferences to it (so deleting the Job deletes them), then the
Job is resumed: a pod never starts before its ConfigMap and Secret exist. What only `start` knows is a named slot
(launcher/backends/slots.py), filled by start in these very manifests (`documents`), never a second rendering:

    job_uid            the Job's uid, for the others' ownerReferences (the Job is created first)
    context            the kubeconfig's current context, when no --context names one
    namespace          the context's namespace, when no --namespace names one
    snapshot_url       a presigned GET of code/<sha>.tar.gz (s3:// datapool), valid until the deadline
    result_url         a presigned PUT of reports/jobs/<job>/result.json, for a setup failure (s3:// datapool)
    snapshot_b64       the code snapshot itself, base64 (pvc:// datapool: it travels in the ConfigMap)
    secret_<name>      $NAME from your environment, in the Secret made for --secret NAME: never rendered
"""
from __future__ import annotations

import re

import yaml

from ...node import bootstrap
from ...errors import UserError
from ...plan import Plan
from ...spec import DEADMAN_MARGIN_S
from ..slots import slot
from .options import GFD_LABEL, K8sOptions

NODE_BASE = "/var/lib/launcher"  # an emptyDir: code, venv, state; gone with the pod
CONFIG_DIR = "/etc/launcher"  # the ConfigMap
DATAPOOL_MOUNT = "/datapool"  # a pvc:// datapool's claim
CONTAINER = "agent"
SNAPSHOT_KEY = "snapshot.tar.gz"
JOB_LABEL = "launcher/job"
DEADLINE_ANNOTATION = "launcher/deadline"
# The GPU product label's value per catalog GPU (launcher/gpus.py), per label key (one per provider). GPU feature
# discovery's, the default key, names every type the backend offers; a type missing from another key's table needs
# k8s: gpu_label_value.
GPU_LABEL_VALUES = {
    GFD_LABEL: {
        "T4": "Tesla-T4", "L4": "NVIDIA-L4", "A10G": "NVIDIA-A10G", "L40S": "NVIDIA-L40S",
        "A100-40GB": "NVIDIA-A100-SXM4-40GB", "A100-80GB": "NVIDIA-A100-SXM4-80GB", "H100": "NVIDIA-H100-80GB-HBM3",
        "H200": "NVIDIA-H200"},
    "cloud.google.com/gke-accelerator": {
        "T4": "nvidia-tesla-t4", "L4": "nvidia-l4", "A100-40GB": "nvidia-tesla-a100", "A100-80GB": "nvidia-a100-80gb",
        "H100": "nvidia-h100-80gb", "H200": "nvidia-h200-141gb"},
    "karpenter.k8s.aws/instance-gpu-name": {
        "T4": "t4", "L4": "l4", "A10G": "a10g", "L40S": "l40s", "A100-40GB": "a100", "A100-80GB": "a100",
        "H100": "h100", "H200": "h200"},
}


def options(plan: Plan) -> K8sOptions:
    return plan.job.k8s or K8sOptions()


def namespace_of(plan: Plan) -> str:
    return options(plan).namespace or slot("namespace")


def service_name(job_id: str) -> str:
    # A Service name is an RFC 1035 label: it must start with a letter; job ids may start with a digit.
    return job_id if job_id[:1].isalpha() else f"j-{job_id}"[:63].rstrip("-")


def master_addr(job_id: str) -> str:
    """Pod 0's DNS name: <hostname>.<subdomain>, resolved through the namespace's search path."""
    return f"{job_id}-0.{service_name(job_id)}"


def gpus_offered() -> tuple[str, ...]:
    """The catalog GPUs a node can be asked for by GPU feature discovery's label."""
    return tuple(GPU_LABEL_VALUES[GFD_LABEL])


def gpu_label(job) -> tuple[str, str] | None:
    gpu = job.gpu_request
    if gpu is None:
        return None
    opts = job.k8s or K8sOptions()
    key = opts.gpu_label_key
    if opts.gpu_label_value:
        return key, opts.gpu_label_value
    value = GPU_LABEL_VALUES.get(key, {}).get(gpu.type.name)
    if value is None:
        raise UserError(f"no {key} value known for --gpu {gpu.type.name}: set k8s: gpu_label_value in the profile "
                        f"(the value your nodes carry), or use gpu_label_key {GFD_LABEL}")
    return key, value


def active_deadline_seconds(plan: Plan) -> int:
    """The cluster's own limit, at the dead-man switch's time: after the agent's stop and last push."""
    job = plan.job
    return int(job.max_runtime + job.grace_period + job.push_timeout + DEADMAN_MARGIN_S)


def labels(plan: Plan) -> dict:
    return {JOB_LABEL: plan.job_id, "app.kubernetes.io/managed-by": "launcher"}


def owned_metadata(plan: Plan, name: str) -> dict:
    """What the Job owns: deleting the Job deletes it (its uid is known once the Job is created)."""
    return {"name": name, "namespace": namespace_of(plan), "labels": labels(plan),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": plan.job_id, "uid": slot("job_uid"),
                                 "controller": False, "blockOwnerDeletion": False}]}


def secret_slot(name: str) -> str:
    return f"secret_{name.lower()}"


def bootstrap_script(plan: Plan) -> str:
    # A pvc:// datapool has no store for the code: it is in the ConfigMap (binaryData), next to this script.
    tar = f"{CONFIG_DIR}/{SNAPSHOT_KEY}" if pvc_claim(plan) else ""
    return bootstrap.render(plan.spec, base=NODE_BASE, snapshot_sha=plan.snapshot.sha256, snapshot_tar=tar,
                            snapshot_url="" if tar else slot("snapshot_url"), python=options(plan).python,
                            teardown="none", result_url="" if tar else slot("result_url"))


# The container's command. The bootstrap keeps the agent's output in files on the node; a pod's log is its stdout,
# so that file is followed there. The container's first process passes SIGTERM (launch down, a node drain) to the
# agent, which stops the script with its grace period and pushes a last time.
RUN_SH = '''#!/usr/bin/env bash
STATE=@@BASE@@/jobs/@@JOB_ID@@
mkdir -p "$STATE" && touch "$STATE/agent.log"
bash @@CONFIG_DIR@@/bootstrap.sh &
BOOT=$!
trap 'read -r AGENT _ < "$STATE/agent.pid" 2>/dev/null && kill -TERM "$AGENT" 2>/dev/null' TERM INT
tail -n +1 -F --pid="$BOOT" "$STATE/agent.log" 2>/dev/null &
TAIL=$!
while kill -0 "$BOOT" 2>/dev/null; do wait "$BOOT"; RC=$?; done
wait "$TAIL"
if [ "${RC:-1}" != 0 ] && [ ! -s "$STATE/agent.log" ]; then cat "$STATE/setup.log" "$STATE/step.err" 2>/dev/null; fi
exit "${RC:-1}"
'''


def run_script(plan: Plan) -> str:
    return RUN_SH.replace("@@BASE@@", NODE_BASE).replace("@@JOB_ID@@", plan.job_id).replace("@@CONFIG_DIR@@",
                                                                                             CONFIG_DIR)


def config_map(plan: Plan) -> dict:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": owned_metadata(plan, f"{plan.job_id}-spec"),
           "data": {"run.sh": run_script(plan), "bootstrap.sh": bootstrap_script(plan),
                    "spec.json": plan.spec.to_json()}}
    if pvc_claim(plan):
        doc["binaryData"] = {SNAPSHOT_KEY: slot("snapshot_b64")}
    return doc


def secret(plan: Plan) -> dict | None:
    """The Secret made from your environment: a slot per value, filled only when it is sent."""
    if not plan.job.secrets or options(plan).secret_name:
        return None
    slots = {name: secret_slot(name) for name in plan.job.secrets}
    if len(set(slots.values())) < len(slots):
        raise UserError(f"--secret {', '.join(plan.job.secrets)}: two names differ only in case; rename one")
    return {"apiVersion": "v1", "kind": "Secret", "metadata": owned_metadata(plan, secret_name(plan)),
            "type": "Opaque", "stringData": {name: slot(s) for name, s in slots.items()}}


def secret_name(plan: Plan) -> str:
    return options(plan).secret_name or f"{plan.job_id}-secrets"


def service(plan: Plan) -> dict | None:
    if plan.job.num_nodes == 1:
        return None
    return {"apiVersion": "v1", "kind": "Service", "metadata": owned_metadata(plan, service_name(plan.job_id)),
            # Headless, and published before the pods are ready: pod 0 must resolve while the others wait for it.
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {JOB_LABEL: plan.job_id},
                     "ports": [{"name": "rendezvous", "port": options(plan).master_port}]}}


def nproc_per_node(plan: Plan) -> int:
    gpu = plan.job.gpu_request
    return gpu.count if gpu else 1


def container_env(plan: Plan) -> list[dict]:
    job, opts = plan.job, options(plan)
    env = []
    if job.num_nodes > 1 or job.torchrun:
        nproc = nproc_per_node(plan)
        # The agent (launcher/node/multinode.py) adds NODE_RANK from JOB_COMPLETION_INDEX and wraps the script in torchrun.
        env += [{"name": "LAUNCH_NUM_NODES", "value": str(job.num_nodes)},
                {"name": "LAUNCH_TORCHRUN", "value": "1"},
                {"name": "MASTER_ADDR", "value": master_addr(plan.job_id) if job.num_nodes > 1 else "127.0.0.1"},
                {"name": "MASTER_PORT", "value": str(opts.master_port)},
                {"name": "NPROC_PER_NODE", "value": str(nproc)},
                {"name": "WORLD_SIZE", "value": str(job.num_nodes * nproc)}]
    for name in job.secrets:
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name(plan), "key": name}}})
    return env


def resources(plan: Plan) -> dict:
    job = plan.job
    amounts = {}
    if job.cpus:
        amounts["cpu"] = f"{job.cpus:g}" if float(job.cpus).is_integer() else f"{int(job.cpus * 1000)}m"
    if job.memory:
        amounts["memory"] = str(job.memory_bytes)
    if job.disk:
        amounts["ephemeral-storage"] = str(job.disk_bytes)
    if job.gpu:
        amounts["nvidia.com/gpu"] = str(job.gpu_request.count)  # extended resources: requests must equal limits
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def pvc_claim(plan: Plan) -> tuple[str, str] | None:
    """(claim, path inside it) of a pvc:// datapool."""
    from urllib.parse import urlparse

    url = urlparse(plan.job.datapool or "")
    if url.scheme != "pvc":
        return None
    return url.netloc, url.path.strip("/")


def job_manifest(plan: Plan, image: str) -> dict:
    job, opts = plan.job, options(plan)
    volumes = [
        {"name": "launcher", "configMap": {"name": f"{plan.job_id}-spec", "defaultMode": 0o555}},
        {"name": "work", "emptyDir": {"sizeLimit": str(job.disk_bytes)} if job.disk else {}},
        # Dataloader workers and NCCL share tensors through /dev/shm; a container's default is 64 MB.
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]
    mounts = [{"name": "launcher", "mountPath": CONFIG_DIR, "readOnly": True},
              {"name": "work", "mountPath": NODE_BASE},
              {"name": "dshm", "mountPath": "/dev/shm"}]
    claim = pvc_claim(plan)
    if claim:
        volumes.append({"name": "datapool", "persistentVolumeClaim": {"claimName": claim[0]}})
        mount = {"name": "datapool", "mountPath": DATAPOOL_MOUNT}
        if claim[1]:
            mount["subPath"] = claim[1]
        mounts.append(mount)
    container = {"name": CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent",
                 "command": ["bash", f"{CONFIG_DIR}/run.sh"], "volumeMounts": mounts}
    env = container_env(plan)
    if env:
        container["env"] = env
    res = resources(plan)
    if res:
        container["resources"] = res
    if job.num_nodes > 1:
        container["ports"] = [{"name": "rendezvous", "containerPort": opts.master_port}]
    pod: dict = {"restartPolicy": "Never", "terminationGracePeriodSeconds": job.grace_period + 10,
                 "enableServiceLinks": False, "containers": [container], "volumes": volumes}
    label = gpu_label(plan.job)
    if label:
        pod["nodeSelector"] = {label[0]: label[1]}
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if opts.service_account:
        pod["serviceAccountName"] = opts.service_account
    if job.num_nodes > 1:
        pod["subdomain"] = service_name(plan.job_id)
    spec: dict = {
        "suspend": True,  # resumed once the ConfigMap and Secret exist (backend.start)
        "backoffLimit": 0,
        "activeDeadlineSeconds": active_deadline_seconds(plan),
        "ttlSecondsAfterFinished": opts.ttl_after_finished,
        "podFailurePolicy": {"rules": [
            # A node taken away (preemption, drain, eviction): the job ends and says so ("preempted").
            {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            # The script's own exit code is final: no retry of a run that failed on its own.
            {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "NotIn", "values": [0]}},
        ]},
        "template": {"metadata": {"labels": labels(plan)}, "spec": pod},
    }
    if job.num_nodes > 1:
        spec.update({"completionMode": "Indexed", "completions": job.num_nodes, "parallelism": job.num_nodes})
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": plan.job_id, "namespace": namespace_of(plan), "labels": labels(plan),
                         "annotations": {DEADLINE_ANNOTATION: str(int(plan.deadline_at))}},
            "spec": spec}


def manifests(plan: Plan, image: str) -> list[dict]:
    """In creation order: the Job (suspended) first, then what it owns; with their slots."""
    docs = [job_manifest(plan, image), config_map(plan), secret(plan), service(plan)]
    return [d for d in docs if d is not None]


def documents(request: dict) -> list[dict]:
    """The manifests of a rendered request (`plan.request`), as the objects to create: slots and all."""
    return list(yaml.safe_load_all(request["manifests"]))


def to_yaml(docs: list[dict]) -> str:
    class _Dumper(yaml.SafeDumper):
        pass

    _Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                                 style="|" if "\n" in s else None))
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def check_names(job_id: str) -> None:
    # The job id is already a DNS-1123 label; the longest derived name must stay one too (pods add -<index>-xxxxx).
    if len(f"{job_id}-secrets") > 63 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", job_id):
        raise UserError(f"job id {job_id!r} is not usable as a Kubernetes name: use a shorter --name")
