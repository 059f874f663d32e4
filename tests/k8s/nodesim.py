"""The node simulator: plays what kmock does not run (the Job controller, the scheduler, the kubelets, the TTL and
garbage collectors), through the same API the launcher uses, so a rendered Job is proven to run the job.

* Job controller: a resumed Job gets its pods (one per completion index for an Indexed Job, with the hostname,
  subdomain, labels, annotation and `JOB_COMPLETION_INDEX` the real controller sets); the Job's conditions follow
  its pods (Complete; Failed by DeadlineExceeded after activeDeadlineSeconds; a failed pod goes through the Job's
  podFailurePolicy rules in order, onExitCodes and onPodConditions, as the controller does: FailJob fails the Job
  with the controller's reason and message, Ignore replaces the pod, Count or no match counts to backoffLimit).
* Disruption (`preempt`): what a cluster does when a node is taken away: the pod gets a DisruptionTarget condition
  and is deleted, so the kubelet SIGTERMs it (or nothing does: the node is gone); it ends Failed, and its object goes
  once the Job controller has counted it (the job-tracking finalizer).
* Scheduler: a pod lands on a simulated node whose labels match its nodeSelector and which has the nvidia.com/gpu
  it requests; else PodScheduled=False/Unschedulable and a FailedScheduling event, with the scheduler's wording.
* Kubelet: the image must be one the nodes have (else ErrImagePull, then ImagePullBackOff); env, ConfigMap and
  Secret are materialised as the manifest says (a missing Secret or key: CreateContainerConfigError); the
  container's command runs here, as root, in its own mount and UTS namespaces: its hostname is the pod's, and its
  /etc/hosts holds the job's pods by their DNS names (cluster DNS, played by the kubelet's hosts file), so pod 0's
  name resolves for torchrun. Volume mount paths are mapped to folders of the pod (the command and the ConfigMap's
  files are rewritten accordingly). The container's output goes to the pod's log, which kmockserver serves.
  Termination is SIGTERM to the container's first process, SIGKILL after terminationGracePeriodSeconds.
* TTL and garbage collectors: a finished Job goes after ttlSecondsAfterFinished; a deleted Job's pods are
  terminated and deleted, and every object with an ownerReference to it is deleted.
"""
from __future__ import annotations

import base64
import datetime
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from launcher.proc import ProcRef

from .cluster import IMAGE

PYTHON_SHIM = f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Node:
    name: str
    labels: dict = field(default_factory=dict)
    gpus: int = 0


@dataclass
class PodRun:
    namespace: str
    name: str
    job_uid: str
    index: int
    dir: Path
    proc: subprocess.Popen | None = None
    stage: str = "new"  # new -> scheduled -> running -> done | stuck
    grace: int = 30
    terminating: bool = False
    waiting: str = ""
    disrupted: bool = False  # deleted by the cluster: the object goes once the Job controller has seen it fail
    replaced: bool = False  # a podFailurePolicy Ignore (or a retry): a new pod took its index


