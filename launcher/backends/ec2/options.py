"""The `ec2:` section of a profile, and the flags that set it (`--region`, `--zone`, `--instance-type`, ...).

Light: the registry's entry imports it for `launch --help` and for validating a job, without boto3."""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..entry import Flag

FLAGS = (
    Flag("--region", "region", "AWS region", metavar="REGION"),
    Flag("--zone", "zone", "pin one availability zone", metavar="ZONE"),
    Flag("--instance-type", "instance_type", "instance type (default: picked from --gpu)", metavar="TYPE"),
    Flag("--ami", "ami", "ami-... or an SSM parameter name", metavar="AMI"),
    Flag("--key-name", "key_name", "EC2 key pair, for SSH to the node", metavar="NAME"),
    Flag("--key-path", "key_path", "private key of --key-name", metavar="FILE"),
    Flag("--security-group", "security_group", "security group id", metavar="ID"),
)


class Ec2Options(BaseModel):
    """The `ec2:` section of a profile (`--region`, `--zone`, `--instance-type`, `--ami`, ... on the command line)."""

    model_config = ConfigDict(extra="forbid")

    region: str | None = Field(None, description="AWS region (default: $AWS_REGION, your AWS profile's, us-east-1)")
    zone: str | None = Field(None, description="pin one availability zone, e.g. us-east-1b (default: try each)")
    instance_type: str | None = Field(None, description="override the instance type picked from --gpu")
    ami: str | None = Field(None, description="ami-... or an SSM parameter name holding one (default: the public "
                                              "Deep Learning Base GPU AMI, plain Ubuntu for CPU types)")
    python: str = Field("", description="interpreter on the AMI that has launcher's dependencies "
                                        "(default: the image's python3, else a venv from images/requirements.lock)")
    image: str | None = Field(None, description="container image with the lock (`launch image build --push`): "
                                                "the node runs the job in it with `docker run` (--gpus all on a GPU "
                                                "type); needs an AMI with Docker (the GPU DLAMIs have it)")
    subnet: str | None = Field(None, description="subnet id (default: the zone's default subnet)")
    security_group: str | None = Field(None, description="security group id (default: one with no inbound rule, "
                                                         "made once per region)")
    instance_profile: str | None = Field(None, description="IAM instance profile the node runs as (its store access)")
    key_name: str | None = Field(None, description="EC2 key pair for SSH access (default: none, no inbound port)")
    key_path: str | None = Field(None, description="private key file of --key-name (live `logs -f` over SSH)")
    ssh_user: str = Field("ubuntu", description="login user of the AMI for SSH (with --key-name)")
    ssh_from: str | None = Field(None, description="CIDR allowed to reach port 22 of the node's own security group "
                                                   "(default: your public IP /32)")

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        # One shell word in the node's `docker run`: a reference, never options or spaces.
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", v):
            raise ValueError(f"bad image {v!r}: a reference such as registry.example.com/team/node:0123456789ab")
        return v

    @model_validator(mode="after")
    def _python_or_image(self) -> "Ec2Options":
        if self.python and self.image:
            raise ValueError("python and image: the job runs in one or the other; drop one")
        return self

    @field_validator("ssh_from")
    @classmethod
    def _ssh_from(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import ipaddress

        try:
            net = ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"bad ssh_from {v!r}: a CIDR such as 203.0.113.7/32") from None
        if net.prefixlen == 0:
            raise ValueError(f"ssh_from {v!r} opens port 22 to the whole internet: name your own address /32")
        return str(net)

    @field_validator("key_path")
    @classmethod
    def _key_path(cls, v: str | None) -> str | None:
        """Checked where the job is built (a dry run too): a key that is not there fails only at `logs -f` else."""
        if v is None:
            return v
        import os

        path = os.path.expanduser(v)
        if not os.path.isfile(path):
            raise ValueError(f"{v}: no such file; give the private key file of --key-name")
        if not os.access(path, os.R_OK):
            raise ValueError(f"{v}: not readable by you; fix its permissions (chmod 600, owned by you)")
        return path

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", v):
            raise ValueError(f"bad region {v!r}: e.g. us-east-1, eu-west-2")
        return v

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d[a-z]", v):
            raise ValueError(f"bad availability zone {v!r}: e.g. us-east-1b")
        return v

    @field_validator("ami")
    @classmethod
    def _ami(cls, v: str | None) -> str | None:
        if v is not None and not (re.fullmatch(r"ami-[0-9a-f]{8,17}", v) or re.fullmatch(r"/[\w./-]+", v)):
            raise ValueError(f"bad AMI {v!r}: an image id (ami-0123456789abcdef0) or an SSM parameter name "
                             "(/aws/service/...)")
        return v

    @field_validator("instance_type")
    @classmethod
    def _itype(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[a-z][a-z0-9-]*\.[a-z0-9-]+", v):
            raise ValueError(f"bad instance type {v!r}: e.g. g5.xlarge")
        return v
