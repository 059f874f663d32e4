"""A Kubernetes API server for the tests: kmock's emulator in its own process on 127.0.0.1, one per test module.

kmock stores what it is sent and serves it back (list, fetch, watch, patch, delete); it runs no controllers and
ignores label selectors, so the node simulator (nodesim.py) plays the Job controller, scheduler, kubelet and garbage
collector through the same API. Two things a real API server does are added here:

* on create, `metadata.uid`, `creationTimestamp` and `resourceVersion` (ownerReferences need the owner's uid);
* `GET .../pods/NAME/log` (`follow=true` included): the container's output, which the simulator writes to
  `<logs>/<namespace>/<pod>.log` and ends with a `<pod>.done` file when the container has exited.

    python -m tests.k8s.kmockserver --logs DIR      # prints the server's URL on its first line, then serves
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import sys
import uuid
from pathlib import Path

RESOURCES = {
    "v1/pods": ("Pod", True), "v1/configmaps": ("ConfigMap", True), "v1/secrets": ("Secret", True),
    "v1/services": ("Service", True), "v1/events": ("Event", True),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True), "v1/namespaces": ("Namespace", False),
    "batch/v1/jobs": ("Job", True),
}


def build(logs: Path):
    import kmock

    versions = itertools.count(1)

    class Emulator(kmock.KubernetesEmulator):
        async def _handle(self, request):
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp",
                                datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
                if request.namespace and "namespace" not in meta:
                    meta["namespace"] = request.namespace
            if request.action in (kmock.action.CREATE, kmock.action.UPDATE) and isinstance(request.data, dict):
                request.data.setdefault("metadata", {})["resourceVersion"] = str(next(versions))
            return await super()._handle(request)

    emulator = Emulator()
    for key, (kind, namespaced) in RESOURCES.items():
        emulator.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=namespaced,
                                                     verbs={"get", "list", "watch", "create", "patch", "delete"})

    async def pod_log(request):
        path = logs / (request.namespace or "default") / f"{request.name}.log"
        done = path.with_suffix(".done")
        if not path.exists():
            raise kmock.KubernetesError(status=400, reason="BadRequest",
                                        message=f'container in pod "{request.name}" is waiting to start')
        follow = request.params.get("follow") == "true"

        async def chunks():
            offset = 0
            while True:
                finished = done.exists()  # read before the file: an exit after this read still gets its bytes
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
                offset += len(data)
                if data:
                    yield data
                if not follow or finished:
                    if not offset:
                        yield b""
                    return
                await asyncio.sleep(0.2)

        return chunks()

    emulator["get", kmock.resource("", "v1", "pods"), kmock.subresource("log")] << pod_log
    return emulator


async def serve(logs: Path) -> None:
    import kmock

    async with build(logs) as emulator, kmock.Server(emulator) as server:
        print(str(server.url).rstrip("/"), flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", type=Path, required=True)
    ns = parser.parse_args()
    ns.logs.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(serve(ns.logs))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
