"""A cluster for the tests: the kmock API server in its own process (kmockserver.py) plus a kubeconfig that points
the official client (and `launch`) at it, and the node simulator (nodesim.py) that plays the cluster's controllers
and kubelets. One per test module.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CONTEXT = "kmock"
NAMESPACE = "ml"
IMAGE = "launcher-test:local"  # the one image the simulated nodes have
BUCKET = "k8s-tests"  # the s3 datapool's bucket on the module's moto server


class KmockCluster:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.logs = self.workdir / "podlogs"
        with open(self.workdir / "kmock.err", "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.k8s.kmockserver", "--logs", str(self.logs)],
                                         cwd=REPO, stdout=subprocess.PIPE, stderr=err,
                                         env={**os.environ, "PYTHONPATH": str(REPO)})
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.proc.kill()
            raise RuntimeError(f"kmock did not start: {line!r} {(self.workdir / 'kmock.err').read_text()[-2000:]}")
        self.url = line
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": CONTEXT,
            "clusters": [{"name": CONTEXT, "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "not-checked"}}],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": "tester", "namespace": NAMESPACE}}],
        }))
        self.api = self.client()

    def client(self):
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.ApiClient(cfg)

    @property
    def core(self):
        from kubernetes import client

        return client.CoreV1Api(self.api)

    @property
    def batch(self):
        from kubernetes import client

        return client.BatchV1Api(self.api)

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    def plain(self, obj) -> dict:
        return self.api.sanitize_for_serialization(obj)

    def objects(self, kind: str, namespace: str = NAMESPACE) -> list[dict]:
        lister = {"Job": self.batch.list_namespaced_job, "Pod": self.core.list_namespaced_pod,
                  "ConfigMap": self.core.list_namespaced_config_map, "Secret": self.core.list_namespaced_secret,
                  "Service": self.core.list_namespaced_service}[kind]
        return [self.plain(o) for o in lister(namespace).items]

    def owned_by(self, job_id: str) -> list[str]:
        """Every object still there that belongs to the job (by our label), as `Kind/name`."""
        out = []
        for kind in ("Job", "Pod", "ConfigMap", "Secret", "Service"):
            for o in self.objects(kind):
                if (o["metadata"].get("labels") or {}).get("launcher/job") == job_id:
                    out.append(f"{kind}/{o['metadata']['name']}")
        return out

    def wait_gone(self, job_id: str, timeout: float = 30) -> list[str]:
        end = time.time() + timeout
        left = self.owned_by(job_id)
        while left and time.time() < end:
            time.sleep(0.3)
            left = self.owned_by(job_id)
        return left

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()


def store_text(moto, store: str, key: str) -> str | None:
    prefix = store.split("/", 3)[3]
    try:
        return moto.client().get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read().decode()
    except Exception:  # noqa: BLE001 - NoSuchKey
        return None
