"""The S3 layout is plain: s5cmd reads what we write and we read what s5cmd writes (incl. its multipart ETags)."""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from .helpers import BUCKET, bucket_tree, read_tree, run_sync, write_tree

URL = f"s3://{BUCKET}/pool"


def _s5cmd() -> Path:
    # The binary of the `s5cmd` package the venv sees (in .venv, or in the base Python under
    # --system-site-packages), never PATH: the tests run as `.venv/bin/python -m pytest` without .venv/bin on
    # PATH, and an s5cmd installed by hand elsewhere would make them pass where a fresh clone fails.
    try:
        files = importlib.metadata.distribution("s5cmd").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    found = [Path(f.locate()) for f in files if f.name == "s5cmd" and f.parent.name == "bin"]
    return next((p for p in found if os.access(p, os.X_OK)), Path(sys.executable).parent / "s5cmd")


S5CMD = _s5cmd()  # a dev dependency: missing = failing test

TREE = {
    "data/raw/a.jsonl": b'{"a": 1}\n' * 20,
    "data/empty": b"",
    "model/base/ünï cødé.bin": os.urandom(5000),
    "model/big.bin": os.urandom(12 * 1024 * 1024 + 7),  # multipart for us (8 MiB parts) and s5cmd (-p 5)
}


def s5(endpoint, *args):
    assert S5CMD.is_file(), f"{S5CMD} missing: s5cmd is a dev dependency, run `bash scripts/setup.sh`"
    r = subprocess.run([S5CMD, "--endpoint-url", endpoint, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def test_s5cmd_reads_what_we_write(s3, tmp_path):
    root = tmp_path / "ours"
    write_tree(root, TREE)
    run_sync("up", root, URL, s3.endpoint)
    out = tmp_path / "s5"
    s5(s3.endpoint, "cp", f"s3://{BUCKET}/pool/*", f"{out}/")
    assert read_tree(out) == TREE
    # s5cmd's own sync sees nothing to do against what we wrote (same sizes, our mtimes are older).
    r = s5(s3.endpoint, "--log", "debug", "sync", "--size-only", f"{out}/", f"s3://{BUCKET}/pool/")
    assert "cp " not in r.stdout, r.stdout


def test_we_read_what_s5cmd_writes(s3, tmp_path):
    src = tmp_path / "s5src"
    write_tree(src, TREE)
    s5(s3.endpoint, "cp", "-p", "5", f"{src}/", f"s3://{BUCKET}/pool/")
    head = s3.client().head_object(Bucket=BUCKET, Key="pool/model/big.bin")
    assert head["ETag"].strip('"').endswith("-3") and "sha256" not in head.get("Metadata", {})

    down = tmp_path / "ours"
    r = run_sync("down", down, URL, s3.endpoint)
    assert r.copied == len(TREE) and read_tree(down) == TREE
    # No sha256 metadata on s5cmd's objects: the no-op is decided by size + ETag (md5, or md5-of-parts with
    # s5cmd's part size), still without reading any object.
    s3.mark()
    assert run_sync("down", down, URL, s3.endpoint).copied == 0
    assert s3.object_reads() == []
    # Same tree from a fresh checkout on the other side: nothing is uploaded either.
    fresh = tmp_path / "fresh"
    write_tree(fresh, TREE)
    s3.mark()
    assert run_sync("up", fresh, URL, s3.endpoint).copied == 0
    assert [m for m, _, _ in s3.requests()] == ["GET"]
    # A file s5cmd changed is seen as changed.
    (src / "data/raw/a.jsonl").write_bytes(b'{"a": 2}\n' * 20)
    s5(s3.endpoint, "cp", f"{src}/data/raw/a.jsonl", f"s3://{BUCKET}/pool/data/raw/a.jsonl")
    r = run_sync("down", down, URL, s3.endpoint)
    assert [p for p, _, _ in r.plan.copy] == ["data/raw/a.jsonl"]
    assert (down / "data/raw/a.jsonl").read_bytes() == b'{"a": 2}\n' * 20
    assert bucket_tree(s3, "pool/")["data/raw/a.jsonl"] == b'{"a": 2}\n' * 20
