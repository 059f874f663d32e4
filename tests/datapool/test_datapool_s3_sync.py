"""The sync engine against a real S3 server (moto on 127.0.0.1): what moves, what does not, and verification."""
from __future__ import annotations

import hashlib
import os

import pytest

from launcher.datapool import IntegrityError, SyncError

from .helpers import BUCKET, bucket_tree, read_tree, run_sync, write_tree

URL = f"s3://{BUCKET}/pool"

TREE = {
    "experiments/a/data/raw/sft/train.jsonl": b'{"x": 1}\n' * 50,
    "experiments/a/data/empty.txt": b"",
    "experiments/a/model/base/config.json": b"{}",
    "experiments/a/reports/metrics.json": b'{"loss": 1.0}',
    "experiments/b/ünïcødé dir/ñested/深い/file name.txt": "héllo wörld".encode(),
    "top.txt": b"top",
}


def test_cold_up_then_noop_reads_no_object(s3, tmp_path):
    root = tmp_path / "pool"
    write_tree(root, TREE)
    r = run_sync("up", root, URL, s3.endpoint)
    assert r.copied == len(TREE) and not r.failed
    assert bucket_tree(s3, "pool/") == TREE
    head = s3.client().head_object(Bucket=BUCKET, Key="pool/top.txt")
    assert head["Metadata"]["sha256"] == hashlib.sha256(b"top").hexdigest()

    s3.mark()
    r = run_sync("up", root, URL, s3.endpoint)
    assert r.copied == 0 and r.plan.unchanged == len(TREE)
    reqs = s3.requests()
    assert s3.object_reads() == []
    assert [m for m, _, _ in reqs] == ["GET"] and "list-type=2" in reqs[0][1]  # one LIST, nothing else

    # Downloading into a fresh root, then syncing down again, reads no object the second time either.
    down = tmp_path / "down"
    run_sync("down", down, URL, s3.endpoint)
    assert read_tree(down) == TREE
    s3.mark()
    r = run_sync("down", down, URL, s3.endpoint)
    assert r.copied == 0 and s3.object_reads() == []


def test_unchanged_tree_is_not_rehashed(s3, tmp_path):
    """The hash cache is keyed by (path, size, mtime_ns): same-size content swapped under a restored mtime
    goes unnoticed, which proves the second sync never read the file."""
    root = tmp_path / "pool"
    write_tree(root, {"a.bin": b"A" * 100})
    run_sync("up", root, URL, s3.endpoint)
    st = os.stat(root / "a.bin")
    (root / "a.bin").write_bytes(b"B" * 100)
    os.utime(root / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run_sync("up", root, URL, s3.endpoint).copied == 0
    os.utime(root / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 1000))  # now it looks touched: re-hashed
    r = run_sync("up", root, URL, s3.endpoint)
    assert r.copied == 1 and bucket_tree(s3, "pool/")["a.bin"] == b"B" * 100


def test_one_changed_file_moves_alone(s3, tmp_path):
    root = tmp_path / "pool"
    write_tree(root, TREE)
    run_sync("up", root, URL, s3.endpoint)
    (root / "experiments/a/reports/metrics.json").write_bytes(b'{"loss": 0.5}')  # same size, new bytes
    s3.mark()
    r = run_sync("up", root, URL, s3.endpoint)
    assert [p for p, _, _ in r.plan.copy] == ["experiments/a/reports/metrics.json"]
    puts = [p for m, p, _ in s3.requests() if m == "PUT"]
    assert puts == ["/pool-bucket/pool/experiments/a/reports/metrics.json"]
    assert bucket_tree(s3, "pool/")["experiments/a/reports/metrics.json"] == b'{"loss": 0.5}'

    down = tmp_path / "down"
    run_sync("down", down, URL, s3.endpoint)
    (down / "top.txt").write_bytes(b"TOP")
    r = run_sync("down", down, URL, s3.endpoint)
    assert [p for p, _, _ in r.plan.copy] == ["top.txt"] and (down / "top.txt").read_bytes() == b"top"


