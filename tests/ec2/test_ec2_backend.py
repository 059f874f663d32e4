"""The ec2 backend against a moto server, with the node simulator playing the instances (nodesim.py): the rendered
user-data really runs the job, the result and checkpoints land in S3, and the instance terminates itself."""
from __future__ import annotations

import base64
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from launcher.backends.ec2.options import Ec2Options
from launcher.progress import without_phases
from launcher.registry import Registry

from ..resumable import STEPS
from ..waiting import wait_for
from .conftest import simulated_nodes
from .ec2moto import GPU_AMI_PARAM

_wait = functools.partial(wait_for, timeout=90, poll=0.3)  # a node boots, then pushes

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
    yield from simulated_nodes(ec2_moto, tmp_path_factory)


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
    run.flags = flags
    return run


def _instance(ec2_moto, env_home: str):
    rec = Registry(Path(env_home)).list()[0]
    inst = ec2_moto.client("ec2").describe_instances(InstanceIds=[rec.handle["instance"]])["Reservations"][0]
    return rec, inst["Instances"][0]


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


def _wire(params: dict) -> dict:
    """RunInstances as botocore puts it on the wire (the form ice_server.py records); boto3 base64s UserData."""
    import botocore.serialize
    import botocore.session

    model = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances")
    params = {**params, "UserData": base64.b64encode(params["UserData"].encode()).decode()}
    body = botocore.serialize.create_serializer("ec2").serialize_to_request(params, model)["body"]
    return {k: str(v) for k, v in body.items()}


def test_what_start_sends_is_the_rendered_request_filled(cloud, ec2_moto, ec2_env, project, monkeypatch):
    """One render: each RunInstances on the wire is `plan.request` (what --dry-run prints) with the slots start
    filled, the zone of its try included; nothing rendered again or read back out of it."""
    from launcher import api
    from launcher.backends.ec2 import request
    from launcher.backends.slots import fill
    from launcher.job import Job

    for k in [k for k in ec2_env if k.startswith("AWS_") or k == "LAUNCHER_HOME"]:
        monkeypatch.setenv(k, ec2_env[k])
    fills = []
    monkeypatch.setattr(request, "fill", lambda req, values: fills.append((req, values)) or fill(req, values))
    ec2_moto.set_capacity(ice_azs=["us-east-1a"])
    (project / "work.py").write_text(WORK)
    job = Job(script="work.py", workdir=str(project), backend="ec2", gpu="A10G", push_interval="1s",
              datapool=f"s3://{BUCKET}/{project.parent.name}", endpoint_url=ec2_moto.endpoint,
              ec2={"ami": GPU_AMI_PARAM, "python": sys.executable})
    run = api.launch(job, detach=True)
    calls = ec2_moto.run_instances_calls()
    assert [c["az"] for c in calls] == ["us-east-1a", "us-east-1b"] and len(fills) == 2
    for call, (req, values) in zip(calls, fills):
        assert req is run.plan.request
        assert set(values) == {"region", "image_id", "security_group", "snapshot_url", "result_url", "zone"}
        assert call["form"] == _wire(fill(run.plan.request, values)["RunInstances"])
    assert _wait(lambda: api.status(run.job_id)[0] == "succeeded")


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
    # One line besides the launch's phases (the snapshot went up before RunInstances said no)
    assert out.returncode == 75 and without_phases(out.stderr).count("\n") == 1, out.stderr  # EX_TEMPFAIL: try later
    assert "no capacity for g5.xlarge in us-east-1: tried us-east-1a (InsufficientInstanceCapacity)" in out.stderr
    assert len(ec2_moto.run_instances_calls()) == 6  # one attempt per zone: botocore's retries are off
    live = ec2_moto.client("ec2").describe_instances(Filters=[
        {"Name": "tag:launcher:job", "Values": [Registry(Path(ec2_env["LAUNCHER_HOME"])).list()[0].id]}])
    assert all(i["State"]["Name"] == "terminated" for r in live["Reservations"] for i in r["Instances"])


