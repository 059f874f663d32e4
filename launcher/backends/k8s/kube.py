"""The k8s backend's calls to the API server (the official `kubernetes` client, imported here only).

Requests go through the client's `ApiClient` (kubeconfig, contexts, auth plugins, TLS, retries) by path, and objects
come back as the API serves them: camelCase dicts, which is what stuck.py reads. The typed `CoreV1Api`/`BatchV1Api`
classes are not used: importing them builds some 300 pydantic models, seconds of every `launch status` on a busy
machine. Label selectors are sent, and the results are filtered here too: a Job's pods are found by our own label.

Every call is bounded (launcher/netpolicy.py): K8S_REQUEST_S (connect, read) per request, a followed log its own
read timeout (K8S_LOG_READ_S); a connection error is retried twice, a read that timed out never (a hung API
server costs one read timeout, not three). An API server that cannot be asked (refused, reset, timed out, 5xx,
429) raises `Unreachable`: `status` turns it into the `unreachable` state, never `lost`.
"""
from __future__ import annotations

import json
import time

from ...errors import UserError
from .request import JOB_LABEL

RBAC_HINT = "see docs/backends/k8s.md for the Role the launcher needs"


class Unreachable(Exception):
    """The API server could not be asked (down, refused, hanging, 5xx): a state to wait out, not an answer."""


def _retries():
    """urllib3's retry policy for every call: connection errors twice, no status retries, and a read that timed
    out is not repeated (a blackholed server would otherwise hold a call for three read timeouts)."""
    from urllib3.exceptions import ReadTimeoutError
    from urllib3.util.retry import Retry

    class _Retry(Retry):
        def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
            if isinstance(error, ReadTimeoutError):
                raise error
            return super().increment(method, url, response, error, _pool, _stacktrace)

    from ... import netpolicy

    tries = netpolicy.K8S_CONNECT_RETRIES
    return _Retry(total=tries, connect=tries, read=tries, status=0, redirect=2,
                  backoff_factor=0, raise_on_status=False)


def request_timeout() -> tuple[float, float]:
    from ... import netpolicy

    connect, read = netpolicy.K8S_REQUEST_S
    return netpolicy.seconds(connect), netpolicy.seconds(read)


def log_timeout() -> tuple[float, float]:
    from ... import netpolicy

    return request_timeout()[0], netpolicy.seconds(netpolicy.K8S_LOG_READ_S)


PATHS = {"Job": "/apis/batch/v1/namespaces/{ns}/jobs", "Pod": "/api/v1/namespaces/{ns}/pods",
         "ConfigMap": "/api/v1/namespaces/{ns}/configmaps", "Secret": "/api/v1/namespaces/{ns}/secrets",
         "Service": "/api/v1/namespaces/{ns}/services", "Event": "/api/v1/namespaces/{ns}/events",
         "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims"}


def _path(kind: str, ns: str, name: str | None = None, sub: str | None = None) -> str:
    from urllib.parse import quote

    path = PATHS[kind].format(ns=quote(ns, safe=""))
    return path + (f"/{quote(name, safe='')}" if name else "") + (f"/{sub}" if sub else "")


def kubeconfig() -> str:
    """KUBECONFIG as it is now (the client reads it once, at import, for its own default), else kubectl's file."""
    import os

    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