def test_deletes_only_with_delete(s3, tmp_path):
    root = tmp_path / "pool"
    write_tree(root, TREE)
    run_sync("up", root, URL, s3.endpoint)
    (root / "top.txt").unlink()
    r = run_sync("up", root, URL, s3.endpoint)
    assert r.plan.extra == ["top.txt"] and r.deleted == 0
    assert "top.txt" in bucket_tree(s3, "pool/")
    r = run_sync("up", root, URL, s3.endpoint, delete=True)
    assert r.deleted == 1 and bucket_tree(s3, "pool/") == {k: v for k, v in TREE.items() if k != "top.txt"}

    down = tmp_path / "down"
    write_tree(down, {"local-only.txt": b"mine"})
    run_sync("down", down, URL, s3.endpoint)
    assert (down / "local-only.txt").exists()
    run_sync("down", down, URL, s3.endpoint, delete=True)
    assert read_tree(down) == {k: v for k, v in TREE.items() if k != "top.txt"}


def test_multipart_20mb_roundtrip(s3, tmp_path):
    root = tmp_path / "pool"
    big = os.urandom(20 * 1024 * 1024 + 123)
    write_tree(root, {"model/big.bin": big, "model/small.bin": b"s"})
    s3.mark()
    run_sync("up", root, URL, s3.endpoint)
    assert any(m == "POST" and "uploads" in p for m, p, _ in s3.requests())  # CreateMultipartUpload
    head = s3.client().head_object(Bucket=BUCKET, Key="pool/model/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # 8 MiB parts
    assert head["Metadata"]["sha256"] == hashlib.sha256(big).hexdigest()

    down = tmp_path / "down"
    s3.mark()
    run_sync("down", down, URL, s3.endpoint)
    assert (down / "model/big.bin").read_bytes() == big
    ranged = [p for p in s3.object_reads() if p.endswith("big.bin")]
    assert len(ranged) == 3  # parallel ranged GETs, one per part
    s3.mark()
    assert run_sync("down", down, URL, s3.endpoint).copied == 0 and s3.object_reads() == []
    assert run_sync("up", down, URL, s3.endpoint).copied == 0


def test_include_exclude(s3, tmp_path):
    root = tmp_path / "pool"
    write_tree(root, TREE)
    r = run_sync("up", root, URL, s3.endpoint, include=["experiments/a/data", "*.json"],
                 exclude=["*/metrics.json"])
    assert sorted(bucket_tree(s3, "pool/")) == ["experiments/a/data/empty.txt",
                                               "experiments/a/data/raw/sft/train.jsonl",
                                               "experiments/a/model/base/config.json"]
    assert r.unmatched_includes == []
    r = run_sync("up", root, URL, s3.endpoint, include=["nothing/*"], delete=True)
    assert r.unmatched_includes == ["nothing/*"] and r.copied == 0 and r.deleted == 0
    assert len(bucket_tree(s3, "pool/")) == 3


def test_experiment_scope(s3, tmp_path):
    root = tmp_path / "pool"
    write_tree(root, TREE)
    run_sync("up", root, URL, s3.endpoint, sub="experiments/a")
    assert sorted(bucket_tree(s3, "pool/")) == sorted(k for k in TREE if k.startswith("experiments/a/"))


def test_corrupted_download_is_detected_and_not_written(s3, tmp_path):
    c = s3.client()
    good = b"the real bytes" * 100
    # An object whose content no longer matches the sha256 it was written with (bit rot, a bad proxy...).
    c.put_object(Bucket=BUCKET, Key="pool/data/x.bin", Body=good[:-1] + b"!",
                 Metadata={"sha256": hashlib.sha256(good).hexdigest()})
    c.put_object(Bucket=BUCKET, Key="pool/data/ok.bin", Body=b"fine")
    down = tmp_path / "down"
    with pytest.raises(SyncError, match="x.bin.*sha256"):
        run_sync("down", down, URL, s3.endpoint)
    assert read_tree(down) == {"data/ok.bin": b"fine"}  # the good file landed, the bad one did not
    assert not any((down / ".launcher/tmp").iterdir())  # and no temp file was left behind
    assert issubclass(IntegrityError, SyncError)


def test_dry_run_changes_nothing(s3, tmp_path):
    root = tmp_path / "pool"
    write_tree(root, TREE)
    r = run_sync("up", root, URL, s3.endpoint, dry_run=True)
    assert len(r.plan.copy) == len(TREE) and bucket_tree(s3, "pool/") == {}
    assert not (root / ".launcher").exists()
