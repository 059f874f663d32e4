"""An EC2 (+ SSM, + anything moto serves) endpoint for the ec2 backend's tests: moto in its own process on 127.0.0.1,
behind tests/ec2/ice_server.py so a test can make RunInstances fail for lack of capacity or quota.

    server = start_ec2_moto(tmp_dir)
    ec2 = server.client("ec2"); ssm = server.client("ssm")
    ami = seed_ami_parameter(ec2, ssm)          # /launcher-test/ami/gpu -> an AMI moto knows
    server.set_capacity(ice_azs=["us-east-1a"])  # RunInstances in 1a: InsufficientInstanceCapacity
    server.run_instances_calls()                 # what RunInstances was asked, in order, and what it answered
"""
from __future__ import annotations

import json
import os
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ..motoserver import MotoServer, start_moto_with

REGION = "us-east-1"
ICE_SERVER = Path(__file__).with_name("ice_server.py")
GPU_AMI_PARAM = "/launcher-test/ami/gpu"

# moto accepts any ImageId / InstanceType / KeyName unless told otherwise, which would let a launcher bug (a typo'd
# instance type, an AMI from another region, a key pair it never created) pass here and fail on AWS. moto reads
# these once at import with bool(os.environ.get(...)): any non-empty value, even "false", turns them on.
MOTO_VALIDATION_ENV = {
    # RunInstances first runs DescribeImages on the ImageId: an id moto doesn't hold -> InvalidAMIID.NotFound,
    # one not starting "ami-" -> InvalidAMIID.Malformed. moto holds the AMIs in moto/ec2/resources/amis.json.gz
    # plus latest_amis/<region>.json.gz and ecs/optimized_amis/<region>.json.gz (see some_ami), and any
    # the test registers / creates.
    "MOTO_ENABLE_AMI_VALIDATION": "true",
    # RunInstances checks InstanceType against moto's offerings for the region (for any AZ of it when Placement
    # is given, not the AZ asked for): unknown -> InvalidInstanceType.NotFound. Without it any string launches.
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
    # RunInstances with a KeyName moto doesn't hold -> InvalidKeyPair.NotFound. No KeyName: not checked.
    "MOTO_ENABLE_KEYPAIR_VALIDATION": "true",
}


@dataclass
class EC2Moto(MotoServer):
    rules_path: Path = None
    calls_path: Path = None
    region: str = REGION

    def client(self, service: str = "ec2", max_attempts: int = 1):
        """A boto3 client for any moto service. One attempt by default, so a test sees exactly the error the
        server gave, where botocore would otherwise retry 5xx (InsufficientInstanceCapacity included)."""
        import boto3
        from botocore.config import Config

        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(retries={"total_max_attempts": max_attempts, "mode": "standard"}))

    def aws_env(self, scratch: Path) -> dict[str, str]:
        """The AWS_* variables a subprocess needs to reach this server and nothing else. `scratch`: a directory
        whose (never created) config/credentials files stand in for ~/.aws, so a developer's profile can't leak in."""
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": self.region, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": str(Path(scratch) / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(Path(scratch) / "no-aws-credentials")}

    # -- capacity rules (see ice_server.py for the file format) ---------------------------------------------

    def set_rules(self, rules: Iterable[Mapping]) -> None:
        rules = [dict(r) for r in rules]
        for r in rules:
            # "times" counts per rule id in the server; a fresh id per write means a rewritten rule starts over.
            r.setdefault("id", uuid.uuid4().hex)
        tmp = self.rules_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rules": rules}))
        # The server reads the file on every request, possibly mid-write: replace it whole.
        os.replace(tmp, self.rules_path)

    def set_capacity(self, ice_azs: Iterable[str] = (), *, ice_instance_types: Iterable[str] | None = None,
                     vcpu_limit: bool = False, market: str | None = None) -> None:
        """RunInstances in any of `ice_azs` (for `ice_instance_types`, default all; `market` "spot"/"on-demand",
        default both) fails InsufficientInstanceCapacity (HTTP 500); `vcpu_limit` fails every RunInstances with
        VcpuLimitExceeded (HTTP 400), checked first as AWS checks quota before capacity. Replaces earlier rules."""
        rules: list[dict] = []
        if vcpu_limit:
            rules.append({"code": "VcpuLimitExceeded"})
        ice_azs = list(ice_azs)
        if ice_azs:
            rule = {"code": "InsufficientInstanceCapacity", "azs": ice_azs, "market": market}
            if ice_instance_types is not None:
                rule["instance_types"] = list(ice_instance_types)
            rules.append(rule)
        self.set_rules(rules)

    def clear_rules(self) -> None:
        self.set_rules([])

    def run_instances_calls(self) -> list[dict]:
        """Every RunInstances that reached the server, oldest first: region, az, subnet, instance_type, image_id,
        market, min_count, max_count, client_token, launch_template, error (the injected code, or None when it
        went on to moto, which may still have refused it), and form (every parameter as sent, flattened)."""
        try:
            return [json.loads(line) for line in self.calls_path.read_text().splitlines() if line]
        except FileNotFoundError:
            return []

    def clear_calls(self) -> None:
        self.calls_path.write_text("")

    def reset(self) -> None:
        """Forget all moto state (instances, SSM parameters, ...; the built-in AMIs come back), the rules and the
        calls log."""
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", data=b"", method="POST"),
                               timeout=30).read()
        self.clear_rules()
        self.clear_calls()


