"""SSH to an EC2 node (with --key-name and --key-path): live `logs -f`, the host key verified, port 22 open to you only.

Trust without `StrictHostKeyChecking=no`: the client makes the node's ed25519 host key itself, keeps the public half
(known_hosts under $LAUNCHER_HOME/jobs/<id>/) and hands the private half to the node as an SSM SecureString that
only the instance role reads (never user-data, which anyone with ec2:DescribeInstanceAttribute can read). The
bootstrap restarts sshd with it, so the first connection already checks the key. Until then (the node is booting),
or whenever SSH fails, logs come through the store as without a key.

Port 22: a security group of the job's own (`launcher-ssh-<job>`, tagged with the job and its deadline) admits only
ec2: ssh_from (default: this machine's public IP /32). A security group you name is used as it is.
"""
from __future__ import annotations

import json
import os
import urllib.request

from ...errors import UserError
from ...registry import launcher_home
from .aws import error_code
from .request import hostkey_param

CHECKIP_URL = "https://checkip.amazonaws.com"
# A JSON map {instance id: "host:port"} for nodes reached through a tunnel or bastion (and the tests' simulated
# hosts): consulted before the instance's own address.
HOSTS_MAP_ENV = "LAUNCHER_EC2_SSH_HOSTS"


def group_name(job_id: str) -> str:
    return f"launcher-ssh-{job_id}"


def new_host_key() -> tuple[str, str]:
    """(private key in OpenSSH format, "ssh-ed25519 AAAA...")."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


def caller_cidr(job) -> str:
    """Who may reach port 22: ec2: ssh_from, else this machine's public IP as AWS sees it."""
    if job.ec2.ssh_from:
        return job.ec2.ssh_from
    try:
        with urllib.request.urlopen(CHECKIP_URL, timeout=5) as resp:
            ip = resp.read().decode().strip()
    except OSError as exc:
        raise UserError(f"cannot find your public IP to open port 22 to ({exc}); set `ec2: ssh_from: A.B.C.D/32` "
                        "in the profile, or drop --key-path (logs then come through the store)") from None
    return f"{ip}/32"


def put_host_key(ssm, job_id: str, private: str, deadline: float) -> None:
    """The node's host key, readable by its instance role only; a relaunch overwrites it with a new one."""
    name = hostkey_param(job_id)
    ssm.put_parameter(Name=name, Value=private, Type="SecureString", Overwrite=True,
                      Description=f"launcher job {job_id}: SSH host key of its node")
    ssm.add_tags_to_resource(ResourceType="Parameter", ResourceId=name,
                             Tags=[{"Key": "launcher:job", "Value": job_id},
                                   {"Key": "launcher:deadline", "Value": str(int(deadline))}])


def delete_host_key(ssm, job_id: str) -> None:
    import botocore.exceptions

    try:
        ssm.delete_parameter(Name=hostkey_param(job_id))
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "ParameterNotFound":
            raise


def ssh_group(ec2, job_id: str, vpc_id: str | None, cidr: str, tags: list[dict]) -> str:
    """The job's own security group: port 22 from `cidr`, nothing else in. Reused by a relaunch."""
    found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [group_name(job_id)]}])
    if found["SecurityGroups"]:
        return found["SecurityGroups"][0]["GroupId"]
    kwargs = {"GroupName": group_name(job_id), "Description": f"launcher job {job_id}: SSH from {cidr} only",
              "TagSpecifications": [{"ResourceType": "security-group", "Tags": tags}]}
    if vpc_id:
        kwargs["VpcId"] = vpc_id
    group = ec2.create_security_group(**kwargs)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
        "IpRanges": [{"CidrIp": cidr, "Description": "launch logs -f"}]}])
    return group


def delete_group(ec2, group_id: str) -> bool:
    """False while an instance still holds it (the sweeper tries again later)."""
    import botocore.exceptions

    try:
        ec2.delete_security_group(GroupId=group_id)
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code == "DependencyViolation":
            return False
        if code not in ("InvalidGroup.NotFound", "InvalidGroupId.NotFound"):
            raise
    return True


def known_hosts(job_id: str, address: str, public_key: str) -> str:
    """known_hosts for this node only: the address it has now and the key the client made for it."""
    host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    name = f"[{host}]:{port}" if port and port != "22" else host
    path = launcher_home() / "jobs" / job_id / "known_hosts"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{name} {public_key}\n")
    return str(path)


def address(instance: dict) -> str | None:
    """host[:port] to reach the node's sshd at."""
    mapped = os.environ.get(HOSTS_MAP_ENV)
    if mapped:
        try:
            hosts = json.loads(open(mapped).read())
        except (OSError, ValueError):
            hosts = {}
        if instance["InstanceId"] in hosts:
            return hosts[instance["InstanceId"]]
    return instance.get("PublicIpAddress") or instance.get("PrivateIpAddress")