class Kube:
    """One API client for one context; every call names its namespace."""

    def __init__(self, context: str | None):
        from kubernetes import client, config

        self.context = context
        cfg = client.Configuration()
        try:
            config.load_kube_config(config_file=kubeconfig(), context=context, client_configuration=cfg)
        except config.ConfigException as exc:
            try:
                if context:
                    raise
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                where = f"context {context!r}" if context else "kubeconfig"
                raise UserError(f"no usable {where} ({exc}): set KUBECONFIG or pass --context NAME "
                                "(`kubectl config get-contexts` lists them)") from None
        cfg.retries = _retries()
        self.api = client.ApiClient(cfg)

    @staticmethod
    def current_context() -> str | None:
        """The kubeconfig's current context, by name: the handle keeps it, so later calls reach this cluster."""
        from kubernetes import config

        try:
            return config.list_kube_config_contexts(config_file=kubeconfig())[1]["name"]
        except (config.ConfigException, FileNotFoundError, TypeError, KeyError):
            return None  # in-cluster credentials: there is one cluster

    @staticmethod
    def namespace_of_context(context: str | None) -> str:
        """The context's own namespace, else `default` (as kubectl resolves it)."""
        from kubernetes import config

        try:
            contexts, current = config.list_kube_config_contexts(config_file=kubeconfig())
        except (config.ConfigException, FileNotFoundError, TypeError):
            return "default"
        chosen = next((c for c in contexts if c["name"] == context), None) if context else current
        if context and chosen is None:
            names = ", ".join(c["name"] for c in contexts)
            raise UserError(f"no context {context!r} in your kubeconfig; pass --context with one of: {names}")
        return ((chosen or {}).get("context") or {}).get("namespace") or "default"

    def call(self, method: str, path: str, *, query: dict | None = None, body=None,
             content_type: str = "application/json", stream: bool = False):
        """One request, bounded (K8S_REQUEST_S; a followed log: K8S_LOG_READ_S between chunks); the decoded JSON
        object (or, with `stream`, the open urllib3 response). Raises the client's ApiException for a 4xx answer,
        Unreachable when the server could not be asked (no connection, a timeout, a 5xx or 429)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        headers = {"Accept": "application/json, */*", "Content-Type": content_type}
        method, url, headers, body, _ = self.api.param_serialize(
            method, path, query_params=list((query or {}).items()), header_params=headers, body=body,
            auth_settings=["BearerToken"])
        follow = stream and (query or {}).get("follow") == "true"
        try:
            resp = self.api.call_api(method, url, header_params=headers, body=body,
                                     _request_timeout=log_timeout() if follow else request_timeout())
            if not 200 <= resp.status < 300:
                resp.read()
                raise ApiException(status=resp.status, reason=resp.reason,
                                   body=(resp.data or b"").decode(errors="replace"))
            if stream:
                return resp.response
            resp.read()
        except ApiException as exc:
            if exc.status == 0 or exc.status >= 500 or exc.status == 429:  # 0: the client's own (a TLS failure)
                raise Unreachable(f"the API server at {self.host} answered {exc.status} {exc.reason}".rstrip()) \
                    from None
            raise
        except (HTTPError, OSError) as exc:
            raise Unreachable(f"cannot reach the API server at {self.host}: {_cause(exc)}") from None
        return json.loads(resp.data) if resp.data else {}

    @property
    def host(self) -> str:
        return self.api.configuration.host

    def _get(self, kind: str, ns: str, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.call("GET", _path(kind, ns, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._refused(exc, f"read {kind} {name}") from None

    def _list(self, kind: str, ns: str, selector: str | None = None) -> list[dict]:
        return self.call("GET", _path(kind, ns), query={"labelSelector": selector} if selector else None).get(
            "items") or []

    # -- errors --------------------------------------------------------------------------------------------------

    def _refused(self, exc, what: str) -> UserError:
        if exc.status in (401, 403):
            return UserError(f"the cluster refused to {what} ({exc.status} {exc.reason}): your credentials lack the "
                             f"permission; {RBAC_HINT}")
        return UserError(f"the cluster refused to {what}: {exc.status} {exc.reason}: {_message(exc)}")

    # -- reads ---------------------------------------------------------------------------------------------------

    def check_access(self, namespace: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.call("GET", _path("Job", namespace), query={"limit": 1})
        except ApiException as exc:
            raise self._refused(exc, f"list Jobs in namespace {namespace}") from None
        except Unreachable as exc:
            raise UserError(f"{exc}; check --context and your network") from None

    def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        obj = self._get("Secret", namespace, name)
        return None if obj is None else set(obj.get("data") or {}) | set(obj.get("stringData") or {})

    def claim(self, namespace: str, name: str) -> dict | None:
        return self._get("PersistentVolumeClaim", namespace, name)

    def job(self, namespace: str, name: str) -> dict | None:
        return self._get("Job", namespace, name)

    def pods(self, namespace: str, job_name: str) -> list[dict]:
        pods = self._list("Pod", namespace, f"{JOB_LABEL}={job_name}")
        return sorted((p for p in pods if (p["metadata"].get("labels") or {}).get(JOB_LABEL) == job_name),
                      key=lambda p: int((p["metadata"].get("annotations") or {}).get(
                          "batch.kubernetes.io/job-completion-index", 0)))

    def events(self, namespace: str) -> list[dict]:
        return self._list("Event", namespace)

    def jobs(self, namespace: str) -> list[dict]:
        return [j for j in self._list("Job", namespace, JOB_LABEL) if JOB_LABEL in (j["metadata"].get("labels") or {})]

    def log_stream(self, namespace: str, pod: str, container: str, follow: bool):
        """The container's output as it comes (an open urllib3 response: `.stream()` yields chunks)."""
        query = {"container": container}
        if follow:
            query["follow"] = "true"
        return self.call("GET", _path("Pod", namespace, pod, "log"), query=query, stream=True)

    # -- writes --------------------------------------------------------------------------------------------------

    def create(self, namespace: str, manifest: dict) -> dict:
        from kubernetes.client.exceptions import ApiException

        kind, name = manifest["kind"], manifest["metadata"]["name"]
        try:
            return self.call("POST", _path(kind, namespace), body=manifest)
        except ApiException as exc:
            if exc.status == 409:
                raise UserError(f"{kind} {name} already exists in namespace {namespace}: a job id is used once; "
                                "launch again for a new id") from None
            if exc.status == 422 or exc.status == 400:
                raise UserError(f"the cluster rejected {kind} {name}: {_message(exc)}") from None
            raise self._refused(exc, f"create {kind} {name}") from None

    def resume(self, namespace: str, job_name: str) -> None:
        self.call("PATCH", _path("Job", namespace, job_name), body={"spec": {"suspend": False}},
                  content_type="application/merge-patch+json")

    def delete_job(self, namespace: str, name: str) -> bool:
        """Background propagation: the Job goes now, its pods and what it owns after it. False if it was gone."""
        return self.delete(namespace, "Job", name)

    def delete(self, namespace: str, kind: str, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.call("DELETE", _path(kind, namespace, name), query={"propagationPolicy": "Background"})
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def wait_job_gone(self, namespace: str, name: str, timeout: float) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            if self.job(namespace, name) is None:
                return True
            time.sleep(1)
        return False


def _cause(exc: BaseException) -> str:
    """urllib3's error in one line: the innermost reason (MaxRetryError wraps it), without the pool's repr."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        exc = reason
    text = str(exc).split(": ", 1)[-1] if "Pool(" in str(exc) else str(exc)
    return (text.strip().splitlines() or [type(exc).__name__])[0][:200]


def _message(exc) -> str:
    try:
        return json.loads(exc.body).get("message", "") or str(exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)
