"""`launch --datapool s3://...` end to end: the real CLI, agent, sync engine and a moto server.

The agent pulls the experiment's inputs before the script starts, pushes a checkpoint while the script is still
running, pushes outputs (not work in progress) after it exits, and result.json last.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .helpers import BUCKET

SCRIPT = """
import os, sys, time
from pathlib import Path
exp = Path(os.environ["EXPERIMENT_DIR"])
# Inputs were pulled before we started.
print("input:", (exp / "data/raw/sft/train.jsonl").read_text().strip())
print("base:", (exp / "model/base/tiny/config.json").read_text().strip())
ckpt = Path(os.environ["CHECKPOINT_DIR"]) / "checkpoint-1"
ckpt.mkdir(parents=True)
(ckpt / "weights.bin").write_bytes(b"w" * 1000)
go = Path(sys.argv[1])
for _ in range(600):  # wait until the test saw the checkpoint reach the store
    if go.exists():
        break
    time.sleep(0.1)
(exp / "model/hf/final").mkdir(parents=True)
(exp / "model/hf/final/model.bin").write_bytes(b"final")
(exp / "data/tokenized/sft/ready").mkdir(parents=True)
(exp / "data/tokenized/sft/ready/shard-0.arrow").write_bytes(b"shard")
(exp / "data/tokenized/sft/.half.tmp-1").mkdir(parents=True)
(exp / "data/tokenized/sft/.half.tmp-1/shard-0.arrow").write_bytes(b"partial")
print("done", flush=True)
"""


def _keys(client, prefix):
    out = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"][len(prefix):] for o in out.get("Contents", [])}


def test_agent_pulls_pushes_while_running_and_result_last(s3, aws_env, tmp_path):
    client = s3.client()
    store = f"{BUCKET}/pool"
    exp = "pool/experiments/e2e/"
    client.put_object(Bucket=BUCKET, Key=exp + "data/raw/sft/train.jsonl", Body=b'{"text": "hello"}\n')
    client.put_object(Bucket=BUCKET, Key=exp + "model/base/tiny/config.json", Body=b'{"hidden": 64}')
    client.put_object(Bucket=BUCKET, Key=exp + "reports/unrelated.txt", Body=b"not an input")

    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(SCRIPT)
    go = project / "go"
    env = {**os.environ, **aws_env, "AWS_ENDPOINT_URL": s3.endpoint, "LAUNCHER_HOME": str(tmp_path / "home")}
    repo = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher", "--experiment", "e2e", "--datapool", f"s3://{store}",
         "--push-interval", "1", "train.py", str(go)],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while "model/train_checkpoints/checkpoint-1/weights.bin" not in _keys(client, exp):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, f"checkpoint never reached the store: {sorted(_keys(client, exp))}"
            time.sleep(0.2)
        # While the script still runs: the checkpoint is up, no result yet.
        assert not any(k.endswith("result.json") for k in _keys(client, exp))
        go.touch()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "input: {\"text\": \"hello\"}" in out and "base: {\"hidden\": 64}" in out
    local_exp = project / "datapool" / "experiments" / "e2e"
    assert not (local_exp / "reports" / "unrelated.txt").exists()  # only data/ and model/base/ are inputs

    keys = _keys(client, exp)
    assert "model/hf/final/model.bin" in keys
    assert "data/tokenized/sft/ready/shard-0.arrow" in keys
    assert not any(".half.tmp-1" in k for k in keys), "work in progress was pushed"
    (job_dir,) = [k.split("/")[2] for k in keys if k.endswith("result.json")]
    result = json.loads(client.get_object(Bucket=BUCKET, Key=f"{exp}reports/jobs/{job_dir}/result.json")["Body"].read())
    assert result["exit_code"] == 0 and result["reason"] == "exited"
    log = client.get_object(Bucket=BUCKET, Key=f"{exp}reports/jobs/{job_dir}/log.txt")["Body"].read().decode()
    assert "done" in log


def _launch(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_store_problems_are_refused_before_anything_starts(s3, aws_env, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('ran')\n")
    home = tmp_path / "home"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, **aws_env, "AWS_ENDPOINT_URL": s3.endpoint, "LAUNCHER_HOME": str(home),
           "PYTHONPATH": str(repo)}
    no_creds = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    for args, run_env, expect in [
        (["--datapool", "s3://no-such-bucket/pool", "train.py"], env, "bucket 'no-such-bucket' does not exist"),
        (["--datapool", f"s3://{BUCKET}/pool", "train.py"], no_creds, "no AWS credentials"),
    ]:
        out = _launch(args, run_env, project)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("error: ") and expect in out.stderr and len(out.stderr.splitlines()) == 1
        assert not (home / "jobs.db").exists() and not (project / "datapool").exists()
    assert _keys(s3.client(), "") == set()


def test_dry_run_shows_what_is_pulled_and_pushed(s3, aws_env, tmp_path):
    import yaml

    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('ran')\n")
    env = {**os.environ, **aws_env, "LAUNCHER_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = _launch(["--dry-run", "-o", "yaml", "--experiment", "e2e", "--datapool", f"s3://{BUCKET}/pool", "train.py"], env, project)
    assert out.returncode == 0, out.stderr
    pool = yaml.safe_load(out.stdout)["datapool"]
    assert pool["store"] == f"s3://{BUCKET}/pool" and pool["root"] == str(project / "datapool")
    assert pool["pull"] == ["experiments/e2e/data/", "experiments/e2e/model/base/"]
    assert pool["push"] == ["experiments/e2e/model/", "experiments/e2e/data/tokenized/", "experiments/e2e/reports/"]
    assert not (project / "datapool").exists() and not (tmp_path / "home").exists()