def test_quota_error_names_the_quota_and_how_to_raise_it(ec2_launch, ec2_moto, project):
    (project / "work.py").write_text(WORK)
    ec2_moto.set_capacity(vcpu_limit=True)
    out = ec2_launch("work.py")
    assert out.returncode == 75 and without_phases(out.stderr).count("\n") == 1, out.stderr
    assert "L-DB2E81BA" in out.stderr and "request-service-quota-increase" in out.stderr


def test_first_spot_request_without_the_service_linked_role_says_how_to_make_it(ec2_launch, ec2_moto, ec2_env,
                                                                               project):
    (project / "work.py").write_text(WORK)
    ec2_moto.set_rules([{"code": "AuthFailure.ServiceLinkedRoleCreationNotPermitted", "status": 403, "market": "spot",
                         "message": "The provided credentials do not have permission to create the service-linked "
                                    "role for EC2 Spot Instances."}])
    out = ec2_launch("--spot", "work.py")
    assert out.returncode == 2 and without_phases(out.stderr).count("\n") == 1, out.stderr
    assert "create-service-linked-role --aws-service-name spot.amazonaws.com" in out.stderr
    rec = Registry(Path(ec2_env["LAUNCHER_HOME"])).list()[0]
    assert rec.state == "failed" and "instance" not in rec.handle


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
    client = ec2_launch("--max-runtime", "15s", "--grace-period", "2s", "--env", f"MARKER={tmp_path / 'm'}",
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
    said = iter(client.stderr.readline, b"")  # the launch's phases (snapshot, request sent) come first
    assert any(line.startswith(b"[launcher] job stuck-") for line in said)  # submitted: the instance exists
    client.send_signal(signal.SIGKILL)
    client.wait()
    rec, inst = _instance(ec2_moto, ec2_env["LAUNCHER_HOME"])
    assert inst["State"]["Name"] in ("pending", "running")
    for k in [k for k in ec2_env if k.startswith("AWS_") or k == "LAUNCHER_HOME"]:
        monkeypatch.setenv(k, ec2_env[k])
    assert api.down_expired(now=rec.deadline - 1, backend="ec2", options=Ec2Options(region="us-east-1")) == []  # not yet
    swept = api.down_expired(now=rec.deadline + 1, backend="ec2", options=Ec2Options(region="us-east-1"),
                             dry_run=False)
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




def test_spot_preemption_relaunches_and_resumes_from_the_pushed_checkpoint(ec2_launch, ec2_moto, ec2_env, cloud,
                                                                           project):
    (project / "steps.py").write_text(STEPS)
    out = ec2_launch("--detach", "--spot", "--max-restarts", "1", "steps.py")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    rec = Registry(Path(ec2_env["LAUNCHER_HOME"])).get(job_id)
    first = rec.handle["instance"]
    s3 = ec2_moto.client("s3")
    ckpts = f"{ec2_launch.prefix}/experiments/default/model/steps_checkpoints/"

    def pushed_steps():
        return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=ckpts).get("Contents", [])]

    assert _wait(lambda: len(pushed_steps()) >= 3), "no checkpoint reached the store"
    cloud.preempt(first)
    # Nobody here looks at it (no status, no logs: the registry is read directly): the watcher the detached launch
    # left behind relaunches it (same id, attempt 2, a new instance, the first one gone) and records the end.
    registry = Registry(Path(ec2_env["LAUNCHER_HOME"]))
    assert _wait(lambda: registry.get(job_id).handle.get("attempt") == 2, timeout=60)
    assert _wait(lambda: registry.get(job_id).state == "succeeded", timeout=120), registry.get(job_id)
    watch_log = Path(ec2_env["LAUNCHER_HOME"]) / "jobs" / job_id / "watch.log"
    assert _wait(lambda: f"{job_id} succeeded" in watch_log.read_text(), timeout=30), watch_log.read_text()
    assert "relaunched as attempt 2 of 2" in watch_log.read_text()
    status = ec2_launch("status", job_id).stdout
    assert "attempt: 2 of at most 2" in status
    rec = Registry(Path(ec2_env["LAUNCHER_HOME"])).get(job_id)
    second = rec.handle["instance"]
    assert second != first
    states = {i["InstanceId"]: i["State"]["Name"] for r in ec2_moto.client("ec2").describe_instances(
        Filters=[{"Name": "tag:launcher:job", "Values": [job_id]}])["Reservations"] for i in r["Instances"]}
    assert set(states) == {first, second}
    assert _wait(lambda: all(i["State"]["Name"] == "terminated" for r in ec2_moto.client("ec2").describe_instances(
        InstanceIds=[first, second])["Reservations"] for i in r["Instances"]))
    # The first attempt's result is kept beside the new one; the log goes on across attempts.
    exp = f"{ec2_launch.prefix}/experiments/default/reports/jobs/{job_id}"
    assert _s3_json(ec2_moto, f"{exp}/result.attempt-1.json")["reason"] == "preempted"
    assert _s3_json(ec2_moto, f"{exp}/result.json")["reason"] == "exited"
    log = ec2_launch("logs", job_id).stdout
    assert "attempt 1 starts at step 0" in log
    resumed = int(log.split("attempt 2 starts at step ")[1].split()[0])
    assert resumed >= 3, log  # it went on from the checkpoints pushed before the preemption
    assert "all steps done" in log


