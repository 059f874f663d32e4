"""Why a job's pods are not running: pod conditions, container states and events -> one reason, or None.

Pure (objects as the API serves them, camelCase dicts), so each case is tested without a cluster. A pod that cannot
start for a reason no waiting fixes is reported at once, with the cluster's own message:

    Unschedulable / FailedScheduling   no node has the GPUs, the label or the room (unless an autoscaler is adding
                                       one: then the pending timeout decides)
    ErrImagePull / ImagePullBackOff    the image does not exist or cannot be pulled
    CreateContainerConfigError         a missing Secret (or key) or ConfigMap
    FailedCreate (on the Job)          the Job controller cannot make pods: quota, admission, service account

Anything else Pending longer than the pending timeout is reported with the pod's last event.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Callable

from ...units import format_duration

IMMEDIATE_WAITING = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                     "CreateContainerError")
# What the scheduler, the taint eviction controller and the eviction API leave on a pod they take away.
DISRUPTION_EVENTS = ("Preempted", "TaintManagerEviction", "Evicted")
# An autoscaler says it is bringing a node: FailedScheduling is then expected for a while.
SCALING_UP = ("TriggeredScaleUp", "Nominated")


def _ts(value) -> float | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def events_for(events: list[dict], kind: str, name: str) -> list[dict]:
    """Events about one object, oldest first (the API ignores no field selector here: we filter ourselves)."""
    out = [e for e in events if (e.get("involvedObject") or {}).get("kind") == kind
           and (e.get("involvedObject") or {}).get("name") == name]
    return sorted(out, key=lambda e: _ts(e.get("lastTimestamp") or e.get("eventTime")
                                         or (e.get("metadata") or {}).get("creationTimestamp")) or 0)


def _waiting(pod: dict) -> tuple[str, str] | None:
    status = pod.get("status") or {}
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMMEDIATE_WAITING:
            return waiting["reason"], waiting.get("message") or ""
    return None


def _unschedulable(pod: dict, events: list[dict]) -> str | None:
    if any(e.get("reason") in SCALING_UP for e in events):
        return None
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == ("PodScheduled", "False", "Unschedulable"):
            return cond.get("message") or "Unschedulable"
    failed = [e for e in events if e.get("reason") == "FailedScheduling"]
    return (failed[-1].get("message") or "FailedScheduling") if failed else None


def diagnose(job_name: str, pods: list[dict], events: list[dict], *, now: float, job_created: float | None,
             pending_timeout: float) -> str | None:
    """The reason this job will not start by itself, or None while waiting is still reasonable."""
    for e in events_for(events, "Job", job_name):
        if e.get("reason") == "FailedCreate":
            return f"Job {job_name} cannot create its pods: {e.get('message', '')}".rstrip(": ")
    for pod in pods:
        if (pod.get("status") or {}).get("phase", "Pending") != "Pending":
            continue
        name = pod["metadata"]["name"]
        pod_events = events_for(events, "Pod", name)
        waiting = _waiting(pod)
        if waiting:
            return f"pod {name}: {waiting[0]}: {waiting[1]}".rstrip(": ")
        unschedulable = _unschedulable(pod, pod_events)
        if unschedulable:
            return f"pod {name} cannot be scheduled: {unschedulable}"
        created = _ts((pod.get("metadata") or {}).get("creationTimestamp")) or job_created
        if created is not None and now - created > pending_timeout:
            last = f"; last event: {pod_events[-1].get('reason')}: {pod_events[-1].get('message', '')}" \
                if pod_events else ""
            return f"pod {name} still Pending after {format_duration(int(now - created))}" \
                   f" (--pending-timeout {format_duration(int(pending_timeout))}){last}"
    if not pods and job_created is not None and now - job_created > pending_timeout:
        return (f"Job {job_name} made no pod in {format_duration(int(now - job_created))} "
                f"(--pending-timeout {format_duration(int(pending_timeout))})")
    return None


def disrupted(pods: list[dict]) -> str | None:
    """A pod the cluster took away (preemption, drain, eviction): its DisruptionTarget condition's message."""
    for pod in pods:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
                return f"pod {pod['metadata']['name']}: {cond.get('reason', '')}: {cond.get('message', '')}"
    return None


def disrupted_job(job_name: str, failed: dict, events: Callable[[], list[dict]]) -> str | None:
    """A Job failed by its DisruptionTarget rule whose pod is already gone (a pod the cluster deletes goes as soon
    as the Job controller has counted it): the controller's message, and the last event left on that pod (events
    are listed only then)."""
    message = failed.get("message") or ""
    m = re.match(r"Pod [^/\s]+/(\S+) has condition DisruptionTarget ", message)
    if failed.get("reason") != "PodFailurePolicy" or not m:
        return None
    last = [e for e in events_for(events(), "Pod", m[1]) if e.get("reason") in DISRUPTION_EVENTS][-1:]
    seen = f"; {last[0].get('reason')}: {last[0].get('message', '')}" if last else ""
    return f"Job {job_name}: {message}{seen}"


def exit_code(pods: list[dict]) -> int | None:
    """The agent container's exit code on a failed pod (the first failure), else None."""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if term and term.get("exitCode") not in (None, 0):
                return int(term["exitCode"])
    return None