class NodeSimulator:
    def __init__(self, cluster, workdir: Path, *, nodes: list[Node] | None = None, images: set[str] | None = None,
                 claims: dict[str, Path] | None = None):
        self.cluster = cluster
        self.api = cluster.client()
        from kubernetes import client

        self.core, self.batch = client.CoreV1Api(self.api), client.BatchV1Api(self.api)
        self.workdir = Path(workdir)
        self.nodes = nodes if nodes is not None else [Node("node-1", {"nvidia.com/gpu.product": "NVIDIA-A10G"}, 1)]
        self.images = images if images is not None else {IMAGE}
        self.claims = claims if claims is not None else {}  # claim name -> folder standing for its volume
        self.pods: dict[tuple[str, str], PodRun] = {}
        self.jobs: dict[str, dict] = {}  # uid -> the Job as last seen
        self.started: dict[str, float] = {}  # uid -> when it was resumed
        self.bin = self.workdir / "image-bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        (self.bin / "python3").write_text(PYTHON_SHIM)
        (self.bin / "python3").chmod(0o755)
        self.errors: list[str] = []
        self.failures: dict[str, int] = {}  # Job uid -> pods failed that count to its backoffLimit
        self.hold: set[str] = set()  # pod name prefixes left Pending until removed from here
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="k8s-node-simulator", daemon=True)

    def __enter__(self) -> "NodeSimulator":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)
        for run in list(self.pods.values()):
            self._kill(run)

    # -- the loop ------------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self._round()
            except Exception as exc:  # noqa: BLE001 - the API server goes away at the end of the module
                self.errors.append(repr(exc))

    def _round(self) -> None:
        jobs = {j["metadata"]["uid"]: j for j in map(self.plain, self.batch.list_job_for_all_namespaces().items)}
        for uid in [u for u in self.jobs if u not in jobs]:
            self._collect(uid, self.jobs.pop(uid))
        for uid, job in jobs.items():
            self.jobs[uid] = job
            self._control(job)

    def plain(self, obj) -> dict:
        return self.api.sanitize_for_serialization(obj)

    # -- Job controller ------------------------------------------------------------------------------------------

    def _control(self, job: dict) -> None:
        meta, spec, status = job["metadata"], job["spec"], job.get("status") or {}
        uid, ns, name = meta["uid"], meta["namespace"], meta["name"]
        if spec.get("suspend"):
            return
        finished = {c["type"] for c in status.get("conditions") or [] if c.get("status") == "True"} & {
            "Complete", "Failed"}
        if finished:
            ttl = spec.get("ttlSecondsAfterFinished")
            done_at = status.get("completionTime") or next(
                (c.get("lastTransitionTime") for c in status["conditions"] if c["type"] in finished), None)
            if ttl is not None and done_at and time.time() - _ts(done_at) >= ttl:
                self.batch.delete_namespaced_job(name, ns, propagation_policy="Background")
            return
        if uid not in self.started:
            self.started[uid] = time.time()
            self.batch.patch_namespaced_job_status(name, ns, {"status": {"startTime": now_iso()}})
            count = spec.get("completions") or 1
            for index in range(count):
                self._make_pod(job, index)
        runs = [r for r in list(self.pods.values()) if r.job_uid == uid and not r.replaced]
        for run in runs:
            self._kubelet(job, run)
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and time.time() - self.started[uid] > deadline:
            self._fail(job, runs, "DeadlineExceeded", "Job was active longer than specified deadline")
            return
        run = next((r for r in runs if r.stage == "done" and r.proc.returncode != 0), None)
        if run is not None:  # one failed pod per round, as the controller syncs
            pod = self.plain(self.core.read_namespaced_pod(run.name, ns))
            code = run.proc.returncode if run.proc.returncode >= 0 else 128 - run.proc.returncode
            action, message = _pod_failure_policy(spec, pod, code)
            if action == "FailJob":
                self._fail(job, runs, "PodFailurePolicy", message)
                return
            if action != "Ignore":
                self.failures[uid] = self.failures.get(uid, 0) + 1
                if self.failures[uid] > spec.get("backoffLimit", 6):
                    self._fail(job, runs, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
                    return
            run.replaced = True
            self._gone(run)
            self._make_pod(job, run.index)
            return
        if runs and all(r.stage == "done" for r in runs):
            self.batch.patch_namespaced_job_status(name, ns, {"status": {
                "succeeded": len(runs), "active": 0, "completionTime": now_iso(),
                "conditions": [_cond("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of "
                                     "succeeded pods"),
                               _cond("Complete", "CompletionsReached", "Reached expected number of succeeded pods")]}})

    def _fail(self, job: dict, runs: list[PodRun], reason: str, message: str) -> None:
        meta = job["metadata"]
        for run in runs:
            if run.stage != "done":
                self._terminate(run, delete=False)
        self.batch.patch_namespaced_job_status(meta["name"], meta["namespace"], {"status": {
            "active": 0, "failed": 1, "conditions": [_cond("FailureTarget", reason, message),
                                                     _cond("Failed", reason, message)]}})
        for run in runs:
            if run.disrupted and run.stage == "done":
                self._gone(run)  # counted: the finalizer is lifted and the deleted pod's object goes

    def _gone(self, run: PodRun) -> None:
        if run.disrupted or run.replaced:
            try:
                self.core.delete_namespaced_pod(run.name, run.namespace)
            except Exception:  # noqa: BLE001 - already gone
                pass
            self.pods.pop((run.namespace, run.name), None)

    def _make_pod(self, job: dict, index: int) -> None:
        meta, spec = job["metadata"], job["spec"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        template = spec["template"]
        indexed = spec.get("completionMode") == "Indexed"
        pod_name = f"{name}-{index}-{secrets.token_hex(3)[:5]}" if indexed else f"{name}-{secrets.token_hex(3)[:5]}"
        pod_spec = dict(template["spec"])
        labels = {**(template.get("metadata") or {}).get("labels", {}), "batch.kubernetes.io/job-name": name,
                  "job-name": name, "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid}
        annotations = {}
        if indexed:
            labels["batch.kubernetes.io/job-completion-index"] = str(index)
            annotations["batch.kubernetes.io/job-completion-index"] = str(index)
            pod_spec["hostname"] = f"{name}-{index}"
            pod_spec["containers"] = [{**c, "env": [*(c.get("env") or []), {
                "name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]}
                for c in pod_spec["containers"]]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": pod_name, "namespace": ns, "labels": labels, "annotations": annotations,
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                                 "controller": True, "blockOwnerDeletion": True}]},
               "spec": pod_spec, "status": {"phase": "Pending"}}
        self.core.create_namespaced_pod(ns, pod)
        pod_dir = self.workdir / "pods" / pod_name
        pod_dir.mkdir(parents=True, exist_ok=True)
        self.pods[(ns, pod_name)] = PodRun(ns, pod_name, uid, index, pod_dir,
                                           grace=int(pod_spec.get("terminationGracePeriodSeconds", 30)))

    # -- scheduler and kubelet -----------------------------------------------------------------------------------

    def _kubelet(self, job: dict, run: PodRun) -> None:
        if run.stage in ("done", "stuck-final") or run.terminating:
            return
        if any(run.name.startswith(prefix) for prefix in self.hold):
            return  # no node comes for it (yet): Pending, with no reason given
        pod = self.plain(self.core.read_namespaced_pod(run.name, run.namespace))
        container = pod["spec"]["containers"][0]
        if run.stage == "new":
            unfit = self._unschedulable(pod)
            if unfit:
                self._status(run, {"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unfit,
                     "lastTransitionTime": now_iso()}]})
                self._event(run, "Warning", "FailedScheduling", unfit, source="default-scheduler")
                run.stage = "stuck-final"
                return
            run.stage = "scheduled"
            self._event(run, "Normal", "Scheduled", f"Successfully assigned {run.namespace}/{run.name} to node-1",
                        source="default-scheduler")
        if run.stage == "scheduled":
            image = container["image"]
            if image not in self.images:
                msg = (f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull and unpack '
                       f'image "{image}": not found')
                self._status(run, {"phase": "Pending", "conditions": [_pod_cond("PodScheduled")],
                                   "containerStatuses": [_waiting(container, "ErrImagePull", msg)]})
                self._event(run, "Warning", "Failed", msg)
                time.sleep(0.2)
                self._status(run, {"containerStatuses": [_waiting(container, "ImagePullBackOff",
                                                                  f'Back-off pulling image "{image}"')]})
                run.stage = "stuck-final"
                return
            try:
                env = self._env(pod, container)
            except LookupError as exc:
                if run.waiting != str(exc):
                    run.waiting = str(exc)
                    self._status(run, {"phase": "Pending", "conditions": [_pod_cond("PodScheduled")],
                                       "containerStatuses": [_waiting(container, "CreateContainerConfigError",
                                                                      str(exc))]})
                    self._event(run, "Warning", "Failed", f"Error: {exc}")
                return  # the kubelet retries: a Secret created later lets the pod start
            self._start(pod, container, run, env)

    def _unschedulable(self, pod: dict) -> str | None:
        want = int(((pod["spec"]["containers"][0].get("resources") or {}).get("requests") or {}).get(
            "nvidia.com/gpu", 0))
        selector = pod["spec"].get("nodeSelector") or {}
        mismatch = [n for n in self.nodes if any(n.labels.get(k) != v for k, v in selector.items())]
        short = [n for n in self.nodes if n not in mismatch and n.gpus < want]
        if len(mismatch) + len(short) < len(self.nodes):
            return None
        parts = []
        if short:
            parts.append(f"{len(short)} Insufficient nvidia.com/gpu")
        if mismatch:
            parts.append(f"{len(mismatch)} node(s) didn't match Pod's node affinity/selector")
        return (f"0/{len(self.nodes)} nodes are available: {', '.join(parts)}. preemption: 0/{len(self.nodes)} nodes "
                "are available: " + f"{len(self.nodes)} Preemption is not helpful for scheduling.")

    def _env(self, pod: dict, container: dict) -> dict[str, str]:
        env = {}
        annotations = pod["metadata"].get("annotations") or {}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            source = item.get("valueFrom") or {}
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                from kubernetes.client.exceptions import ApiException

                try:
                    secret = self.plain(self.core.read_namespaced_secret(ref["name"], pod["metadata"]["namespace"]))
                except ApiException:
                    raise LookupError(f'secret "{ref["name"]}" not found') from None
                if ref["key"] in (secret.get("data") or {}):
                    env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
                elif ref["key"] in (secret.get("stringData") or {}):
                    env[item["name"]] = secret["stringData"][ref["key"]]
                else:
                    raise LookupError(f"couldn't find key {ref['key']} in Secret {pod['metadata']['namespace']}/"
                                      f"{ref['name']}")
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                m = re.fullmatch(r"metadata\.annotations\['(.+)'\]", path)
                env[item["name"]] = annotations.get(m[1], "") if m else ""
        return env

    def _volumes(self, pod: dict, container: dict, run: PodRun) -> dict[str, Path]:
        """mountPath -> the folder standing for it; ConfigMap files are written there."""
        ns = pod["metadata"]["namespace"]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts: dict[str, Path] = {}
        for m in container.get("volumeMounts") or []:
            vol = volumes[m["name"]]
            if m["mountPath"] == "/dev/shm":
                continue  # the host's own
            path = run.dir / "volumes" / m["name"]
            if "configMap" in vol:
                cm = self.plain(self.core.read_namespaced_config_map(vol["configMap"]["name"], ns))
                path.mkdir(parents=True, exist_ok=True)
                for key, text in (cm.get("data") or {}).items():
                    (path / key).write_text(text)
                for key, b64 in (cm.get("binaryData") or {}).items():
                    (path / key).write_bytes(base64.b64decode(b64))
            elif "persistentVolumeClaim" in vol:
                path = self.claims[vol["persistentVolumeClaim"]["claimName"]] / m.get("subPath", "")
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.mkdir(parents=True, exist_ok=True)
            mounts[m["mountPath"]] = path
        for m in container.get("volumeMounts") or []:
            vol = volumes[m["name"]]
            if "configMap" in vol:
                folder = mounts[m["mountPath"]]
                for f in folder.iterdir():
                    try:
                        f.write_text(self._rewrite(f.read_text(), mounts))
                    except UnicodeDecodeError:
                        pass
        return mounts

    @staticmethod
    def _rewrite(text: str, mounts: dict[str, Path]) -> str:
        for mount in sorted(mounts, key=len, reverse=True):
            text = re.sub(r"(?<![\w/.-])" + re.escape(mount) + r"(?=[/\"'\s]|$)", str(mounts[mount]), text)
        return text

    def _hosts(self, pod: dict, run: PodRun) -> Path:
        """The pod's /etc/hosts: its own names, and the job's pods by their DNS names (played cluster DNS)."""
        lines = [open("/etc/hosts").read().rstrip("\n")]
        ns = pod["metadata"]["namespace"]
        for other in list(self.pods.values()):
            if other.job_uid != run.job_uid:
                continue
            o = self.plain(self.core.read_namespaced_pod(other.name, other.namespace))
            host, sub = o["spec"].get("hostname") or o["metadata"]["name"], o["spec"].get("subdomain")
            names = [host] + ([f"{host}.{sub}", f"{host}.{sub}.{ns}", f"{host}.{sub}.{ns}.svc",
                               f"{host}.{sub}.{ns}.svc.cluster.local"] if sub else [])
            lines.append("127.0.0.1 " + " ".join(names))
        path = run.dir / "hosts"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _start(self, pod: dict, container: dict, run: PodRun, env: dict[str, str]) -> None:
        mounts = self._volumes(pod, container, run)
        hostname = pod["spec"].get("hostname") or run.name
        home = run.dir / "home"
        home.mkdir(exist_ok=True)
        base_env = {"PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "HOSTNAME": hostname,
                    "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
        full_env = {**base_env, **env}
        command = [self._rewrite(a, mounts) for a in (container.get("command") or []) + (container.get("args") or [])]
        hosts = self._hosts(pod, run)
        inner = (f"mount --bind {shlex.quote(str(hosts))} /etc/hosts && hostname {shlex.quote(hostname)} && exec "
                 + " ".join(shlex.quote(a) for a in command))
        log_dir = self.cluster.logs / run.namespace
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{run.name}.log", "wb") as log:
            run.proc = subprocess.Popen(["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", inner],
                                        env=full_env, cwd=run.dir, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        run.stage = "running"
        self._event(run, "Normal", "Started", "Started container agent")
        self._status(run, {"phase": "Running", "startTime": now_iso(), "conditions": [
            _pod_cond("PodScheduled"), _pod_cond("Ready")], "containerStatuses": [{
                "name": container["name"], "image": container["image"], "imageID": "", "ready": True,
                "restartCount": 0, "state": {"running": {"startedAt": now_iso()}}}]})
        threading.Thread(target=self._reap, args=(run, container), daemon=True).start()

    def _reap(self, run: PodRun, container: dict) -> None:
        code = run.proc.wait()
        code = code if code >= 0 else 128 - code
        self._kill_leftovers(run)
        (self.cluster.logs / run.namespace / f"{run.name}.done").write_text(str(code))
        run.stage = "done"
        try:
            self._status(run, {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [{
                "name": container["name"], "image": container["image"], "imageID": "", "ready": False,
                "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0
                                                            else "Error", "finishedAt": now_iso()}}}]})
        except Exception:  # noqa: BLE001 - the pod was deleted meanwhile (garbage collection)
            pass

    # -- node disruption -----------------------------------------------------------------------------------------

    def preempt(self, job_id: str, reason: str = "PreemptionByScheduler", message: str | None = None, *,
                node_lost: bool = False) -> list[str]:
        """The node under the job's running pods is taken away. Each gets the DisruptionTarget condition the
        cluster sets (reason PreemptionByScheduler, DeletionByTaintManager, EvictionByEvictionAPI or DeletionByPodGC,
        with that component's message unless one is given) and is deleted: the kubelet SIGTERMs the container and
        SIGKILLs it after terminationGracePeriodSeconds; with node_lost there is no kubelet, so everything in it
        dies at once (no SIGTERM handler runs, nothing is pushed). The pod ends Failed; the Job controller applies
        the Job's podFailurePolicy to it. Returns the pods' names."""
        message = message or DISRUPTION_MESSAGES[reason]
        uids = {u for u, j in self.jobs.items() if (j["metadata"].get("labels") or {}).get("launcher/job") == job_id}
        hit = []
        for run in [r for r in list(self.pods.values()) if r.job_uid in uids and r.stage == "running"]:
            pod = self.plain(self.core.read_namespaced_pod(run.name, run.namespace))
            conditions = [c for c in (pod.get("status") or {}).get("conditions") or []
                          if c.get("type") != "DisruptionTarget"]
            self._status(run, {"conditions": [*conditions, {"type": "DisruptionTarget", "status": "True",
                                                            "reason": reason, "message": message,
                                                            "lastTransitionTime": now_iso()}]})
            if reason in DISRUPTION_EVENTS:
                event, text, source = DISRUPTION_EVENTS[reason]
                self._event(run, "Normal", event, text.format(pod=f"{run.namespace}/{run.name}",
                                                              uid=secrets.token_hex(8)), source=source)
            run.disrupted = True
            if node_lost:
                run.terminating = True
                self._kill(run)
            else:
                self._terminate(run, delete=False)
            hit.append(run.name)
        return hit

    # -- termination and garbage collection ----------------------------------------------------------------------

    def _terminate(self, run: PodRun, delete: bool) -> None:
        """SIGTERM to the container's first process, SIGKILL after its grace; then (GC) the pod object goes."""
        if run.terminating:
            return
        run.terminating = True

        def go():
            if run.proc is not None and run.proc.poll() is None:
                try:
                    os.kill(run.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    run.proc.wait(run.grace)
                except subprocess.TimeoutExpired:
                    self._kill(run)
            if delete:
                try:
                    self.core.delete_namespaced_pod(run.name, run.namespace)
                except Exception:  # noqa: BLE001 - already gone
                    pass
                self.pods.pop((run.namespace, run.name), None)

        threading.Thread(target=go, daemon=True).start()

    def _kill(self, run: PodRun) -> None:
        if run.proc is not None and run.proc.poll() is None:
            try:
                os.killpg(run.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._kill_leftovers(run)

    def _kill_leftovers(self, run: PodRun) -> None:
        """A container's processes all end with it: the agent, the script's session, the dead-man switch."""
        for pidfile in run.dir.glob("volumes/*/jobs/*/*.pid"):
            ref = ProcRef.load(pidfile)
            if ref is not None:
                ref.signal_group(signal.SIGKILL)

    def _collect(self, uid: str, job: dict) -> None:
        ns = job["metadata"]["namespace"]
        for run in [r for r in list(self.pods.values()) if r.job_uid == uid]:
            self._terminate(run, delete=True)
        listers = {"ConfigMap": (self.core.list_namespaced_config_map, self.core.delete_namespaced_config_map),
                   "Secret": (self.core.list_namespaced_secret, self.core.delete_namespaced_secret),
                   "Service": (self.core.list_namespaced_service, self.core.delete_namespaced_service),
                   "Pod": (self.core.list_namespaced_pod, self.core.delete_namespaced_pod)}
        for lister, deleter in listers.values():
            for obj in map(self.plain, lister(ns).items):
                if any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or []):
                    try:
                        deleter(obj["metadata"]["name"], ns)
                    except Exception:  # noqa: BLE001 - deleted meanwhile
                        pass

    # -- helpers -------------------------------------------------------------------------------------------------

    def _status(self, run: PodRun, status: dict) -> None:
        self.core.patch_namespaced_pod_status(run.name, run.namespace, {"status": status})

    def _event(self, run: PodRun, type_: str, reason: str, message: str, source: str = "kubelet") -> None:
        self.core.create_namespaced_event(run.namespace, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{run.name}.{secrets.token_hex(6)}", "namespace": run.namespace},
            "involvedObject": {"kind": "Pod", "name": run.name, "namespace": run.namespace},
            "reason": reason, "message": message, "type": type_, "source": {"component": source},
            "firstTimestamp": now_iso(), "lastTimestamp": now_iso(), "count": 1})

    def pod_dirs(self, job_id: str) -> list[Path]:
        return sorted((self.workdir / "pods").glob(f"{job_id}-*"))


