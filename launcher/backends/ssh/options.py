"""The `ssh:` section of a profile (`--host`, `--identity` on the command line), and those two flags.

`--host` and `--identity` are declared here once: the ssh backend and the Slurm backend (a login node) both list
them, and the CLI puts their values into the section of whichever backend the job chose."""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...errors import UserError
from ..entry import Flag

HOST = Flag("--host", "host", "the box to ssh into ([USER@]HOST[:PORT])", metavar="[USER@]HOST[:PORT]")
IDENTITY = Flag("--identity", "identity", "private key file for --host (default: your ssh agent and ~/.ssh keys)",
                metavar="FILE", short="-i")


def check_host(v: str) -> str:
    """`[user@]host[:port]`, refused in one line when it cannot be one (paramiko is imported only to connect)."""
    from ...sshclient import parse_target

    try:
        parse_target(v)
    except UserError as e:
        raise ValueError(str(e.args[0])) from None
    return v


def check_remote_dir(v: str) -> str:
    """Where jobs live on the remote side: a plain path, relative to the login's home or absolute."""
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", v) or ".." in v.split("/"):
        raise ValueError(f"bad remote_dir {v!r}: a plain path (letters, digits, '.', '_', '-', '/')")
    return v


class SshOptions(BaseModel):
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
        return check_host(v)

    @field_validator("remote_dir")
    @classmethod
    def _remote_dir(cls, v: str) -> str:
        return check_remote_dir(v)
