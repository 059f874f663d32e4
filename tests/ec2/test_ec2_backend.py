"""The ec2 backend against a moto server, with the node simulator playing the instances (nodesim.py): the rendered
user-data really runs the job, the result and checkpoints land in S3, and the instance terminates itself."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from launcher.registry import Registry

from .ec2moto import GPU_AMI_PARAM, seed_ami_parameter
from .nodesim import NodeSimulator

BUCKET = "ec2-pool"

WORK = """
import os, sys, time
from pathlib import Path
ckpt = Path(os.environ["CHECKPOINT_DIR"]) / "checkpoint-1"
ckpt.mkdir(parents=True, exist_ok=True)
(ckpt / "weights.bin").write_bytes(b"w" * 1000)
print("trained on", os.environ["LAUNCH_BACKEND"], flush=True)
time.sleep(float(os.environ.get("SLEEP", "0")))
"""

SLOW = """
import os, signal, sys, time
from pathlib import Path
def stop(signum, frame):
    Path(os.environ["MARKER"]).write_text("SIGTERM")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("started", flush=True)
for _ in range(1200):
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def cloud(ec2_moto, tmp_path_factory):
    """The account: a bucket, the AMI parameter, and the hosts (a node simulator for the whole module)."""
    ec2_moto.client("s3").create_bucket(Bucket=BUCKET)
    seed_ami_parameter(ec2_moto.client("ec2"), ec2_moto.client("ssm"))
    scratch = tmp_path_factory.mktemp("hosts")
    import os

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **ec2_moto.aws_env(scratch)}
    with NodeSimulator(ec2_moto.endpoint, ec2_moto.region, scratch, env) as sim:
        yield sim


@pytest.fixture
def ec2_launch(cloud, ec2_moto, ec2_env, project, tmp_path):
    profile = tmp_path / "ec2.yaml"
    profile.write_text(yaml.safe_dump({"backend": "ec2", "ec2": {"region": "us-east-1", "ami": GPU_AMI_PARAM,
                                                                 "python": sys.executable}}))
    flags = ["--profile", str(profile), "--gpu", "A10G", "--datapool", f"s3://{BUCKET}/{tmp_path.name}",
             "--endpoint-url", ec2_moto.endpoint, "--push-interval", "1s"]

    def run(*args, popen=False, **kw):
        argv = [sys.executable, "-m", "launcher", *(flags if args and args[0] not in
                                                    ("status", "logs", "down", "jobs") else []), *args]
        if popen:
            return subprocess.Popen(argv, cwd=project, env=ec2_env, **kw)
        return subprocess.run(argv, cwd=project, env=ec2_env, capture_output=True, text=True, timeout=180, **kw)

    run.prefix = tmp_path.name
    return run


def _instance(ec2_moto, env_home: str):
    rec = Registry(Path(env_home)).list()[0]
    inst = ec2_moto.client("ec2").describe_instances(InstanceIds=[rec.handle["instance"]])["Reservations"][0]
    return rec, inst["Instances"][0]


def _wait(pred, timeout=90):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.3)
    return False


