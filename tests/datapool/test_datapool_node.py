"""NodeDatapool, as the agent drives it: pull inputs, push a checkpoint while a real script runs, outputs after,
result.json last."""
from __future__ import annotations

import subprocess
import sys
import time

from launcher.datapool.node import NodeDatapool

from .helpers import BUCKET, bucket_tree, read_tree, write_tree

SCRIPT = r"""
import os, sys, time
from pathlib import Path
exp = Path(sys.argv[1])
ckpt = exp / "model/sft_checkpoints/checkpoint-1"
ckpt.mkdir(parents=True, exist_ok=True)
(ckpt / "weights.bin").write_bytes(b"step-1" * 1000)
(exp / "reports/metrics.jsonl").write_text('{"step": 1}\n')
go = Path(sys.argv[2])
for _ in range(600):  # keeps running until the test saw the checkpoint in the store
    if go.exists():
        break
    time.sleep(0.05)
(exp / "model/hf").mkdir(parents=True, exist_ok=True)
(exp / "model/hf/final.bin").write_bytes(b"final")
"""


def test_node_pull_push_during_and_after(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)  # how a node reaches an S3-compatible store
    c = s3.client()
    store = f"s3://{BUCKET}/pool"
    seed = tmp_path / "seed"
    write_tree(seed, {"experiments/e1/data/raw/sft/train.jsonl": b"x\n", "experiments/e1/model/base/w.bin": b"w",
                      "experiments/e1/reports/old-report.txt": b"not an input",
                      "experiments/e2/data/other.txt": b"another experiment"})
    for p in seed.rglob("*"):
        if p.is_file():
            c.put_object(Bucket=BUCKET, Key=f"pool/{p.relative_to(seed).as_posix()}", Body=p.read_bytes())

    root = tmp_path / "node"
    exp = root / "experiments/e1"
    (exp / "reports/jobs/j1").mkdir(parents=True)
    pool = NodeDatapool(store, root, "e1", push_interval=0.2)
    pool.pull_inputs()
    assert read_tree(root) == {"experiments/e1/data/raw/sft/train.jsonl": b"x\n",
                               "experiments/e1/model/base/w.bin": b"w"}

    go = tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(exp), str(go)])
    pool.start_pushing([exp / "model/sft_checkpoints", exp / "reports"])
    key = "experiments/e1/model/sft_checkpoints/checkpoint-1/weights.bin"
    try:
        deadline = time.monotonic() + 60
        while key not in bucket_tree(s3, "pool/") and time.monotonic() < deadline:
            time.sleep(0.2)
        seen_while_running = proc.poll() is None
        in_store = bucket_tree(s3, "pool/")
    finally:
        go.touch()
        proc.wait(60)
    assert in_store.get(key) == b"step-1" * 1000
    assert seen_while_running  # pushed while the script was still running
    assert "experiments/e1/model/hf/final.bin" not in in_store

    (exp / "reports/jobs/j1/log.txt").write_text("log\n")
    (exp / "reports/jobs/j1/result.json").write_text('{"exit_code": 0}')
    pool.final_push()
    after = bucket_tree(s3, "pool/")
    assert after["experiments/e1/model/hf/final.bin"] == b"final"
    assert after["experiments/e1/reports/jobs/j1/log.txt"] == b"log\n"
    assert "experiments/e1/reports/jobs/j1/result.json" not in after  # result.json comes last, alone
    pool.push_file(exp / "reports/jobs/j1/result.json")
    assert bucket_tree(s3, "pool/")["experiments/e1/reports/jobs/j1/result.json"] == b'{"exit_code": 0}'
    assert not pool.push_errors


def test_no_store_moves_nothing(tmp_path):
    root = tmp_path / "node"
    write_tree(root, {"experiments/e1/model/x.bin": b"x"})
    pool = NodeDatapool(None, root, "e1", push_interval=0.05)
    pool.pull_inputs()
    pool.start_pushing([root / "experiments/e1/model"])
    pool.final_push()
    pool.push_file(root / "experiments/e1/model/x.bin")
    assert read_tree(root) == {"experiments/e1/model/x.bin": b"x"}
    assert not (root / ".launcher").exists()
