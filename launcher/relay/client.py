"""The commander's client: signed JSON over HTTP(S), stdlib only (the agent on a node uses it).

Errors are typed so callers can tell "the commander said no" (`RelayRefused`: unknown run, lease held, stale
epoch, finished) from "the commander did not answer" (`RelayUnreachable`: the worker rides that out for a while)
and from a wrong secret (`RelayAuthError`).
"""
from __future__ import annotations

import http.client
import json
import os
import ssl
from urllib.parse import urlparse

from .auth import sign


class RelayError(Exception):
    pass


class RelayUnreachable(RelayError):
    pass


class RelayCertificateError(RelayError):
    """The commander's TLS certificate is not trusted: final, like a wrong secret (RELAY_CA_FILE names the CA)."""


class RelayRefused(RelayError):
    def __init__(self, status: int, message: str, data: dict):
        super().__init__(message)
        self.status, self.message, self.data = status, message, data


class RelayAuthError(RelayRefused):
    pass


class RelayClient:
    def __init__(self, url: str, secret: str, *, timeout: float | None = None, ca_file: str | None = None):
        """`timeout`: seconds for connect and each read of a request; default netpolicy.RELAY_REQUEST_S."""
        if timeout is None:
            from .. import netpolicy

            timeout = netpolicy.seconds(netpolicy.RELAY_REQUEST_S)
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"bad commander URL {url!r}: use http(s)://host:port")
        self.url = url.rstrip("/")
        self.scheme, self.host, self.port = parsed.scheme, parsed.hostname, parsed.port
        self.base = parsed.path.rstrip("/")
        self.secret = secret
        self.timeout = timeout
        self.ca_file = ca_file or os.environ.get("RELAY_CA_FILE") or None

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            ctx = ssl.create_default_context(cafile=self.ca_file)
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, data: dict | None = None, *, timeout: float | None = None) -> dict:
        """`timeout` (seconds, for connect and each read) overrides the client's for this call."""
        path = self.base + path
        body = b"" if data is None else json.dumps(data).encode()
        headers = {"Content-Type": "application/json", **sign(self.secret, method, path, body)}
        conn = self._conn(self.timeout if timeout is None else timeout)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except ssl.SSLCertVerificationError as exc:
            raise RelayCertificateError(f"commander {self.url}: its certificate is not trusted ({exc.verify_message}); "
                                        "set RELAY_CA_FILE to its CA certificate") from None
        except (OSError, http.client.HTTPException) as exc:
            raise RelayUnreachable(f"commander {self.url} did not answer: {exc}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw or b"{}")
        except ValueError:
            answer = {"error": raw[:200].decode(errors="replace")}
        if resp.status == 401:
            raise RelayAuthError(401, f"commander {self.url} refused the request: {answer.get('error')}", answer)
        if resp.status >= 500:
            raise RelayUnreachable(f"commander {self.url} failed: HTTP {resp.status} {answer.get('error', '')}")
        if resp.status >= 400:
            raise RelayRefused(resp.status, str(answer.get("error", f"HTTP {resp.status}")), answer)
        return answer

    # -- the API -------------------------------------------------------------------------------------------------

    def health(self) -> dict:
        return self.request("GET", "/v1/health")

    def runs(self) -> list[dict]:
        return self.request("GET", "/v1/runs")["runs"]

    def run(self, run_id: str, events: int = 50) -> dict:
        return self.request("GET", f"/v1/runs/{run_id}?events={events}")

    def register(self, run_id: str, config: dict, ttl: float) -> dict:
        return self.request("POST", "/v1/runs", {"run_id": run_id, "config": config, "ttl": ttl})

    def acquire(self, run_id: str, worker: str) -> dict:
        return self.request("POST", f"/v1/runs/{run_id}/acquire", {"worker": worker})

    def renew(self, run_id: str, worker: str, epoch: int, *, timeout: float | None = None) -> dict:
        return self.request("POST", f"/v1/runs/{run_id}/renew", {"worker": worker, "epoch": epoch}, timeout=timeout)

    def release(self, run_id: str, worker: str, epoch: int) -> dict:
        return self.request("POST", f"/v1/runs/{run_id}/release", {"worker": worker, "epoch": epoch})

    def commit(self, run_id: str, worker: str, epoch: int, checkpoint: str, step: int | None) -> dict:
        return self.request("POST", f"/v1/runs/{run_id}/commit",
                            {"worker": worker, "epoch": epoch, "checkpoint": checkpoint, "step": step})

    def finish(self, run_id: str, worker: str, epoch: int) -> dict:
        return self.request("POST", f"/v1/runs/{run_id}/finish", {"worker": worker, "epoch": epoch})

    def close(self, run_id: str, why: str = "launch relay down") -> dict:
        return self.request("POST", f"/v1/runs/{run_id}/close", {"why": why})

    def add_worker(self, run_id: str, job_id: str, backend: str, entry: int | None, record: dict | None) -> dict:
        return self.request("POST", f"/v1/runs/{run_id}/workers",
                            {"job_id": job_id, "backend": backend, "entry": entry, "record": record})