# What each component writes on the pod it takes away (k8s.io/kubernetes: scheduler preemption, taint eviction
# controller, eviction API, pod GC).
DISRUPTION_MESSAGES = {
    "PreemptionByScheduler": "default-scheduler: preempting to accommodate a higher priority pod",
    "DeletionByTaintManager": "Taint manager: deleting due to NoExecute taint",
    "EvictionByEvictionAPI": "Eviction API: evicting",
    "DeletionByPodGC": "PodGC: node no longer exists",
}

# The event the component leaves on the pod (it outlives the pod object): (reason, message, source).
DISRUPTION_EVENTS = {
    "PreemptionByScheduler": ("Preempted", "Preempted by pod {uid} on node node-1", "default-scheduler"),
    "DeletionByTaintManager": ("TaintManagerEviction", "Marking for deletion Pod {pod}", "taint-eviction-controller"),
}


def _pod_failure_policy(spec: dict, pod: dict, code: int) -> tuple[str, str]:
    """The first podFailurePolicy rule the failed pod matches, as the Job controller reads them: (action, the
    controller's message); ("Count", "") when none matches."""
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    container = pod["spec"]["containers"][0]["name"]
    conditions = (pod.get("status") or {}).get("conditions") or []
    for index, rule in enumerate((spec.get("podFailurePolicy") or {}).get("rules") or []):
        on_codes = rule.get("onExitCodes")
        if on_codes and on_codes.get("containerName") in (None, container) and code != 0:
            inside = code in on_codes["values"]
            if inside == (on_codes["operator"] == "In"):
                return rule["action"], (f"Container {container} for pod {ns}/{name} failed with exit code {code} "
                                        f"matching {rule['action']} rule at index {index}")
        for want in rule.get("onPodConditions") or []:
            for cond in conditions:
                if cond.get("type") == want["type"] and cond.get("status") == want.get("status", "True"):
                    return rule["action"], (f"Pod {ns}/{name} has condition {want['type']} matching "
                                            f"{rule['action']} rule at index {index}")
    return "Count", ""


def _cond(type_: str, reason: str, message: str) -> dict:
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now_iso(), "lastTransitionTime": now_iso()}


def _pod_cond(type_: str) -> dict:
    return {"type": type_, "status": "True", "lastTransitionTime": now_iso()}


def _waiting(container: dict, reason: str, message: str) -> dict:
    return {"name": container["name"], "image": container["image"], "imageID": "", "ready": False,
            "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}}


def _ts(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

