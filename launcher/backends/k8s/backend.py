"""The k8s backend: the launch path's verbs over one batch/v1 Job. Results, logs and cancel meet the pods in the
store (s3://) as on every remote backend; the Job's conditions and the pods' states say the rest: why a pod is
stuck, a deadline hit, a node taken away."""
from __future__ import annotations

import base64
import os
import time
from typing import Iterator

from ...errors import UserError
from ...job import Job
from ...plan import Plan
from ...spec import PUSH_FAILED_EXIT
from ..base import ACTIVE, Backend, Capabilities, Handle, HandleData, JobState, NodePaths, Observation, relaunch_due
from ..slots import fill, slot, slots_in
from . import request, stuck
from .options import MAX_NODES, K8sOptions

# A pvc:// datapool has no store the client reaches: the code snapshot travels in the ConfigMap (1 MiB in all).
CONFIGMAP_SNAPSHOT_LIMIT = 700 * 1024
DEFAULT_PENDING_TIMEOUT = 600  # a pod still Pending after this long is reported and deleted
LOST_SETTLE_S = 10.0  # how long a Job must stay gone before a follower believes it (a relaunch replaces it)


def _opts(job: Job) -> K8sOptions:
    return job.k8s or K8sOptions()


def image_of(job: Job) -> str:
    if _opts(job).image:
        return _opts(job).image
    from ... import images

    try:
        return images.default_image()
    except FileNotFoundError:
        raise UserError("no default image: images/requirements.lock is missing; pass --image REPO:TAG (an image with "
                        "python3 and launcher's dependencies)") from None


def _recorded(job_id: str) -> str:
    from ...registry import Registry

    return Registry().get(job_id).state


def _finished(job: dict) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def _asked(status):
    """`status` as an Observation, and `unreachable` (with the reason) when the API server could not be asked: a
    refused, hanging or failing server says nothing about the job, which goes on, and neither do credentials that
    stopped working mid-job (a UserError: its line is the reason). Only a real answer that the Job is gone makes it
    lost."""
    import functools

    @functools.wraps(status)
    def look(self, handle: Handle) -> Observation:
        from .kube import Unreachable

        try:
            state, code, why = status(self, handle)
        except (Unreachable, UserError) as exc:
            return Observation(JobState.UNREACHABLE, None, str(exc))
        return Observation(JobState(state), code, why)

    return look


def _skip(stream: Iterator[bytes], offset: int) -> Iterator[bytes]:
    """`stream` less its first `offset` bytes: a follower that reconnects after a drop asks for the same stream again
    (the pod's log from its start) and gets only what it has not printed yet."""
    for chunk in stream:
        if offset >= len(chunk):
            offset -= len(chunk)
            continue
        yield chunk[offset:] if offset else chunk
        offset = 0


def _pod_phases(name: str, pods: list[dict]) -> str:
    """What the Job's pods are at, for the launch's progress: `pod NAME Pending (ContainerCreating)`."""
    if not pods:
        return f"Job {name} created, no pod yet"
    said = []
    for pod in pods:
        st = pod.get("status") or {}
        waiting = [w["reason"] for cs in st.get("containerStatuses") or []
                   if (w := (cs.get("state") or {}).get("waiting")) and w.get("reason")]
        said.append(f"pod {pod['metadata']['name']} {st.get('phase', 'Pending')}"
                    + (f" ({', '.join(waiting)})" if waiting else ""))
    return "; ".join(said)


def _job_uid(pod: dict) -> str | None:
    """The Job a pod belongs to, by uid: a relaunch's Job has the same name."""
    return next((o.get("uid") for o in pod["metadata"].get("ownerReferences") or [] if o.get("kind") == "Job"), None)


class K8sHandle(HandleData):
    """Where the job's Job is (`start`'s return): the cluster by context, the namespace, the Job's name."""

    context: str | None = None  # the kubeconfig context; None: the current one
    namespace: str | None = None
    job: str | None = None  # the Job's name (the job id); None: the handle's job_id
    num_nodes: int = 1
    pending_timeout: float = DEFAULT_PENDING_TIMEOUT  # a pod Pending longer than this is reported and deleted
    keep_on_failure: bool = False
    created: float | None = None  # when start created the Job (epoch seconds)


