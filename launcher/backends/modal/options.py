"""The `modal:` section of a profile. Kept apart from the backend so launcher/job.py validates it without `modal`.

The Modal environment is Modal's own setting (MODAL_ENVIRONMENT, or the token's default), not a field here: every
`launch` command (status, logs, sync, the sweeper) must find the job's app and volume in the same one."""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Modal object names: letters, digits, '-', '_', '.', at most 64 (Secrets and Volumes alike).
MODAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ModalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secrets: list[str] = Field(default_factory=list, description="Modal Secrets (made with `modal secret create`) "
                                                                 "whose keys the job gets as env vars")

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: list[str]) -> list[str]:
        for name in v:
            if not MODAL_NAME.match(name):
                raise ValueError(f"bad Modal secret name {name!r}: letters, digits, '.', '_' or '-' (at most 64)")
        return v
