"""No --datapool on ec2: the job uses a bucket `launcher-<account>-<region>` made on first use, private (public
access blocked), encrypted, and whose lifecycle rule expires only the job records, which carry its tag (issue 24,
item 5). moto plays the account, the node simulator the instance."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from launcher.datapool.records import RECORD_DAYS, RECORD_TAG_KEY, RECORD_TAG_VALUE
from launcher.registry import Registry

from .conftest import simulated_nodes
from .ec2moto import GPU_AMI_PARAM

ACCOUNT = "123456789012"  # moto's
BUCKET = f"launcher-{ACCOUNT}-us-east-1"

WORK = """
import os, pathlib
ckpt = pathlib.Path(os.environ["CHECKPOINT_DIR"]) / "checkpoint-1" / "weights.bin"
ckpt.parent.mkdir(parents=True, exist_ok=True)
ckpt.write_bytes(b"w" * 100)
print("trained", flush=True)
"""


@pytest.fixture(scope="module")
def cloud(ec2_moto, tmp_path_factory):
    yield from simulated_nodes(ec2_moto, tmp_path_factory)


@pytest.fixture
def launch_ec2(cloud, ec2_env, project, tmp_path):
    profile = tmp_path / "ec2.yaml"
    profile.write_text(yaml.safe_dump({"backend": "ec2", "ec2": {"region": "us-east-1", "ami": GPU_AMI_PARAM,
                                                                 "python": sys.executable}}))
    env = {k: v for k, v in ec2_env.items() if k not in ("LAUNCHER_DATAPOOL", "LAUNCH_DATAPOOL")}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=180)

    run.profile = str(profile)
    run.home = env["LAUNCHER_HOME"]
    return run


def _buckets(ec2_moto) -> list[str]:
    return [b["Name"] for b in ec2_moto.client("s3").list_buckets()["Buckets"]]


def _tags(s3, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]}


def test_check_names_the_default_store_and_a_dry_run_creates_nothing(launch_ec2, ec2_moto, project):
    (project / "work.py").write_text(WORK)
    out = launch_ec2("check", "-b", "ec2", "--region", "us-east-1")
    line = next(ln.strip() for ln in out.stdout.splitlines() if "default store" in ln)
    assert line.startswith("✓") and f"s3://{BUCKET} (created on first launch" in line, out.stdout
    plan = launch_ec2("--profile", launch_ec2.profile, "--gpu", "A10G", "--dry-run", "-o", "json", "work.py")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["datapool"]["store"] == "s3://launcher-<account>-us-east-1"  # offline
    assert BUCKET not in _buckets(ec2_moto)


def test_a_launch_without_a_datapool_makes_a_private_bucket_whose_job_records_expire(launch_ec2, ec2_moto, project):
    (project / "work.py").write_text(WORK)
    out = launch_ec2("--profile", launch_ec2.profile, "--gpu", "A10G", "--push-interval", "1s", "-y", "work.py")
    assert out.returncode == 0, out.stderr
    assert f"created the ec2 default store s3://{BUCKET}" in out.stderr and "trained" in out.stdout
    s3 = ec2_moto.client("s3")
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block[k] for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"))
    sse = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    [rule] = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert rule["Status"] == "Enabled" and rule["Expiration"] == {"Days": RECORD_DAYS}
    assert rule["Filter"] == {"Tag": {"Key": RECORD_TAG_KEY, "Value": RECORD_TAG_VALUE}}
    # The job's record (written by the node's agent) expires; the datapool (its checkpoint, the code) never does.
    job_id = Registry(__import__("pathlib").Path(launch_ec2.home)).list()[0].id
    exp = "experiments/default"
    for name in ("result.json", "log.txt"):
        assert _tags(s3, f"{exp}/reports/jobs/{job_id}/{name}") == {RECORD_TAG_KEY: RECORD_TAG_VALUE}, name
    assert _tags(s3, f"{exp}/model/work_checkpoints/checkpoint-1/weights.bin") == {}
    code = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="code/")["Contents"]]
    assert code and all(_tags(s3, k) == {} for k in code)
    # The next job finds it: made once.
    again = launch_ec2("--profile", launch_ec2.profile, "--gpu", "A10G", "--push-interval", "1s", "-y", "work.py")
    assert again.returncode == 0 and "created the" not in again.stderr, again.stderr
