"""The file:// store (a directory, e.g. a mounted volume): same semantics as S3, temp + rename, verified."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from launcher.datapool import IntegrityError, LocalStore, open_store, sync

from .helpers import REPO, read_tree, write_tree

TREE = {"data/a.txt": b"a", "data/empty": b"", "model/ünï/deep/b.bin": os.urandom(9 * 1024 * 1024),
        "reports/r.json": b"{}"}


def _sync(src_root, dst_root, **kw):
    src = open_store(src_root.as_uri()) if not isinstance(src_root, LocalStore) else src_root
    dst = open_store(dst_root.as_uri()) if not isinstance(dst_root, LocalStore) else dst_root
    try:
        return sync(src, dst, **kw)
    finally:
        src.close()
        dst.close()


def test_file_store_roundtrip_noop_delete(tmp_path):
    local, store = tmp_path / "local", tmp_path / "store"
    write_tree(local, TREE)
    assert _sync(local, store).copied == len(TREE)
    assert read_tree(store) == TREE
    r = _sync(local, store)
    assert r.copied == 0 and r.plan.unchanged == len(TREE)
    (local / "reports/r.json").unlink()
    assert _sync(local, store, delete=True).deleted == 1
    assert "reports/r.json" not in read_tree(store)
    # Nothing but finished files in the tree: temp names live under .launcher/tmp and are gone after a sync.
    assert not any((store / ".launcher" / "tmp").iterdir())
    back = tmp_path / "back"
    assert _sync(store, back).copied == len(TREE) - 1
    assert read_tree(back) == read_tree(store)


def test_copy_into_file_store_verifies_the_source_hash(tmp_path):
    """A source file that changes after it was hashed is caught, not stored under the old hash."""
    local, store = tmp_path / "local", tmp_path / "store"
    write_tree(local, {"x.bin": b"0" * 1000})
    src = LocalStore(local)
    entries = src.list()
    (local / "x.bin").write_bytes(b"1" * 1000)
    dst = LocalStore(store)
    with pytest.raises(IntegrityError, match="changed while copying"):
        dst.put_file(local / "x.bin", "x.bin", entries["x.bin"])
    assert not (store / "x.bin").exists()


def test_import_is_light():
    code = ("import sys, launcher.datapool, launcher.datapool.node, launcher.cli.sync; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'rich')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("pattern,path,hit", [
    ("data", "data/raw/a.txt", True),
    ("data/", "data/raw/a.txt", True),
    ("data", "reports/data", True),          # no '/': also a file name
    ("data/", "reports/data", False),        # a folder only
    ("*.json", "reports/jobs/j/result.json", True),
    ("model/base", "model/base_v2/x", False),
    ("model/*_checkpoints", "model/sft_checkpoints/c-1/w.bin", True),
    ("./data", "data/x", True),
    ("reports/jobs/*/result.json", "reports/jobs/j1/result.json", True),
    ("reports/jobs/*/result.json", "reports/jobs/j1/log.txt", False),
])
def test_path_filter(pattern, path, hit):
    from launcher.datapool import PathFilter

    assert PathFilter.match(path, pattern) is hit
    f = PathFilter(include=[pattern])
    assert f(path) is hit and f(".launcher/hashcache.sqlite") is False
    assert PathFilter(exclude=[pattern])(path) is (not hit)