def start_ec2_moto(work_dir: Path, extra_env: Mapping[str, str] | None = None) -> EC2Moto:
    work_dir = Path(work_dir)
    rules, calls = work_dir / "capacity-rules.json", work_dir / "run-instances-calls.jsonl"
    rules.write_text('{"rules": []}')
    calls.write_text("")
    server = start_moto_with(
        work_dir, lambda port: [sys.executable, str(ICE_SERVER), "--port", str(port), "--rules", str(rules),
                                "--calls", str(calls)],
        env={**MOTO_VALIDATION_ENV, **(extra_env or {})}, log_name="ec2moto.log")
    return EC2Moto(server.endpoint, server.log_path, server.proc, rules, calls)


def without_aws(env: Mapping[str, str]) -> dict[str, str]:
    """`env` less every AWS_* variable (profiles, regions, endpoint overrides, credentials of whoever runs the tests)."""
    return {k: v for k, v in env.items() if not k.startswith("AWS_")}


_AMI_CACHE: dict[tuple[str, str, str], str] = {}


def some_ami(client, architecture: str = "x86_64") -> str:
    """An AMI id moto holds in the client's region: a Linux, EBS-backed HVM one owned by Amazon, the same one every
    call (lowest id), so a test can pass it to RunInstances with AMI validation on."""
    # moto filters its ~1200 built-in images in about a second and a half; they are the same for the server's
    # life (a reset reloads them), so one look per server, region and architecture.
    key = (client.meta.endpoint_url, client.meta.region_name, architecture)
    if key not in _AMI_CACHE:
        _AMI_CACHE[key] = _find_ami(client, architecture)
    return _AMI_CACHE[key]


def _find_ami(client, architecture: str) -> str:
    images = client.describe_images(Owners=["amazon"], Filters=[
        {"Name": "architecture", "Values": [architecture]}, {"Name": "root-device-type", "Values": ["ebs"]},
        {"Name": "virtualization-type", "Values": ["hvm"]}, {"Name": "state", "Values": ["available"]}])["Images"]
    linux = sorted(i["ImageId"] for i in images if i.get("Platform") != "windows")
    if not linux:
        raise LookupError(f"moto holds no {architecture} Linux AMI in {client.meta.region_name}")
    return linux[0]


def seed_ami_parameter(ec2_client, ssm_client, name: str = GPU_AMI_PARAM, ami_id: str | None = None) -> str:
    """Store an AMI id (default some_ami) in SSM parameter `name`, as AWS publishes AMIs under /aws/service/...,
    and return it. moto only serves /aws/service/ami-amazon-linux-latest/*, ecs/optimized-ami/* and
    global-infrastructure/*, not e.g. /aws/service/deeplearning/*, hence a test-owned name."""
    ami_id = ami_id or some_ami(ec2_client)
    ssm_client.put_parameter(Name=name, Value=ami_id, Type="String", DataType="aws:ec2:image", Overwrite=True)
    return ami_id
