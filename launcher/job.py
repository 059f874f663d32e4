"""The Job: what to run, where, with what resources and limits. One pydantic model, every field validated."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .backends.k8s.options import MAX_NODES, K8sOptions
from .backends.modal.options import ModalOptions
from .errors import UserError, did_you_mean
from .gpus import GpuRequest, parse_gpu
from .units import parse_duration, parse_size

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Set by the agent from the job's own fields; a user value would silently split the datapool.
RESERVED_ENV = {"DATAPOOL_ROOT": "--datapool", "EXPERIMENT": "--experiment", "EXPERIMENT_DIR": "--experiment",
                "JOB_ID": None, "LAUNCH_BACKEND": "--backend"}
# Stores the datapool can bind to; s3 comes with the sync engine, the others with their backends.
DATAPOOL_SCHEMES = ("file", "s3", "pvc", "modal-volume")


def _err(exc: Exception) -> str:
    return str(exc.args[0]) if isinstance(exc, UserError) else str(exc)


class SshTarget(BaseModel):
    """The `ssh:` section of a profile (`--host`, `--identity` on the command line)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="[user@]host[:port] of a box you can ssh into")
    identity: str | None = Field(None, description="private key file (default: your ssh agent and ~/.ssh keys)")
    known_hosts: str | None = Field(None, description="known_hosts file to check the host key against "
                                                      "(default ~/.ssh/known_hosts)")
    python: str = Field("python3", description="interpreter on the box that has launcher's dependencies")
    remote_dir: str = Field(".launcher-node", description="where jobs live on the box: relative to the login's home, "
                                                          "or absolute")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        from .sshclient import parse_target  # plain parsing: paramiko is imported only to connect

        try:
            parse_target(v)
        except UserError as e:
            raise ValueError(_err(e)) from None
        return v

    @field_validator("remote_dir")
    @classmethod
    def _remote_dir(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._/-]+", v) or ".." in v.split("/"):
            raise ValueError(f"bad remote_dir {v!r}: a plain path (letters, digits, '.', '_', '-', '/')")
        return v


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
    subnet: str | None = Field(None, description="subnet id (default: the zone's default subnet)")
    security_group: str | None = Field(None, description="security group id (default: one with no inbound rule, "
                                                         "made once per region)")
    instance_profile: str | None = Field(None, description="IAM instance profile the node runs as (its store access)")
    key_name: str | None = Field(None, description="EC2 key pair for SSH access (default: none, no inbound port)")
    key_path: str | None = Field(None, description="private key file of --key-name (live `logs -f` over SSH)")
    ssh_user: str = Field("ubuntu", description="login user of the AMI for SSH (with --key-name)")
    ssh_from: str | None = Field(None, description="CIDR allowed to reach port 22 of the node's own security group "
                                                   "(default: your public IP /32)")

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