def _s3_json(ec2_moto, key):
    return json.loads(ec2_moto.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_job_runs_from_user_data_pushes_to_s3_and_the_instance_terminates(ec2_launch, ec2_moto, ec2_env, project):
    (project / "work.py").write_text(WORK)
    out = ec2_launch("work.py")
    assert out.returncode == 0, out.stderr
    assert "trained on ec2" in out.stdout  # streamed from the store's copy of the log
    rec, inst = _instance(ec2_moto, ec2_env["LAUNCHER_HOME"])
    assert rec.state == "succeeded"
    exp = f"{ec2_launch.prefix}/experiments/default"
    result = _s3_json(ec2_moto, f"{exp}/reports/jobs/{rec.id}/result.json")
    assert result["reason"] == "exited" and result["exit_code"] == 0 and result["backend"] == "ec2"
    body = ec2_moto.client("s3").get_object(Bucket=BUCKET, Key=f"{exp}/model/work_checkpoints/checkpoint-1/"
                                                                 "weights.bin")["Body"].read()
    assert body == b"w" * 1000
    # Teardown layer 1: the node shut itself down, which terminates it.
    assert _wait(lambda: _instance(ec2_moto, ec2_env["LAUNCHER_HOME"])[1]["State"]["Name"] == "terminated")
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["launcher:job"] == rec.id and float(tags["launcher:deadline"]) == rec.deadline


def test_capacity_short_in_one_zone_moves_to_the_next(ec2_launch, ec2_moto, ec2_env, project):
    (project / "work.py").write_text(WORK)
    ec2_moto.set_capacity(ice_azs=["us-east-1a"])
    out = ec2_launch("work.py")
    assert out.returncode == 0, out.stderr
    calls = ec2_moto.run_instances_calls()
    assert [(c["az"], c["error"]) for c in calls] == [("us-east-1a", "InsufficientInstanceCapacity"),
                                                       ("us-east-1b", None)]
    rec, _ = _instance(ec2_moto, ec2_env["LAUNCHER_HOME"])
    assert rec.handle["zone"] == "us-east-1b"


def test_no_capacity_anywhere_is_one_line_and_leaves_nothing(ec2_launch, ec2_moto, ec2_env, project):
    (project / "work.py").write_text(WORK)
    ec2_moto.set_capacity(ice_azs=[f"us-east-1{z}" for z in "abcdef"])
    out = ec2_launch("work.py")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "no capacity for g5.xlarge in us-east-1: tried us-east-1a (InsufficientInstanceCapacity)" in out.stderr
    assert len(ec2_moto.run_instances_calls()) == 6  # one attempt per zone: botocore's retries are off
    live = ec2_moto.client("ec2").describe_instances(Filters=[
        {"Name": "tag:launcher:job", "Values": [Registry(Path(ec2_env["LAUNCHER_HOME"])).list()[0].id]}])
    assert all(i["State"]["Name"] == "terminated" for r in live["Reservations"] for i in r["Instances"])


def test_quota_error_names_the_quota_and_how_to_raise_it(ec2_launch, ec2_moto, project):
    (project / "work.py").write_text(WORK)
    ec2_moto.set_capacity(vcpu_limit=True)
    out = ec2_launch("work.py")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "L-DB2E81BA" in out.stderr and "request-service-quota-increase" in out.stderr


def test_down_cancels_and_the_instance_is_gone(ec2_launch, ec2_moto, ec2_env, project, tmp_path):
    (project / "slow.py").write_text(SLOW)
    marker = tmp_path / "marker.txt"
    job_id = ec2_launch("--detach", "--env", f"MARKER={marker}", "slow.py").stdout.strip()
    assert _wait(lambda: "started" in ec2_launch("logs", job_id).stdout)
    down = ec2_launch("down", job_id)
    assert down.returncode == 0 and down.stdout.strip() == f"{job_id}: cancelled", down.stdout + down.stderr
    assert marker.read_text() == "SIGTERM"  # the agent saw the store's cancel marker and stopped the script
    assert _wait(lambda: _instance(ec2_moto, ec2_env["LAUNCHER_HOME"])[1]["State"]["Name"] == "terminated")


def test_client_killed_mid_run_the_node_still_ends_itself(ec2_launch, ec2_moto, ec2_env, project, tmp_path):
    (project / "slow.py").write_text(SLOW)
    client = ec2_launch("--max-runtime", "6s", "--grace-period", "2s", "--env", f"MARKER={tmp_path / 'm'}",
                        "slow.py", popen=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert b"started" in client.stdout.readline()
    client.send_signal(signal.SIGKILL)
    client.wait()
    rec, _ = _instance(ec2_moto, ec2_env["LAUNCHER_HOME"])
    # Nobody is watching: the agent's deadline stops the script, the node shuts down, the instance terminates.
    assert _wait(lambda: _instance(ec2_moto, ec2_env["LAUNCHER_HOME"])[1]["State"]["Name"] == "terminated")
    assert ec2_launch("status", rec.id).stdout.startswith("timeout")
    assert ec2_launch("down", "--expired", "--backend", "ec2", "--region", "us-east-1").stdout.strip() \
        in ("no expired jobs",)


def test_sweeper_finds_tagged_instances_no_registry_knows(ec2_launch, ec2_moto):
    """Teardown layer 4 for a leak from another machine: only the tags say whose it is and until when."""
    from .ec2moto import some_ami

    ec2 = ec2_moto.client("ec2")
    tags = [{"Key": "launcher:job", "Value": "leak-000001"}, {"Key": "launcher:deadline", "Value": str(int(time.time()) - 60)}]
    leaked = ec2.run_instances(ImageId=some_ami(ec2), InstanceType="g5.xlarge", MinCount=1, MaxCount=1,
                               TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"][0]
    fresh_tags = [{"Key": "launcher:job", "Value": "fresh-000001"},
                  {"Key": "launcher:deadline", "Value": str(int(time.time()) + 3600)}]
    fresh = ec2.run_instances(ImageId=some_ami(ec2), InstanceType="g5.xlarge", MinCount=1, MaxCount=1,
                              TagSpecifications=[{"ResourceType": "instance", "Tags": fresh_tags}])["Instances"][0]
    dry = ec2_launch("down", "--expired", "--backend", "ec2", "--region", "us-east-1", "--dry-run")
    assert dry.returncode == 0 and leaked["InstanceId"] in dry.stdout and fresh["InstanceId"] not in dry.stdout
    state = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert state[leaked["InstanceId"]] != "terminated"
    swept = ec2_launch("down", "--expired", "--backend", "ec2", "--region", "us-east-1")
    assert swept.returncode == 0 and leaked["InstanceId"] in swept.stdout, swept.stderr
    state = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert state[leaked["InstanceId"]] in ("shutting-down", "terminated")
    assert state[fresh["InstanceId"]] not in ("shutting-down", "terminated")
    ec2.terminate_instances(InstanceIds=[fresh["InstanceId"]])


def test_terminate_after_confirms_the_instance_is_gone_and_prints_the_cost(ec2_launch, project):
    (project / "work.py").write_text(WORK)
    out = ec2_launch("--terminate-after", "work.py")
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stderr.splitlines() if ln.startswith("[launcher] instance ")]
    assert line and " terminated; ran " in line[0] and "at $1.006/h on-demand" in line[0], out.stderr
    refused = ec2_launch("--terminate-after", "--detach", "work.py")
    assert refused.returncode == 2 and "drop --detach" in refused.stderr


def test_client_killed_and_node_hung_the_sweeper_ends_it_after_the_deadline(ec2_launch, ec2_moto, ec2_env, cloud,
                                                                           project, monkeypatch):
    """The worst case: nobody watches and the node never runs its user-data (so no agent, no dead-man switch).
    Only the tags are left, and after the deadline `launch down --expired --backend ec2` ends it."""
    from launcher import api

    cloud.hang.add("stuck")
    (project / "stuck.py").write_text(WORK)
    client = ec2_launch("--max-runtime", "1m", "stuck.py", popen=True, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
    assert client.stderr.readline().startswith(b"[launcher] job stuck-")  # submitted: the instance exists
    client.send_signal(signal.SIGKILL)
    client.wait()
    rec, inst = _instance(ec2_moto, ec2_env["LAUNCHER_HOME"])
    assert inst["State"]["Name"] in ("pending", "running")
    for k in [k for k in ec2_env if k.startswith("AWS_") or k == "LAUNCHER_HOME"]:
        monkeypatch.setenv(k, ec2_env[k])
    assert api.down_expired(now=rec.deadline - 1, backend="ec2", region="us-east-1") == []  # not yet
    swept = api.down_expired(now=rec.deadline + 1, backend="ec2", region="us-east-1", dry_run=False)
    assert any(inst["InstanceId"] in line for line in swept), swept
    live = ec2_moto.client("ec2").describe_instances(Filters=[
        {"Name": "tag:launcher:job", "Values": [rec.id]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
    assert live["Reservations"] == []


def test_setup_failure_reaches_the_store_and_the_node_terminates(ec2_launch, ec2_moto, ec2_env, project, tmp_path):
    """No Python with launcher's dependencies on the node: the bootstrap reports through a presigned PUT (no
    credentials, no AWS tools needed), then shuts the node down."""
    (project / "work.py").write_text(WORK)
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"backend": "ec2", "ec2": {"region": "us-east-1", "ami": GPU_AMI_PARAM,
                                                                "python": "/nonexistent/python3"}}))
    out = ec2_launch("--profile", str(broken), "work.py")
    assert out.returncode == 1, out.stderr
    rec, _ = _instance(ec2_moto, ec2_env["LAUNCHER_HOME"])
    result = _s3_json(ec2_moto, f"{ec2_launch.prefix}/experiments/default/reports/jobs/{rec.id}/result.json")
    assert result["reason"] == "setup_failed" and "step 'python'" in result["error"], result
    status = ec2_launch("status", rec.id).stdout
    assert status.startswith("failed") and "/nonexistent/python3" in status, status
    assert _wait(lambda: _instance(ec2_moto, ec2_env["LAUNCHER_HOME"])[1]["State"]["Name"] == "terminated")
