"""More files than one LIST page and than the transfer window (bench/scale.py's sync row, made small): the listing
comes a page of 1,000 at a time, and a cold upload queues transfers a window at a time, yet moves every file."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from .helpers import BUCKET, run_sync, write_tree

URL = f"s3://{BUCKET}/many"
N = 2_600  # three LIST pages; more than the transfer window below


def _lists(s3) -> list[dict]:
    return [parse_qs(urlsplit(path).query) for m, path, _ in s3.requests() if m == "GET" and "list-type=2" in path]


def test_many_files_up_in_windows_then_a_paginated_noop(s3, tmp_path):
    files = {f"data/shard{i % 7}/f{i:05d}.txt": b"%05d" % i for i in range(N)}
    root = tmp_path / "pool"
    write_tree(root, files)
    r = run_sync("up", root, URL, s3.endpoint)  # workers=8: a window of max(2048, 8 * 128) = 2048 transfers
    assert N > 2048
    assert r.copied == N and not r.failed

    s3.mark()
    r = run_sync("up", root, URL, s3.endpoint)
    assert r.copied == 0 and r.plan.unchanged == N
    pages = _lists(s3)
    assert len(pages) == 3  # 1,000 keys a page: the listing is asked for page by page
    assert "continuation-token" not in pages[0] and all("continuation-token" in q for q in pages[1:])
    assert s3.object_reads() == []

    keys = []
    c = s3.client()
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="many/"):
        keys += [o["Key"] for o in page.get("Contents", ())]
    assert sorted(keys) == sorted(f"many/{k}" for k in files)
    assert c.get_object(Bucket=BUCKET, Key=f"many/data/shard{2599 % 7}/f02599.txt")["Body"].read() == b"02599"