def test_preempted_with_no_restarts_left_stays_preempted(ec2_launch, ec2_moto, ec2_env, cloud, project):
    (project / "steps.py").write_text(STEPS)
    job_id = ec2_launch("--detach", "--spot", "steps.py").stdout.strip()
    rec = Registry(Path(ec2_env["LAUNCHER_HOME"])).get(job_id)
    assert _wait(lambda: "starts at step" in ec2_launch("logs", job_id).stdout)
    cloud.preempt(rec.handle["instance"])
    assert _wait(lambda: ec2_launch("status", job_id).stdout.startswith("preempted"), timeout=60)
    assert "--max-restarts N relaunches such a job" in ec2_launch("status", job_id).stdout
    assert len(ec2_moto.client("ec2").describe_instances(
        Filters=[{"Name": "tag:launcher:job", "Values": [job_id]}])["Reservations"]) == 1


SECRET_CHECK = """
import hashlib, os
print("token sha", hashlib.sha256(os.environ["HF_TOKEN"].encode()).hexdigest()[:16], flush=True)
"""


def test_secret_reaches_the_node_through_ssm_and_nowhere_else(ec2_launch, ec2_moto, ec2_env, cloud, project):
    import hashlib

    value = "hf_s3cr3t-" + os.urandom(6).hex()
    (project / "check.py").write_text(SECRET_CHECK)
    env = {**ec2_env, "HF_TOKEN": value}
    dry = subprocess.run([sys.executable, "-m", "launcher", "--dry-run", "--full", "--backend", "ec2", "--gpu",
                          "A10G",
                          "--datapool", f"s3://{BUCKET}/x", "--secret", "HF_TOKEN", "check.py"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert value not in dry.stdout and "/launcher/jobs/" in dry.stdout and "HF_TOKEN" in dry.stdout
    out = subprocess.run([sys.executable, "-m", "launcher", *ec2_launch.flags, "--secret", "HF_TOKEN", "check.py"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert f"token sha {hashlib.sha256(value.encode()).hexdigest()[:16]}" in out.stdout
    assert value not in out.stdout + out.stderr
    rec, inst = _instance(ec2_moto, ec2_env["LAUNCHER_HOME"])
    user_data = ec2_moto.client("ec2").describe_instance_attribute(InstanceId=inst["InstanceId"],
                                                                   Attribute="userData")["UserData"]["Value"]
    assert value not in base64.b64decode(user_data).decode()
    assert all(value not in t["Value"] for t in inst["Tags"])
    # The job is over: its parameters are gone.
    params = ec2_moto.client("ssm").get_parameters_by_path(Path=f"/launcher/jobs/{rec.id}", Recursive=True)
    assert params["Parameters"] == []
    # Nothing the node wrote keeps it (the 0600 file it was read into is deleted at once).
    node_files = [p for p in cloud.node_dir(inst["InstanceId"]).rglob("*") if p.is_file()]
    assert any(p.name == "setup.log" for p in node_files)
    assert not any(value in p.read_text(errors="replace") for p in node_files)


def test_sweeper_deletes_secret_parameters_a_lost_client_left(ec2_launch, ec2_moto):
    ssm = ec2_moto.client("ssm")
    for job, deadline in (("gone-aaaaaa", time.time() - 60), ("alive-bbbbbb", time.time() + 3600)):
        ssm.put_parameter(Name=f"/launcher/jobs/{job}/HF_TOKEN", Value="x", Type="SecureString",
                          Tags=[{"Key": "launcher:job", "Value": job},
                                {"Key": "launcher:deadline", "Value": str(int(deadline))}])
    dry = ec2_launch("down", "--expired", "--backend", "ec2", "--region", "us-east-1", "--dry-run").stdout
    assert "(secrets of gone-aaaaaa)" in dry and "alive-bbbbbb" not in dry
    assert ssm.get_parameters_by_path(Path="/launcher/jobs/gone-aaaaaa")["Parameters"]
    ec2_launch("down", "--expired", "--backend", "ec2", "--region", "us-east-1")
    assert ssm.get_parameters_by_path(Path="/launcher/jobs/gone-aaaaaa")["Parameters"] == []
    assert ssm.get_parameters_by_path(Path="/launcher/jobs/alive-bbbbbb")["Parameters"]
    ssm.delete_parameter(Name="/launcher/jobs/alive-bbbbbb/HF_TOKEN")


def test_client_killed_inside_run_instances_the_sweeper_still_finds_it(ec2_launch, ec2_moto, ec2_env, cloud,
                                                                       project, monkeypatch):
    """The client dies while RunInstances is in flight: EC2 still starts the instance, and no handle ever names
    it. The `submitting` record and the instance's tags are enough: status says lost, the sweeper ends it."""
    from launcher import api

    cloud.hang.add("inflight")  # its node never boots, so only the sweeper can end it
    ec2_moto.set_rules([{"delay": 4}])
    (project / "inflight.py").write_text(WORK)
    client = ec2_launch("--max-runtime", "1m", "inflight.py", popen=True, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    assert _wait(lambda: len(ec2_moto.run_instances_calls()) == 1, timeout=60)  # the request is in the air
    client.send_signal(signal.SIGKILL)
    client.wait()
    ec2 = ec2_moto.client("ec2")
    rec = Registry(Path(ec2_env["LAUNCHER_HOME"])).list()[0]
    assert rec.state == "submitting" and "instance" not in rec.handle

    def tagged():
        res = ec2.describe_instances(Filters=[{"Name": "tag:launcher:job", "Values": [rec.id]}])["Reservations"]
        return [i for r in res for i in r["Instances"]]

    assert _wait(lambda: len(tagged()) == 1, timeout=30)  # EC2 went ahead without the client
    for k in [k for k in ec2_env if k.startswith("AWS_") or k == "LAUNCHER_HOME"]:
        monkeypatch.setenv(k, ec2_env[k])
    assert api.status(rec.id)[0] == "running"  # found by its tag
    swept = api.down_expired(now=rec.deadline + 1)  # this machine's registry alone is enough
    assert swept == [rec.id]
    assert _wait(lambda: all(i["State"]["Name"] in ("shutting-down", "terminated") for i in tagged()))
    assert api.down_expired(now=rec.deadline + 1, backend="ec2", options=Ec2Options(region="us-east-1"),
                            dry_run=True) == []


LIVE = """
import time
for i in range(8):
    print(f"live {i}", flush=True)
    time.sleep(0.5)
"""


def test_key_pair_gives_live_logs_over_ssh_with_the_host_key_checked(ec2_launch, ec2_moto, ec2_env, cloud, project,
                                                                     tmp_path):
    from ..sshd import keygen

    key = keygen(tmp_path / "id_ed25519")
    cloud.authorized_keys.write_text(Path(f"{key}.pub").read_text())
    ec2, ssm = ec2_moto.client("ec2"), ec2_moto.client("ssm")
    key_name = f"me-{tmp_path.name[-10:]}"
    ec2.import_key_pair(KeyName=key_name, PublicKeyMaterial=Path(f"{key}.pub").read_bytes())
    profile = tmp_path / "ssh.yaml"
    profile.write_text(yaml.safe_dump({"backend": "ec2", "ec2": {
        "region": "us-east-1", "ami": GPU_AMI_PARAM, "python": sys.executable, "key_name": key_name,
        "key_path": str(key), "ssh_user": "root", "ssh_from": "127.0.0.1/32"}}))
    env = {**ec2_env, "LAUNCHER_EC2_SSH_HOSTS": str(cloud.ssh_hosts)}
    (project / "live.py").write_text(LIVE)
    flags = [f for f in ec2_launch.flags]
    flags[flags.index("--profile") + 1] = str(profile)
    flags[flags.index("--push-interval") + 1] = "10m"  # the store's copy comes only at the end

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=project, env=env, capture_output=True,
                              text=True, timeout=180)

    out = cli(*flags, "--detach", "live.py")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    rec = Registry(Path(ec2_env["LAUNCHER_HOME"])).get(job_id)
    iid = rec.handle["instance"]
    # Port 22 is open to the one address named, in a group of the job's own; the host key waits in SSM.
    group = ec2.describe_security_groups(GroupIds=[rec.handle["group"]])["SecurityGroups"][0]
    assert group["GroupName"] == f"launcher-ssh-{job_id}"
    assert [(p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in group["IpPermissions"]] == \
        [(22, ["127.0.0.1/32"])]
    assert ssm.get_parameter(Name=f"/launcher/hostkeys/{job_id}")["Parameter"]["Type"] == "SecureString"
    assert _wait(lambda: cloud.ssh_hosts.exists() and iid in cloud.ssh_hosts.read_text(), timeout=60)
    logs = cli("logs", job_id, "-f")
    assert logs.returncode == 0, logs.stderr
    assert all(f"live {i}" in logs.stdout for i in range(8)), logs.stdout
    assert "Accepted publickey for root" in (cloud.node_dir(iid) / "sshd.log").read_text()  # it came over SSH
    node_key = (cloud.node_dir(iid) / "etc-ssh" / "ssh_host_ed25519_key.pub").read_text().split()[1]
    known = (Path(ec2_env["LAUNCHER_HOME"]) / "jobs" / job_id / "known_hosts").read_text()
    assert known.split()[2] == node_key  # the key the client made is the one the node's sshd showed
    assert _wait(lambda: cli("status", job_id).stdout.startswith("succeeded"), timeout=60)
    # Over: the host key parameter is gone at once; the group once the instance has let go of it.
    assert all(job_id not in p["Name"] for p in ssm.get_parameters_by_path(Path="/launcher/hostkeys")["Parameters"])
    assert _wait(lambda: _instance(ec2_moto, ec2_env["LAUNCHER_HOME"])[1]["State"]["Name"] == "terminated")
    swept = cli("down", "--expired", "--backend", "ec2", "--region", "us-east-1").stdout
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"launcher-ssh-{job_id}"]}])
    assert groups["SecurityGroups"] == [] or f"launcher-ssh-{job_id}" in swept


def test_key_path_without_key_name_is_refused(ec2_launch, project, tmp_path):
    (project / "work.py").write_text(WORK)
    (tmp_path / "k").write_text("a private key\n")  # there and readable: the pairing is what is wrong
    out = ec2_launch("--key-path", str(tmp_path / "k"), "work.py")
    assert out.returncode == 2 and "--key-path needs --key-name" in out.stderr


def test_sweeper_deletes_a_leftover_volume_past_its_deadline(ec2_launch, ec2_moto):
    ec2 = ec2_moto.client("ec2")
    vols = {}
    for job, deadline in (("old-cccccc", time.time() - 60), ("new-dddddd", time.time() + 3600)):
        vols[job] = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8, TagSpecifications=[{
            "ResourceType": "volume", "Tags": [{"Key": "launcher:job", "Value": job},
                                               {"Key": "launcher:deadline", "Value": str(int(deadline))}]}])["VolumeId"]
    swept = ec2_launch("down", "--expired", "--backend", "ec2", "--region", "us-east-1").stdout
    assert vols["old-cccccc"] in swept and vols["new-dddddd"] not in swept
    left = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert vols["old-cccccc"] not in left and vols["new-dddddd"] in left
    ec2.delete_volume(VolumeId=vols["new-dddddd"])
