"""The `slurm:` section of a profile, and its flags (`--partition`, `--account`, `--qos`, `--constraint`, `--gres`;
`--host` / `--identity` name a login node, the same two flags as the ssh backend's).

Kept apart from the backend so the registry's entry can be read without importing the backend or paramiko.
`--num-nodes`, `--torchrun` and `--pending-timeout` are core Job fields; this backend honours them.
"""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..entry import Flag
from ..ssh.options import HOST, IDENTITY, check_host, check_remote_dir

FLAGS = (
    HOST, IDENTITY,
    Flag("--partition", "partition", "Slurm partition (default: the cluster's default partition)", metavar="NAME"),
    Flag("--account", "account", "Slurm account to charge (sbatch --account)", metavar="NAME"),
    Flag("--qos", "qos", "Slurm quality of service (sbatch --qos)", metavar="NAME"),
    Flag("--constraint", "constraint", "node features the job needs (sbatch --constraint), e.g. 'a100&ib'",
         metavar="EXPR"),
    Flag("--gres", "gres", "generic resources beside --gpu (sbatch --gres), e.g. nvme:1", metavar="LIST"),
)

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_PARTITIONS = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")
_CONSTRAINT = re.compile(r"[A-Za-z0-9_.&|,\[\]*:()!-]+")
_GRES = re.compile(r"[A-Za-z][A-Za-z0-9_]*(:[A-Za-z0-9_.-]+)?(:\d+)?(,[A-Za-z][A-Za-z0-9_]*(:[A-Za-z0-9_.-]+)?(:\d+)?)*")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SlurmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(None, description="[user@]host[:port] of a login node to submit from over SSH "
                                               "(default: sbatch on this machine)")
    identity: str | None = Field(None, description="private key file for the login node (default: your ssh agent "
                                                   "and ~/.ssh keys)")
    known_hosts: str | None = Field(None, description="known_hosts file to check the login node's host key against "
                                                      "(default ~/.ssh/known_hosts; never added to)")
    python: str = Field("python3", description="interpreter on the nodes that has launcher's dependencies")
    remote_dir: str = Field(".launcher-node", description="where jobs live on the cluster's shared filesystem: "
                                                          "relative to your home, or absolute")
    partition: str | None = Field(None, description="partition (default: the cluster's default)")
    account: str | None = Field(None, description="account to charge (sbatch --account)")
    qos: str | None = Field(None, description="quality of service (sbatch --qos)")
    constraint: str | None = Field(None, description="node features the job needs (sbatch --constraint)")
    gres: str | None = Field(None, description="generic resources beside --gpu (sbatch --gres), e.g. nvme:1")
    gres_types: dict[str, str] = Field(default_factory=dict, description="catalog GPU name -> the cluster's gres "
                                       "type, e.g. {A100-80GB: a100} (default: the name lowercased, without its "
                                       "memory: a100)")
    slurm_env: dict[str, str] = Field(default_factory=dict, description="environment for the Slurm commands, here "
                                      "or on the login node, e.g. {SLURM_CONF: /etc/slurm/other.conf}")
    master_port: int | None = Field(None, ge=1024, le=65535, description="torchrun rendezvous port on the first "
                                    "node (default: 20000 + the Slurm job id mod 20000, so two jobs sharing a node "
                                    "do not collide)")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        return None if v is None else check_host(v)

    @field_validator("remote_dir")
    @classmethod
    def _remote_dir(cls, v: str) -> str:
        return check_remote_dir(v)

    @field_validator("python")
    @classmethod
    def _python(cls, v: str) -> str:
        if not v or re.search(r"\s|['\"`$;&|<>]", v):
            raise ValueError(f"bad python {v!r}: an interpreter name or path, e.g. python3 or /opt/py/bin/python")
        return v

    @field_validator("partition")
    @classmethod
    def _partition(cls, v: str | None) -> str | None:
        if v is not None and not _PARTITIONS.fullmatch(v):
            raise ValueError(f"bad partition {v!r}: a partition name (letters, digits, '_', '.', '-'), or several "
                             "joined by ',', e.g. gpu or gpu,gpu-long")
        return v

    @field_validator("account", "qos")
    @classmethod
    def _name(cls, v: str | None, info) -> str | None:
        if v is not None and not _NAME.fullmatch(v):
            raise ValueError(f"bad {info.field_name} {v!r}: a Slurm name (letters, digits, '_', '.', '-')")
        return v

    @field_validator("constraint")
    @classmethod
    def _constraint(cls, v: str | None) -> str | None:
        if v is not None and not _CONSTRAINT.fullmatch(v):
            raise ValueError(f"bad constraint {v!r}: node features joined by & | , (no spaces), e.g. a100&ib")
        return v

    @field_validator("gres")
    @classmethod
    def _gres(cls, v: str | None) -> str | None:
        if v is not None and not _GRES.fullmatch(v):
            raise ValueError(f"bad gres {v!r}: NAME[:TYPE][:COUNT] joined by ',', e.g. nvme:1 or gpu:a100:2")
        return v

    @field_validator("gres_types")
    @classmethod
    def _gres_types(cls, v: dict[str, str]) -> dict[str, str]:
        from ...errors import UserError
        from ...gpus import parse_gpu

        out = {}
        for name, gres_type in v.items():
            try:
                gpu = parse_gpu(str(name)).type
            except UserError as e:
                raise ValueError(f"gres_types: {e.args[0]}") from None
            if gpu is None or ":" in str(name):
                raise ValueError(f"gres_types: key {name!r} must be a GPU type from the catalog, e.g. A100-80GB")
            if not _NAME.fullmatch(str(gres_type)):
                raise ValueError(f"gres_types: bad gres type {gres_type!r} for {name}: the cluster's type name, "
                                 "e.g. a100")
            out[gpu.name] = str(gres_type)
        return out

    @field_validator("slurm_env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _ENV_KEY.fullmatch(str(key)):
                raise ValueError(f"slurm_env: bad variable name {key!r}: letters, digits and '_', e.g. SLURM_CONF")
        return {str(k): str(val) for k, val in v.items()}