class K8sBackend(Backend):
    name = "k8s"
    handle_type = K8sHandle
    where_fields = ("context", "namespace")
    capabilities = Capabilities(remote=True, gpus=request.gpus_offered(), spot=True, max_nodes=MAX_NODES,
                                datapool_schemes=("s3", "pvc"), resources_enforced=True, preempts_on_demand=True)

    # -- plan (pure) ---------------------------------------------------------------------------------------------

    def check(self, job: Job) -> list[str]:
        notes = []
        image_of(job)
        if job.gpu:
            request.gpu_label(job)  # a GPU with no known label value is refused here
        if job.spot:
            notes.append("--spot on k8s: launcher adds no spot node selector (schedule onto spot nodes with your "
                         "cluster's own labels or taints); a pod whose node is taken away ends as preempted")
        if job.keep_on_failure:
            notes.append("--keep-on-failure: a stuck or failed Job and its pods stay for `kubectl describe` / "
                         "`kubectl logs` until its TTL (k8s: ttl_after_finished) or `launch down JOB`")
        if (job.datapool or "").startswith("pvc://"):
            notes.append("pvc:// datapool: the claim is mounted at /datapool and nothing is synced; logs come from "
                         "the pod and the result from the Job's state")
        return notes

    def node_paths(self, job: Job, job_id: str, snapshot_sha: str | None) -> NodePaths:
        pvc = (job.datapool or "").startswith("pvc://")
        return NodePaths(workdir=f"code/{snapshot_sha}", datapool_root=request.DATAPOOL_MOUNT if pvc else "datapool",
                         state_dir=f"jobs/{job_id}")

    def render(self, plan: Plan) -> dict:
        request.check_names(plan.job_id)
        if request.pvc_claim(plan) and plan.snapshot.size > CONFIGMAP_SNAPSHOT_LIMIT:
            raise UserError(f"the code snapshot is {plan.snapshot.size // 1024} KB; with a pvc:// datapool it "
                            f"travels in a ConfigMap (at most {CONFIGMAP_SNAPSHOT_LIMIT // 1024} KB): trim it with "
                            ".launchignore, or use an s3:// datapool")
        opts = _opts(plan.job)
        docs = request.manifests(plan, image_of(plan.job))
        return {"context": opts.context or slot("context"), "namespace": request.namespace_of(plan),
                "manifests": request.to_yaml(docs)}

    def access_checks(self, options=None) -> list:
        from .access import checks

        return checks(options)

    def gpu_offers(self, options=None) -> list:
        from .access import gpu_offers

        return gpu_offers(options)

    def where(self, plan: Plan, *, online: bool = False) -> list[tuple[str, str]]:
        from ..base import CHECKED_AT_LAUNCH

        job, opts = plan.job, _opts(plan.job)
        context = opts.context or f"the current one ({CHECKED_AT_LAUNCH})"
        machine = [f"{job.num_nodes} pod(s)"] + [f"{job.gpu}" if job.gpu else "no GPU"]
        machine += [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in (("cpus", job.cpus), ("memory", job.memory), ("disk", job.disk)) if v]
        facts = [("cluster", f"context {context}; namespace {opts.namespace or 'the context' + chr(39) + 's'}"),
                 ("machine", ", ".join(machine)), ("image", image_of(job))]
        if online and plan.snapshot is not None and not request.pvc_claim(plan):  # pvc: it rides in the ConfigMap
            from ...snapshot import in_store_fact

            facts.append(in_store_fact(plan))
        return facts

    # -- submit --------------------------------------------------------------------------------------------------

    def _where(self, job: Job, context: str | None = None):
        from .kube import Kube

        opts = _opts(job)
        context = context or opts.context or Kube.current_context()
        kube = Kube(context)
        return kube, context, opts.namespace or Kube.namespace_of_context(context)

    def secrets_elsewhere(self, job: Job) -> bool:
        """With k8s: secret_name the values are in the cluster already (preflight checks the keys), not here."""
        return bool(_opts(job).secret_name)

    def preflight(self, plan: Plan) -> None:
        job, opts = plan.job, _opts(plan.job)
        kube, context, ns = self._where(job)
        kube.check_access(ns)
        if job.secrets and opts.secret_name:
            keys = kube.secret_keys(ns, opts.secret_name)
            if keys is None:
                raise UserError(f"Secret {opts.secret_name} does not exist in namespace {ns}: create it (kubectl -n "
                                f"{ns} create secret generic {opts.secret_name} --from-literal={job.secrets[0]}=...) "
                                "or drop k8s: secret_name to make one from your environment")
            missing = [s for s in job.secrets if s not in keys]
            if missing:
                raise UserError(f"Secret {opts.secret_name} in namespace {ns} has no key {missing[0]}: add it, or "
                                f"drop --secret {missing[0]}")
        claim = request.pvc_claim(plan)
        if claim:
            found = kube.claim(ns, claim[0])
            if found is None:
                raise UserError(f"unknown PersistentVolumeClaim {claim[0]} in namespace {ns} (context {context}): "
                                f"create it, or fix --datapool pvc://CLAIM/path (`kubectl -n {ns} get pvc` lists them)")
            modes = (found.get("spec") or {}).get("accessModes") or []
            if job.num_nodes > 1 and "ReadWriteMany" not in modes:
                raise UserError(f"PersistentVolumeClaim {claim[0]} is {', '.join(modes) or 'not ReadWriteMany'}: "
                                f"{job.num_nodes} pods on different nodes need a ReadWriteMany claim")

    def start(self, plan: Plan, *, detach: bool, context: str | None = None) -> dict:
        """Fills the slots of `plan.request` (request.py lists them) and creates its manifests as they are: the Job
        (suspended) first, its uid into what it owns, then those, then the Job resumed."""
        job, opts = plan.job, _opts(plan.job)
        kube, context, ns = self._where(job, context)
        values = self._code(plan)
        if not opts.context:
            values["context"] = context
        if not opts.namespace:
            values["namespace"] = ns
        if job.secrets and not opts.secret_name:
            values.update({request.secret_slot(n): os.environ[n] for n in job.secrets})  # api checked they are set
        # The request render made, its manifests parsed (so a value is filled in as it is, never YAML-quoted).
        rendered = {**plan.request, "manifests": request.documents(plan.request)}
        first = rendered["manifests"][0]
        created = kube.create(ns, fill(first, {k: values[k] for k in slots_in(first)}))
        try:
            sent = fill(rendered, {**values, "job_uid": created["metadata"]["uid"]})
            for doc in sent["manifests"][1:]:
                kube.create(ns, doc)
            kube.resume(ns, plan.job_id)
        except BaseException:
            kube.delete_job(ns, plan.job_id)
            for doc in rendered["manifests"][1:]:
                kube.delete(ns, doc["kind"], doc["metadata"]["name"])
            raise
        return {"context": context, "namespace": ns, "job": plan.job_id, "num_nodes": job.num_nodes,
                "pending_timeout": job.pending_timeout or DEFAULT_PENDING_TIMEOUT, "keep_on_failure": job.keep_on_failure,
                "created": time.time()}

    def restart(self, plan: Plan, previous: K8sHandle) -> dict:
        """A preempted job again, same id: the last attempt's Job and what it owned go first (the names are the
        job id's), on the cluster it ran on."""
        from .kube import Kube

        kube, ns = Kube(previous.context), previous.namespace
        kube.delete_job(ns, plan.job_id)
        for doc in request.documents(plan.request)[1:]:
            kube.delete(ns, doc["kind"], doc["metadata"]["name"])
        if not kube.wait_job_gone(ns, plan.job_id, 120):
            raise UserError(f"Job {plan.job_id} in {ns} is still being deleted after 2 min; relaunch later")
        return self.start(plan, detach=True, context=previous.context)

    def _code(self, plan: Plan) -> dict:
        """Where the pod gets its code (slot values): presigned URLs into the s3 store, or (pvc://) the snapshot
        itself for the ConfigMap."""
        from ...snapshot import upload

        job = plan.job
        snap = plan.snapshot
        if request.pvc_claim(plan):
            from ... import progress

            progress.report(progress.SNAPSHOT, f"{progress.human_bytes(snap.size)} in the Job's ConfigMap")
            return {"snapshot_b64": base64.b64encode(snap.path.read_bytes()).decode()}
        from ..ec2 import aws

        region = aws.default_region()
        upload(snap, job.datapool, endpoint_url=job.endpoint_url)
        valid = int(plan.deadline_at - time.time()) + 3600
        return {"snapshot_url": aws.presign("get_object", job.datapool, snap.key, valid, job.endpoint_url, region),
                "result_url": aws.presign("put_object", job.datapool,
                                          f"experiments/{job.experiment}/reports/jobs/{plan.job_id}/result.json",
                                          valid, job.endpoint_url, region)}

    # -- after submit --------------------------------------------------------------------------------------------

    def _kube(self, handle: Handle):
        from .kube import Kube

        d: K8sHandle = handle.data
        return Kube(d.context), d.namespace, d.job or handle.job_id

    @_asked
    def status(self, handle: Handle) -> tuple[str, int | None, str | None]:
        kube, ns, name = self._kube(handle)
        job = kube.job(ns, name)
        if job is None:
            return "lost", None, f"Job {name} in namespace {ns} is gone and left no result in the store"
        pods = kube.pods(ns, name)
        conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions") or []
                      if c.get("status") == "True"}
        if "Complete" in conditions:
            return "succeeded", 0, None
        failed = conditions.get("Failed")
        if failed:
            why = f"Job {name}: {failed.get('reason', 'Failed')}: {failed.get('message', '')}".rstrip(": ")
            if failed.get("reason") == "DeadlineExceeded":
                return "timeout", None, why
            disruption = stuck.disrupted(pods) or stuck.disrupted_job(name, failed, lambda: kube.events(ns))
            if disruption:
                return "preempted", None, disruption
            code = stuck.exit_code(pods)
            if code == PUSH_FAILED_EXIT:  # the agent's own: the store never answered its last push
                return "push_failed", code, (f"{why}; the store did not answer the last push within --push-timeout: "
                                             "the outputs went with the pod")
            return "failed", code, why
        phases = {(p.get("status") or {}).get("phase", "Pending") for p in pods}
        # The reason of an active state is where the pods are at, for the launch's progress (waiting for the machine).
        if phases - {"Pending"}:
            return "running", None, _pod_phases(name, pods)
        created = job["metadata"].get("creationTimestamp")
        why = stuck.diagnose(name, pods, kube.events(ns), now=time.time(),
                             job_created=stuck._ts(created) if created else handle.data.created,
                             pending_timeout=float(handle.data.pending_timeout))
        if why is None:
            return "pending", None, _pod_phases(name, pods)
        # Only read here: reconcile records this (the reason kept with the job) and `release` deletes the Job.
        if handle.data.keep_on_failure:
            why += f"; kept (--keep-on-failure): kubectl -n {ns} describe job {name}; launch down {handle.job_id}"
        else:
            why += f"; Job {name} deleted"
        return "failed", None, why

    def release(self, handle: Handle) -> None:
        """The job is final: a Job whose pods never started (stuck: unschedulable, a bad image) goes, unless
        --keep-on-failure; one whose pods ran stays for its TTL (its pods' logs), the Job controller ends it."""
        if handle.data.keep_on_failure:
            return
        kube, ns, name = self._kube(handle)
        job = kube.job(ns, name)
        if job is None or _finished(job):
            return
        if all((p.get("status") or {}).get("phase", "Pending") == "Pending" for p in kube.pods(ns, name)):
            kube.delete_job(ns, name)

    def logs(self, handle: Handle, follow: bool = False, offset: int = 0) -> Iterator[bytes] | None:
        """Rank 0's pod log (followed: each attempt's rank 0 in turn), or None for the store's copy. `offset`: the
        same stream is read again from its start and its first `offset` bytes skipped (a pod log has no byte
        position to ask for, and sinceTime only whole lines at a second's grain), so a follower that reconnects
        prints nothing twice. A dropped or silent connection raises kube.Unreachable (a followed log notices within
        K8S_LOG_READ_S); the caller reconnects."""
        if not follow and handle.data.store.store_url:
            return None  # the store's copy, pushed every --push-interval: no cluster call for a look
        kube, ns, name = self._kube(handle)
        if kube.job(ns, name) is None:
            return None  # the TTL took the Job and its pods: the store's copy of log.txt
        pods = kube.pods(ns, name)
        if not follow and pods and (pods[0].get("status") or {}).get("phase") != "Pending":
            return _skip(self._pod_log(kube, ns, pods[0]["metadata"]["name"], follow=False), offset)
        if not follow:
            return iter([b""]) if pods or kube.job(ns, name) else None
        return _skip(self._follow(handle, kube, ns, name), offset)

    def _pod_log(self, kube, ns: str, pod: str, follow: bool) -> Iterator[bytes]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        from .kube import Unreachable

        try:
            resp = kube.log_stream(ns, pod, request.CONTAINER, follow)
        except ApiException:
            return
        try:
            yield from resp.stream(65536)
        except (HTTPError, OSError) as exc:  # reset mid-stream, or silent past the read timeout
            raise Unreachable(f"the log stream of pod {pod} broke off: {exc}") from None
        finally:
            resp.release_conn()

    def _follow(self, handle: Handle, kube, ns: str, name: str) -> Iterator[bytes]:
        """Rank 0's pod output once it runs; until then, the job's state (a stuck pod ends the wait). A preempted
        job that the look after its pod's end relaunched is a new Job of the same name: its rank 0 is followed next."""
        followed: set[str | None] = set()  # the Jobs (uids) whose rank 0 was streamed
        ended_since = None
        while True:
            pods = [p for p in kube.pods(ns, name) if _job_uid(p) not in followed]
            if pods and (pods[0].get("status") or {}).get("phase") != "Pending":
                followed.add(_job_uid(pods[0]))
                yield from self._pod_log(kube, ns, pods[0]["metadata"]["name"], follow=True)
                continue
            state, _, why = self.status(handle)  # only reads: the reconciler records and relaunches
            if state in ACTIVE or relaunch_due(handle.job_id, state):
                ended_since = None
            elif state == "lost" and ended_since is None:
                # A relaunch deletes the preempted Job before it creates the new one: for that moment the Job is
                # gone. Gone for good is gone on a second look a while later.
                ended_since = time.time()
            elif state != "lost" or time.time() - ended_since > LOST_SETTLE_S:
                if not followed and _recorded(handle.job_id) in ACTIVE:  # said here unless the reconciler was first
                    yield f"[launcher] {handle.job_id} {state}: {why or 'no reason given'}\n".encode()
                return
            time.sleep(1)

    def still_running(self, handle: Handle) -> bool:
        """A pod still running reads the cancel marker, stops the script and pushes; then the Job can go."""
        kube, ns, name = self._kube(handle)
        job = kube.job(ns, name)
        if job is None or _finished(job):
            return False
        return any((p.get("status") or {}).get("phase") == "Running" for p in kube.pods(ns, name))

    def kill_now(self, handle: Handle) -> None:
        kube, ns, name = self._kube(handle)
        kube.delete_job(ns, name)

    def confirm_teardown(self, handle: Handle) -> str:
        kube, ns, name = self._kube(handle)
        gone = not kube.delete_job(ns, name)
        return f"Job {name} in {ns} " + ("already gone" if gone else "deleted (its pods and what it owns go with it)")

    def sweep(self, now: float, options=None, *, dry_run: bool = False) -> list[str]:
        """Every Job labelled launcher/job past its deadline annotation, in each namespace a job of ours used (as
        this machine's registry knows them) and the current context's. Other clusters are never touched."""
        from ...registry import Registry
        from .kube import Kube

        places = {(d.context, d.namespace) for d in (self.handle(r.id, r.handle).data
                                                     for r in Registry().list(None, backend=self.name))
                  if d.namespace}
        try:
            current = Kube.current_context()
            places.add((current, Kube.namespace_of_context(current)))
        except UserError:
            pass
        ended = []
        for context, ns in sorted(places, key=lambda p: (p[0] or "", p[1])):
            kube = Kube(context)
            for job in kube.jobs(ns):
                meta = job["metadata"]
                try:
                    deadline = float((meta.get("annotations") or {})[request.DEADLINE_ANNOTATION])
                except (KeyError, ValueError):
                    continue
                if deadline < now:
                    if not dry_run:
                        kube.delete_job(ns, meta["name"])
                    ended.append(f"{meta['name']} ({context}/{ns})")
        return ended