class Job(BaseModel):
    """A script plus everything needed to run it somewhere and tear it down afterwards."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    script: str = Field(description="path of the script to run, relative to workdir")
    args: list[str] = Field(default_factory=list, description="arguments passed to the script untouched")
    name: str | None = Field(None, description="run name; default: the script's file name without .py")
    backend: str = Field("local", description="where to run: local, ssh, modal, ec2, k8s")
    gpu: str | None = Field(None, description="GPU as TYPE[:COUNT], e.g. A10G, A100-80GB:2, H100:8")
    cpus: float | None = Field(None, gt=0, description="CPU cores")
    memory: str | None = Field(None, description="memory, e.g. 32Gi")
    disk: str | None = Field(None, description="disk, e.g. 200Gi")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    secrets: list[str] = Field(default_factory=list, description="names of secrets (env vars) to pass; never values")
    experiment: str = Field("default", description="experiment name: the datapool folder experiments/<name>")
    datapool: str | None = Field(None, description="datapool store URL: file:///abs/dir or s3://bucket/prefix")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint for an s3:// datapool, e.g. http://minio:9000")
    max_runtime: int | None = Field(None, description="hard limit, e.g. 2h; the script is stopped after it")
    grace_period: int = Field(30, description="seconds between SIGTERM and SIGKILL when stopping the script")
    push_interval: int = Field(30, description="how often checkpoints and reports are pushed to the store while running")
    spot: bool = Field(False, description="use spot/preemptible capacity")
    max_restarts: int = Field(0, ge=0, le=20, description="relaunch a preempted job up to N times; it resumes "
                              "from the newest checkpoint it pushed")
    terminate_after: bool = Field(False, description="client waits for the end and tears the machine down")
    keep_on_failure: bool = Field(False, description="keep the machine after a failure, for debugging")
    num_nodes: int = Field(1, description="machines (k8s: pods of an Indexed Job, at most 64)")
    workdir: str = Field(".", description="project root whose files travel with the job")
    ssh: SshTarget | None = Field(None, description="the box for --backend ssh: host, identity, python, remote_dir")
    ec2: Ec2Options | None = Field(None, description="--backend ec2: region, zone, instance type, AMI, network")
    k8s: K8sOptions | None = Field(None, description="--backend k8s: context, namespace, image, GPU label, "
                                                    "pending timeout")
    modal: ModalOptions | None = Field(None, description="--backend modal: Modal Secrets by name")

    @field_validator("script")
    @classmethod
    def _script(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("script is empty: give the path of a script, e.g. runners/sft_run.py")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.match(v):
            raise ValueError(f"bad name {v!r}: use letters, digits, '.', '_' or '-' (at most 63)")
        return v

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        from .backends import check_backend

        try:
            check_backend(v)
        except UserError as e:
            raise ValueError(_err(e)) from None
        return v

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu(cls, v: Any) -> str | None:
        if v is None or v == "" or (isinstance(v, str) and v.lower() in ("none", "cpu")):
            return None
        try:
            return str(parse_gpu(str(v)))
        except UserError as e:
            raise ValueError(_err(e)) from None

    @field_validator("memory", "disk", mode="before")
    @classmethod
    def _size(cls, v: Any, info) -> str | None:
        if v is None:
            return None
        try:
            parse_size(v, info.field_name)
        except UserError as e:
            raise ValueError(_err(e)) from None
        return str(v)

    @field_validator("max_runtime", "grace_period", "push_interval", mode="before")
    @classmethod
    def _duration(cls, v: Any, info) -> int | None:
        if v is None:
            return None
        try:
            return parse_duration(v, info.field_name.replace("_", "-"))
        except UserError as e:
            raise ValueError(_err(e)) from None

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _ENV_KEY.match(key):
                raise ValueError(f"bad env name {key!r}: use letters, digits and '_', not starting with a digit")
            if key in RESERVED_ENV:
                flag = RESERVED_ENV[key]
                raise ValueError(f"{key} is set by launch" + (f"; use {flag} instead" if flag else "; drop it"))
        return v

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: list[str]) -> list[str]:
        for key in v:
            if not _ENV_KEY.match(key):
                raise ValueError(f"bad secret name {key!r}: a secret is named like an env var, e.g. HF_TOKEN")
        return v

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"bad experiment name {v!r}: use letters, digits, '.', '_' or '-' (at most 63)")
        return v

    @field_validator("datapool")
    @classmethod
    def _datapool(cls, v: str | None) -> str | None:
        if v is None:
            return None
        url = urlparse(v)
        if url.scheme not in DATAPOOL_SCHEMES:
            raise ValueError(
                f"unsupported datapool URL {v!r}: use one of " + ", ".join(f"{s}://" for s in DATAPOOL_SCHEMES)
                + " (e.g. file:///data/pool or s3://bucket/prefix)"
            )
        if url.scheme == "file" and (url.netloc or not url.path.startswith("/")):
            raise ValueError(f"bad datapool URL {v!r}: a file URL needs an absolute path, e.g. file:///data/pool")
        if url.scheme == "s3" and not url.netloc:
            raise ValueError(f"bad datapool URL {v!r}: name the bucket, e.g. s3://my-bucket/pool")
        if url.scheme == "pvc" and not url.netloc:
            raise ValueError(f"bad datapool URL {v!r}: name the claim, e.g. pvc://team-pool/datapool")
        if url.scheme == "modal-volume" and not url.netloc:
            raise ValueError(f"bad datapool URL {v!r}: name the volume, e.g. modal-volume://team-pool/datapool")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and (urlparse(v).scheme not in ("http", "https") or not urlparse(v).netloc):
            raise ValueError(f"bad endpoint URL {v!r}: use http(s)://host[:port], e.g. http://127.0.0.1:9000")
        return v

    @field_validator("num_nodes")
    @classmethod
    def _nodes(cls, v: int) -> int:
        if not 1 <= v <= MAX_NODES:
            raise ValueError(f"num_nodes={v}: use 1..{MAX_NODES} (more than one node needs --backend k8s)")
        return v

    @model_validator(mode="after")
    def _backend_fields(self) -> "Job":
        if self.backend == "ssh" and self.ssh is None:
            raise ValueError("--backend ssh needs a box: pass --host [user@]host[:port] (or an ssh: section "
                             "in the profile)")
        if self.ssh is not None and self.backend != "ssh":
            raise ValueError(f"--host / ssh: only apply to --backend ssh, not {self.backend}; add --backend ssh")
        if self.modal is not None and self.backend != "modal":
            raise ValueError(f"modal: only applies to --backend modal, not {self.backend}; add --backend modal")
        if self.k8s is not None and self.backend != "k8s":
            raise ValueError(f"--context / --namespace / --image / k8s: only apply to --backend k8s, not "
                             f"{self.backend}; add --backend k8s")
        if self.ec2 is not None and self.backend != "ec2":
            raise ValueError(f"--region / --instance-type / ec2: only apply to --backend ec2, not {self.backend}; "
                             "add --backend ec2")
        if self.endpoint_url and not (self.datapool or "").startswith("s3://"):
            raise ValueError("--endpoint-url applies to an s3:// datapool; pass --datapool s3://bucket/prefix too")
        return self

    # -- derived values ------------------------------------------------------------------------------------------

    @property
    def run_name(self) -> str:
        return self.name or Path(self.script).stem

    @property
    def gpu_request(self) -> GpuRequest | None:
        return parse_gpu(self.gpu) if self.gpu else None

    @property
    def memory_bytes(self) -> int | None:
        return parse_size(self.memory) if self.memory else None

    @property
    def disk_bytes(self) -> int | None:
        return parse_size(self.disk) if self.disk else None

    def script_path(self) -> Path:
        return (Path(self.workdir) / self.script).resolve()

    def check_script(self) -> None:
        path = self.script_path()
        if not path.is_file():
            hint = "check the path (it is relative to the project root you launch from)"
            raise UserError(f"script not found: {self.script} ({path}); {hint}")


def build_job(source: str = "job", **fields: Any) -> Job:
    """Job(**fields) with validation errors turned into one clear UserError line."""
    try:
        return Job(**fields)
    except ValidationError as exc:
        raise UserError(explain(exc, source)) from None


def explain(exc: ValidationError, source: str) -> str:
    """One line for the first problem pydantic found, naming the field and the fix."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "job"
    kind = err["type"]
    if kind == "extra_forbidden":
        field = str(err["loc"][-1])
        return (f"{source}: unknown field '{field}'{did_you_mean(field, Job.model_fields)}; "
                f"valid fields: {', '.join(Job.model_fields)}")
    msg = err["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        return f"{source}: {msg}" if loc == "job" else f"{source}: field '{loc}': {msg}"
    got = err.get("input")
    desc = Job.model_fields[str(err["loc"][0])].description if err["loc"] and str(err["loc"][0]) in Job.model_fields else ""
    return f"{source}: field '{loc}': {msg.lower()}, got {got!r}" + (f" ({desc})" if desc else "")
