"""A backend from outside the launcher package: registered through LAUNCHER_BACKENDS=toy=toy_backend alone.

It proves the boundary: its options (the `toy:` profile section), its flag (`--toy-label`) and its class plug in
with no edit to launcher/. The class runs jobs like the local backend (it is one, under another name), puts its
label into the rendered request (so a test sees its option travel from the command line to the request), takes
jobs away like a cluster does (an unasked SIGTERM is a preemption) and can be short of capacity for its first
relaunches (`short_restarts`), so the retry of a relaunch is tested through the real `launch watch`."""
from pydantic import BaseModel, ConfigDict, Field, field_validator

from launcher.backends.entry import BackendEntry, Flag


class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field("plain", description="a word the request carries")
    short_restarts: int = Field(0, ge=0, description="relaunches refused for capacity before one goes through")

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        if not v.isalpha():
            raise ValueError(f"bad label {v!r}: letters only")
        return v


ENTRY = BackendEntry(name="toy", cls="toy_backend.backend:ToyBackend", summary="a test's toy", options=ToyOptions,
                     flags=(Flag("--toy-label", "label", "a word the request carries", metavar="WORD"),))
