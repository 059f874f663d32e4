"""What feeds the snapshot's transfer bar on an S3 store (issue 24, item 2): each part the store took, counted
(Store.on_bytes), against the moto server; the bar drawn on a terminal, nothing when not."""
from __future__ import annotations

import io
import os
from pathlib import Path

from launcher import progress
from launcher.datapool.base import Entry
from launcher.datapool.s3 import S3Store
from launcher.snapshot import Snapshot, upload

from .helpers import BUCKET

MIB = 1 << 20


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_each_part_is_counted_once_the_store_has_it(s3, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * MIB))  # three parts of 5 MiB (S3's smallest but the last)
    counted: list[int] = []
    store = S3Store(BUCKET, "pool", endpoint_url=s3.endpoint, threshold=5 * MIB, part_size=5 * MIB, workers=2)
    store.on_bytes = counted.append
    try:
        store.put_file(src, "big.bin", Entry("big.bin", src.stat().st_size, src.stat().st_mtime))
        small = tmp_path / "small.bin"
        small.write_bytes(b"x" * 1000)
        store.put_file(small, "small.bin", Entry("small.bin", 1000, small.stat().st_mtime))
    finally:
        store.close()
    assert sorted(counted) == sorted([5 * MIB, 5 * MIB, MIB, 1000])


def _snapshot(tmp_path: Path, size: int) -> Snapshot:
    import hashlib

    path = tmp_path / "snap.tar.gz"
    path.write_bytes(os.urandom(size))
    return Snapshot(sha256=hashlib.sha256(path.read_bytes()).hexdigest(), size=size, files=1, path=path)


def test_the_snapshot_upload_draws_a_bar_on_a_terminal_only(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    out = Tty()
    with progress.showing(progress.Reporter(out)):
        assert upload(_snapshot(tmp_path, 2 * MIB), f"s3://{BUCKET}/pool", endpoint_url=s3.endpoint) == 2 * MIB
    assert "2.1/2.1 MB" in out.getvalue(), out.getvalue()[-500:]
    piped = io.StringIO()
    (tmp_path / "again").mkdir()
    with progress.showing(progress.Reporter(piped)):
        upload(_snapshot(tmp_path / "again", MIB), f"s3://{BUCKET}/pool", endpoint_url=s3.endpoint)
    assert "MB" not in piped.getvalue() and "snapshot" in piped.getvalue()  # the phase line alone
