"""The hash cache is a hint: a corrupt cache is rebuilt, and a wrong row is never published nor allowed to
fail a sync; it is corrected from the bytes (against a real S3 server, moto on 127.0.0.1)."""
from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from launcher.datapool import LocalStore, open_store, sync
from launcher.datapool.hashing import hash_file

from .helpers import BUCKET, bucket_tree, read_tree, run_sync, write_tree

URL = f"s3://{BUCKET}/pool"
BIG = os.urandom(9 * 1024 * 1024 + 5)  # multipart (8 MiB parts): its sha256 metadata is set before the parts go
TREE = {"experiments/a/data/x.jsonl": b'{"x": 1}\n' * 40, "experiments/a/model/w.bin": os.urandom(4000),
        "top.txt": b"top"}


def cache_path(root):
    return root / ".launcher" / "hashcache.sqlite"


def cache_rows(root) -> dict[str, tuple[str, str]]:
    """Opens the file as SQLite: raises if it is not a valid database."""
    db = sqlite3.connect(cache_path(root))
    try:
        return {p: (sha, etag) for p, sha, etag in db.execute("SELECT path, sha256, etag FROM files")}
    finally:
        db.close()


def plant(root, rel: str, **cols) -> None:
    db = sqlite3.connect(cache_path(root))
    with db:
        n = db.execute(f"UPDATE files SET {', '.join(f'{k} = ?' for k in cols)} WHERE path = ?",
                       (*cols.values(), rel)).rowcount
    db.close()
    assert n == 1, f"no cache row for {rel}"


def sync_up_counting(root, endpoint):
    """sync up; returns (result, how many local files were read to hash them while listing)."""
    local, remote = LocalStore(root), open_store(URL, endpoint_url=endpoint, workers=8)
    try:
        return sync(local, remote, workers=8), local.hashed
    finally:
        local.close()
        remote.close()


def _garbage(path):
    path.write_bytes(b"this is not an sqlite database at all\n" * 200)


def _malformed(path):
    """A valid header over damaged pages: opens fine, fails when the rows are read."""
    data = bytearray(path.read_bytes())
    assert len(data) > 3 * 4096
    data[4096:len(data)] = os.urandom(len(data) - 4096)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [_garbage, _malformed], ids=["garbage", "malformed-pages"])
def test_corrupt_cache_is_rebuilt(s3, tmp_path, corrupt):
    root = tmp_path / "pool"
    tree = {**TREE, **{f"experiments/a/data/many/{i:03d}-{'x' * 60}.txt": b"%d" % i for i in range(200)}}
    write_tree(root, tree)
    r, hashed = sync_up_counting(root, s3.endpoint)
    assert r.copied == len(tree)
    assert len(cache_rows(root)) == len(tree)

    corrupt(cache_path(root))
    r, hashed = sync_up_counting(root, s3.endpoint)  # nothing to upload, but every file is re-hashed once
    assert r.copied == 0 and r.plan.unchanged == len(tree) and hashed == len(tree)
    assert len(cache_rows(root)) == len(tree)  # a valid database again, with every row

    r, hashed = sync_up_counting(root, s3.endpoint)
    assert r.copied == 0 and hashed == 0  # the rebuilt cache is used: nothing read
    assert (root / ".launcher" / "hashcache.sqlite.corrupt").exists()  # kept aside for a post-mortem


def test_corrupt_cache_is_left_alone_by_a_dry_run(s3, tmp_path):
    root = tmp_path / "pool"
    write_tree(root, TREE)
    run_sync("up", root, URL, s3.endpoint)
    _garbage(cache_path(root))
    before = cache_path(root).read_bytes()
    r = run_sync("up", root, URL, s3.endpoint, dry_run=True)
    assert r.plan.unchanged == len(TREE)
    assert cache_path(root).read_bytes() == before and not (root / ".launcher/hashcache.sqlite.corrupt").exists()


@pytest.mark.parametrize("rel,data", [("experiments/a/model/big.bin", BIG), ("experiments/a/small.txt", b"small")],
                         ids=["multipart", "single-put"])
