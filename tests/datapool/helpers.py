"""Helpers for the datapool tests: trees on disk and in the bucket, and the sync engine run in-process
(the CLI tests run `launch sync` instead)."""
from __future__ import annotations

from pathlib import Path

from launcher.datapool import LocalStore, open_store, sync

BUCKET = "pool-bucket"
REPO = Path(__file__).resolve().parents[2]


def run_sync(direction: str, root: Path, url: str, endpoint: str | None = None, sub: str = "", **kw):
    local = LocalStore(root, sub, readonly=kw.get("dry_run", False))
    remote = open_store(url, sub, endpoint_url=endpoint, workers=8)
    try:
        src, dst = (local, remote) if direction == "up" else (remote, local)
        return sync(src, dst, workers=8, **kw)
    finally:
        local.close()
        remote.close()


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under root except our own .launcher/ folder."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(".launcher/"):
            out[rel] = p.read_bytes()
    return out


def bucket_tree(moto, prefix: str = "") -> dict[str, bytes]:
    c = moto.client()
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", ()):
            out[obj["Key"][len(prefix):]] = c.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
    return out
