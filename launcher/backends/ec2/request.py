"""RunInstances for a job, rendered from the plan: pure (no network), so `--dry-run` shows exactly what is sent.

Values only known at submit are named placeholders here and filled in by aws.py: the image id behind an SSM
parameter (`resolve:ssm:NAME`), the security group made once per region (`<launcher-no-ingress>`), and the
presigned URLs the node fetches the code snapshot from and reports a setup failure to (`<presigned ...>`).
"""
from __future__ import annotations

import getpass
import math

from ... import bootstrap
from ...errors import UserError
from ...plan import Plan
from . import catalog

NODE_BASE = "/opt/launcher-node"
USER_DATA_LIMIT = 16 * 1024  # EC2 refuses more (before base64)
SG_PLACEHOLDER = "<launcher-no-ingress>"
REGION_PLACEHOLDER = "<$AWS_REGION at submit>"
SECRETS_ROOT = "/launcher/jobs"
HOSTKEYS_ROOT = "/launcher/hostkeys"
HOSTKEY_PLACEHOLDER = "<ssh-ed25519 host key made at submit>"
SSH_SG_PLACEHOLDER = "<launcher-ssh-JOB: port 22 from ec2.ssh_from or your public IP /32 only>"


def snapshot_placeholder(sha: str) -> str:
    return f"<presigned GET code/{sha}.tar.gz, valid until the deadline>"


def tags(plan: Plan) -> list[dict]:
    """What the sweeper finds every leak by: the job, its deadline (epoch seconds) and who started it."""
    out = [
        {"Key": "Name", "Value": f"launcher-{plan.job_id}"},
        {"Key": "launcher:job", "Value": plan.job_id},
        {"Key": "launcher:deadline", "Value": str(int(plan.deadline_at))},
        {"Key": "launcher:owner", "Value": getpass.getuser()},
    ]
    if plan.spec.attempt > 1:
        out.append({"Key": "launcher:attempt", "Value": str(plan.spec.attempt)})
    return out


def client_token(plan: Plan) -> str:
    """The job id; a relaunch after a preemption needs a token of its own (EC2 would hand back the first,
    terminated instance for the same token)."""
    return plan.job_id if plan.spec.attempt == 1 else f"{plan.job_id}-attempt-{plan.spec.attempt}"


def result_placeholder(job_id: str) -> str:
    return f"<presigned PUT reports/jobs/{job_id}/result.json, for a setup failure>"


def secrets_path(job_id: str) -> str:
    """Where --secret values wait for the node: SecureString parameters, one per name (never in user-data)."""
    return f"{SECRETS_ROOT}/{job_id}"


def ssh_enabled(plan: Plan) -> bool:
    ec2 = plan.job.ec2
    return bool(ec2 and ec2.key_name and ec2.key_path)


def hostkey_param(job_id: str) -> str:
    return f"{HOSTKEYS_ROOT}/{job_id}"


def user_data(plan: Plan, snapshot_url: str, result_url: str, region: str, hostkey_pub: str) -> str:
    ec2 = plan.job.ec2
    return bootstrap.render(plan.spec, base=NODE_BASE, snapshot_sha=plan.snapshot["sha256"],
                            snapshot_url=snapshot_url, python=ec2.python if ec2 else "", teardown="poweroff",
                            keep_on_failure=plan.job.keep_on_failure, result_url=result_url,
                            secrets_ssm=secrets_path(plan.job_id) if plan.job.secrets else "", ssm_region=region,
                            hostkey_ssm=hostkey_param(plan.job_id) if ssh_enabled(plan) else "",
                            hostkey_pub=hostkey_pub if ssh_enabled(plan) else "")


def run_instances(plan: Plan, itype: str, *, region: str = REGION_PLACEHOLDER, image_id: str | None = None,
                  security_group: str | None = None, snapshot_url: str | None = None,
                  result_url: str | None = None, hostkey_pub: str = HOSTKEY_PLACEHOLDER) -> dict:
    """The RunInstances parameters. With the submit-time values left out, the placeholders stand in."""
    job, ec2 = plan.job, plan.job.ec2
    ami = image_id or catalog.ami_source(job, itype)
    if ami.startswith("/"):
        ami = f"resolve:ssm:{ami}"
    script = user_data(plan, snapshot_url or snapshot_placeholder(plan.snapshot["sha256"]),
                       result_url or result_placeholder(plan.job_id), region, hostkey_pub)
    if len(script.encode()) > USER_DATA_LIMIT:
        raise UserError(f"the node bootstrap is {len(script.encode())} bytes, over EC2's 16 KB user-data limit: "
                        "shorten --env values or the script's arguments")
    disk_gb = math.ceil(job.disk_bytes / 1024**3) if job.disk else catalog.DEFAULT_DISK_GB
    req: dict = {
        "ImageId": ami,
        "InstanceType": itype,
        "MinCount": 1,
        "MaxCount": 1,
        # Idempotent retries: EC2 starts one instance per token, however often the call is repeated.
        "ClientToken": client_token(plan),
        # Teardown layer 1: the node's own `shutdown` (agent done, dead-man switch) ends the billing for good.
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2, "HttpEndpoint": "enabled",
                            "InstanceMetadataTags": "enabled"},
        "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {
            "VolumeSize": disk_gb, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True}}],
        "TagSpecifications": [{"ResourceType": kind, "Tags": tags(plan)}
                              for kind in ("instance", "volume", *(["spot-instances-request"] if job.spot else []))],
        "SecurityGroupIds": [(ec2.security_group if ec2 and ec2.security_group else None)
                             or security_group or (SSH_SG_PLACEHOLDER if ssh_enabled(plan) else SG_PLACEHOLDER)],
        "UserData": script,
    }
    if job.spot:
        req["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    if ec2 and ec2.zone:
        req["Placement"] = {"AvailabilityZone": ec2.zone}
    if ec2 and ec2.subnet:
        req["SubnetId"] = ec2.subnet
    if ec2 and ec2.instance_profile:
        req["IamInstanceProfile"] = {"Name": ec2.instance_profile}
    if ec2 and ec2.key_name:
        req["KeyName"] = ec2.key_name
    return req
