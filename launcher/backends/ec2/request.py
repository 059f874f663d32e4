"""RunInstances for a job, rendered from the plan: pure (no network), so `--dry-run` shows exactly what is sent.

What only `start` knows is a named slot (launcher/backends/slots.py); `start` fills them in this very request and
sends it (`sent`), never a second rendering:

    image_id        the AMI behind an SSM parameter (`AmiParameter` names it; an --ami ami-... is no slot)
    security_group  launcher-no-ingress of the region (VPC), or the job's own launcher-ssh-<job> with --key-name
    region          where the node reads its SSM parameters, when no --region names it
    snapshot_url    a presigned GET of code/<sha>.tar.gz, valid until the deadline
    result_url      a presigned PUT of reports/jobs/<job>/result.json, for a setup failure
    host_key        the node's SSH host key, made at submit (--key-name with --key-path)
    uv_sha, uv_url  the uv wheel's sha256 and a presigned GET of tools/uv-<sha>.whl (uploaded once), when the node
                    may build its venv (neither ec2.python nor ec2.image)
    venv_url, venv_put_url   a presigned GET and PUT of venvs/<lock hash>-<platform>.tar: the packed venv
    zone            the zone of this try (capacity short: the next one), unless a subnet or --zone decides it
"""
from __future__ import annotations

import getpass
import math

from ... import nodesetup
from ...node import bootstrap
from ...errors import UserError
from ...plan import Plan
from ..slots import fill, slot, slots_in
from . import catalog

NODE_BASE = "/opt/launcher-node"
USER_DATA_LIMIT = 16 * 1024  # EC2 refuses more (before base64)
SECRETS_ROOT = "/launcher/jobs"
HOSTKEYS_ROOT = "/launcher/hostkeys"
# Slots inside the user-data: shell words in single quotes there (bootstrap.render quoted the slot).
SCRIPT_SLOTS = ("snapshot_url", "result_url", "region", "host_key", "uv_sha", "uv_url", "venv_url", "venv_put_url")


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


def secrets_path(job_id: str) -> str:
    """Where --secret values wait for the node: SecureString parameters, one per name (never in user-data)."""
    return f"{SECRETS_ROOT}/{job_id}"


def ssh_enabled(plan: Plan) -> bool:
    ec2 = plan.job.ec2
    return bool(ec2 and ec2.key_name and ec2.key_path)


def hostkey_param(job_id: str) -> str:
    return f"{HOSTKEYS_ROOT}/{job_id}"


def builds_venv(plan: Plan) -> bool:
    """Whether the node may build its venv from the lock: neither an interpreter nor an image is named."""
    ec2 = plan.job.ec2
    return not (ec2 and (ec2.python or ec2.image))


def venv_pack(plan: Plan) -> str:
    """The packed venv this node would use: the base lock's, plus the gpu lock's on a GPU type (where the bootstrap
    finds nvidia-smi)."""
    return nodesetup.venv_pack(plan.job.workdir, gpu=plan.job.gpu_request is not None)


def user_data(plan: Plan, region: str) -> str:
    ec2 = plan.job.ec2
    ssh = ssh_enabled(plan)
    fast = {}
    if builds_venv(plan):
        fast = dict(uv_sha=slot("uv_sha"), uv_url=slot("uv_url"), venv_pack=venv_pack(plan),
                    venv_get_url=slot("venv_url"), venv_put_url=slot("venv_put_url"))
    return bootstrap.render(plan.spec, base=NODE_BASE, snapshot_sha=plan.snapshot.sha256,
                            lock_hash=nodesetup.lock_hash(plan.job.workdir), image=(ec2.image if ec2 else None) or "",
                            docker_gpus=plan.job.gpu_request is not None, **fast,
                            snapshot_url=slot("snapshot_url"), python=ec2.python if ec2 else "", teardown="poweroff",
                            keep_on_failure=plan.job.keep_on_failure, result_url=slot("result_url"),
                            secrets_ssm=secrets_path(plan.job_id) if plan.job.secrets else "", ssm_region=region,
                            hostkey_ssm=hostkey_param(plan.job_id) if ssh else "",
                            hostkey_pub=slot("host_key") if ssh else "")


def check_user_data(script: str | bytes) -> None:
    size = len(script if isinstance(script, bytes) else script.encode())
    if size > USER_DATA_LIMIT:
        raise UserError(f"the node bootstrap is {size} bytes, over EC2's 16 KB user-data limit: "
                        "shorten --env values or the script's arguments")


def render(plan: Plan) -> dict:
    """The whole request: where (region), what waits in SSM for the node, and RunInstances with its slots."""
    job, ec2 = plan.job, plan.job.ec2
    itype = catalog.instance_type(job)
    region = ec2.region if ec2 and ec2.region else slot("region")
    out: dict = {"region": region}
    params = [f"{secrets_path(plan.job_id)}/{n}" for n in job.secrets]
    if ssh_enabled(plan):
        params.append(f"{hostkey_param(plan.job_id)} (the node's SSH host key)")
    if params:
        out["SsmSecureStrings"] = params
    source = catalog.ami_source(job, itype)
    if source.startswith("/"):
        out["AmiParameter"] = source  # resolved at submit into the image_id slot
    out["RunInstances"] = run_instances(plan, itype, region)
    return out


def sent(plan: Plan, values: dict, zone: str) -> dict:
    """RunInstances as sent on one zone's try: the rendered request (`plan.request`) with its slots filled."""
    if "zone" in slots_in(plan.request):
        values = {**values, "zone": zone}
    for name in SCRIPT_SLOTS:
        # bootstrap.render single-quoted the slot: a value must stay one shell word inside those quotes.
        if name in values and any(c in str(values[name]) for c in "'\n"):
            raise ValueError(f"{name} cannot go into the user-data as it is: {values[name]!r}")
    req = fill(plan.request, values)["RunInstances"]
    raw = req["UserData"].encode()
    if len(raw) > USER_DATA_LIMIT:
        # Presigned URLs are longer than their slots (with a session token, over 1 KB each): over the limit, the
        # script goes gzip-compressed, which cloud-init unpacks before it runs it. mtime 0: the same bytes each try.
        import gzip

        req["UserData"] = gzip.compress(raw, mtime=0)
    check_user_data(req["UserData"])
    return req


def run_instances(plan: Plan, itype: str, region: str) -> dict:
    """The RunInstances parameters, with a slot wherever only submit knows the value."""
    job, ec2 = plan.job, plan.job.ec2
    source = catalog.ami_source(job, itype)
    script = user_data(plan, region)
    check_user_data(script)
    disk_gb = math.ceil(job.disk_bytes / 1024**3) if job.disk else catalog.DEFAULT_DISK_GB
    req: dict = {
        "ImageId": slot("image_id") if source.startswith("/") else source,
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
        "SecurityGroupIds": [ec2.security_group if ec2 and ec2.security_group else slot("security_group")],
        "UserData": script,
    }
    if job.spot:
        req["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    if ec2 and ec2.zone:
        req["Placement"] = {"AvailabilityZone": ec2.zone}
    elif not (ec2 and ec2.subnet):  # a subnet lives in one zone; else each try names its zone
        req["Placement"] = {"AvailabilityZone": slot("zone")}
    if ec2 and ec2.subnet:
        req["SubnetId"] = ec2.subnet
    if ec2 and ec2.instance_profile:
        req["IamInstanceProfile"] = {"Name": ec2.instance_profile}
    if ec2 and ec2.key_name:
        req["KeyName"] = ec2.key_name
    return req
