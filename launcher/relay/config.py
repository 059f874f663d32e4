"""What binds one job to a relay run: `RelayBinding` (the Job's `relay:` section, and the AgentSpec's copy of it),
and the seed's flat `run.yaml` spelling turned into it.

Light on purpose (pydantic only): the Job model imports it, and `launch --help` stays fast.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import UserError
from .auth import SECRET_ENV

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_TTL = 60
# The trainer each `mode` runs, relative to the project root; `command:` replaces it with any command.
MODE_SCRIPTS = {"mock": "runners/mock_run.py", "sft": "runners/sft_run.py", "rl": "runners/rl_run.py"}
COMMAND_SCRIPT = "runners/shell_run.sh"
# The seed's way to swap the trainer per mode, read from the worker's env.
SEED_COMMAND_ENV = {"sft": "SLIME_SFT_CMD", "rl": "SLIME_RL_CMD"}


def stop_margin(ttl: float) -> float:
    """How long before the commander's TTL ends a worker wants its script dead: clock drift and one slow answer."""
    return max(0.5, ttl / 10)


def renew_every(ttl: float) -> float:
    return ttl / 4


class RelayBinding(BaseModel):
    """The job is one worker of relay run `run_id`, whose commander answers at `url`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="the commander's address as workers reach it (commander.public_url)")
    run_id: str = Field(description="the relay run this worker serves")
    worker_id: str | None = Field(None, description="this worker's name at the commander (default: the job id)")
    ttl: float = Field(DEFAULT_TTL, gt=0, description="lease TTL in seconds (the run's, as registered)")
    secret_env: str = Field(SECRET_ENV, description="env var holding the shared secret (sent as a job secret)")
    hf_repo: str | None = Field(None, description="Hub repo to upload committed checkpoints to (org/name)")
    hf_sync: Literal["checkpoints", "final"] = Field("checkpoints", description="upload every committed checkpoint, "
                                                     "or only the last one when the run finishes")
    hf_dry_run: bool = Field(False, description="print what would be uploaded to the Hub, upload nothing")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parsed = urlparse(v)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"bad commander URL {v!r}: use http(s)://host:port (the address workers reach)")
        return v.rstrip("/")

    @field_validator("run_id", "worker_id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        if v is not None and not _ID.match(v):
            raise ValueError(f"bad id {v!r}: use letters, digits, '.', '_' or '-' (at most 63)")
        return v

    @field_validator("secret_env")
    @classmethod
    def _env(cls, v: str) -> str:
        if not _ENV.match(v):
            raise ValueError(f"bad env name {v!r} for the shared secret, e.g. RELAY_SHARED_SECRET")
        return v


SEED_FIELDS = ("commander_url", "run_id", "worker_id", "mode", "relay_shared_secret", "relay_shared_secret_env",
               "hf_repo", "hf_dry_run", "hf_sync")


def from_seed_profile(data: dict[str, Any], source: str, *, warn=None) -> dict[str, Any]:
    """The seed's run.yaml (flat `commander_url`, `run_id`, `worker_id`, `mode`, `relay_shared_secret[_env]`) as
    Job fields: a `relay:` section, the secret's name among the job's secrets, and the mode's trainer as the script
    (when the profile names none). An inline secret is accepted with a warning and moved into this process's
    environment, so it never reaches a plan, a record or a log."""
    if not any(k in data for k in SEED_FIELDS):
        return data
    data = dict(data)
    seed = {k: data.pop(k) for k in SEED_FIELDS if k in data}
    if "commander_url" not in seed or "run_id" not in seed:
        missing = "commander_url" if "commander_url" not in seed else "run_id"
        raise UserError(f"{source}: relay field '{missing}' is missing; a relay worker needs commander_url and run_id")
    env_name = str(seed.get("relay_shared_secret_env") or SECRET_ENV)
    if "relay_shared_secret" in seed:
        (warn or _warn)(f"{source}: relay_shared_secret written in the file; prefer relay_shared_secret_env: NAME "
                        "(the value is used from this process's environment only, never copied)")
        os.environ[env_name] = str(seed["relay_shared_secret"])
    relay = {"url": seed["commander_url"], "run_id": seed["run_id"], "secret_env": env_name}
    for key in ("worker_id", "hf_repo", "hf_dry_run", "hf_sync"):
        if key in seed:
            relay[key] = seed[key]
    data["relay"] = {**relay, **(data.get("relay") or {})}
    mode = seed.get("mode")
    if mode is not None:
        if mode not in MODE_SCRIPTS:
            raise UserError(f"{source}: mode {mode!r} is not one of {', '.join(MODE_SCRIPTS)}")
        data.setdefault("script", MODE_SCRIPTS[mode])
    return data


def _warn(message: str) -> None:
    sys.stderr.write(f"[launcher] warning: {message}\n")