def test_wrong_cached_sha256_is_never_published(s3, tmp_path, rel, data):
    root = tmp_path / "pool"
    write_tree(root, {rel: data})
    run_sync("up", root, URL, s3.endpoint)
    true_sha = hashlib.sha256(data).hexdigest()
    assert cache_rows(root)[rel][0] == true_sha
    # The object is gone (say, deleted by hand) and the cache row lies about the file.
    s3.client().delete_object(Bucket=BUCKET, Key=f"pool/{rel}")
    plant(root, rel, sha256="0" * 64)

    r = run_sync("up", root, URL, s3.endpoint)
    assert r.copied == 1
    head = s3.client().head_object(Bucket=BUCKET, Key=f"pool/{rel}")
    assert head["Metadata"]["sha256"] == true_sha
    assert cache_rows(root)[rel][0] == true_sha  # the row was corrected from the bytes sent

    down = tmp_path / "down"
    r = run_sync("down", down, URL, s3.endpoint)  # verifies every object against its sha256 metadata
    assert r.copied == 1 and not r.failed and read_tree(down) == {rel: data}


def test_wrong_cached_sha256_does_not_fail_a_file_store_copy(tmp_path):
    src, store = tmp_path / "pool", tmp_path / "store"
    write_tree(src, TREE)
    rel = "experiments/a/model/w.bin"

    def one():
        local, remote = LocalStore(src), open_store(store.as_uri())
        try:
            return sync(local, remote)
        finally:
            local.close()
            remote.close()

    one()
    (store / rel).unlink()
    plant(src, rel, sha256="f" * 64)
    for _ in range(2):  # the first run corrects the row, the second finds nothing to do
        one()
    assert read_tree(store) == TREE
    assert cache_rows(src)[rel][0] == hashlib.sha256(TREE[rel]).hexdigest()


def test_wrong_cached_etag_multipart_upload_succeeds_and_row_is_corrected(s3, tmp_path):
    root = tmp_path / "pool"
    rel = "experiments/a/model/big.bin"
    write_tree(root, {rel: BIG})
    run_sync("up", root, URL, s3.endpoint)
    true = hash_file(root / rel, len(BIG))
    assert cache_rows(root)[rel] == true
    s3.client().delete_object(Bucket=BUCKET, Key=f"pool/{rel}")
    plant(root, rel, etag="0" * 32 + "-2")

    for _ in range(2):  # a wrong ETag used to be read as "changed while uploading", on every run
        r = run_sync("up", root, URL, s3.endpoint)
        assert not r.failed
    assert bucket_tree(s3, "pool/") == {rel: BIG}
    assert cache_rows(root)[rel] == true


@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("rel,data", [("experiments/a/model/big.bin", BIG), ("experiments/a/small.txt", b"small")],
                         ids=["multipart", "single-put"])
def test_wrong_cached_etag_against_a_same_object_is_corrected(s3, tmp_path, rel, data, direction):
    """The object is already there: a wrong row must not make it look different forever (re-hashing every run)."""
    root = tmp_path / "pool"
    write_tree(root, {rel: data})
    run_sync("up", root, URL, s3.endpoint)
    true = hash_file(root / rel, len(data))
    plant(root, rel, etag="0" * 32 + ("-2" if len(data) > 8 * 1024 * 1024 else ""))

    r = run_sync(direction, root, URL, s3.endpoint)
    assert r.copied == 0 and r.plan.unchanged == 1 and not r.failed
    assert cache_rows(root)[rel] == true
    s3.mark()
    local, remote = LocalStore(root), open_store(URL, endpoint_url=s3.endpoint)
    try:
        r = sync(local, remote) if direction == "up" else sync(remote, local)
    finally:
        local.close()
        remote.close()
    assert r.copied == 0 and local.hashed == 0 and s3.object_reads() == []


def test_unwritable_cache_costs_hashing_not_the_sync(s3, tmp_path, capfd):
    """A cache that cannot be opened (here a directory in its place) is skipped with one warning."""
    root = tmp_path / "pool"
    write_tree(root, TREE)
    cache_path(root).mkdir(parents=True)
    for _ in range(2):
        r, hashed = sync_up_counting(root, s3.endpoint)
        assert not r.failed
    assert r.copied == 0 and hashed == len(TREE)  # nothing cached, so every run re-hashes
    assert bucket_tree(s3, "pool/") == TREE
    err = capfd.readouterr().err
    assert "warning: hash cache" in err and "Traceback" not in err
