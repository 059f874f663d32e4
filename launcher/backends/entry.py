"""What the core knows of a backend without importing it: its name, its options, its flags.

Every backend package's `__init__.py` defines `ENTRY = BackendEntry(...)` and imports nothing heavy (its options
model only: pydantic), so `launch --help` can list every backend's flags while torch, boto3, kubernetes and modal
stay unimported. The backend class itself (`cls`, "module:Class") is imported only when a job uses it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the options models import pydantic themselves; `launch sync` and `launch jobs` need none
    from pydantic import BaseModel


@dataclass(frozen=True)
class Flag:
    """A command-line flag of `launch` that sets one field of a backend's options (its profile section).

    The same Flag object may be listed by several backends (`--host` for ssh and for a Slurm login node): the CLI
    declares it once and puts its value into the section of the backend the job chose."""

    name: str  # "--partition"
    field: str  # the Options field it sets
    help: str
    metavar: str | None = None
    is_flag: bool = False
    short: str | None = None  # "-i"

    @property
    def dest(self) -> str:
        """The click parameter name: unique across backends, so two flags never collide."""
        return "opt_" + self.name.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class BackendEntry:
    name: str
    cls: str  # "module:Class", imported only when used
    summary: str  # one line for `launch --help` ("a box you can ssh into")
    options: type[BaseModel] | None = None  # the profile section named after the backend
    flags: tuple[Flag, ...] = ()
    example: str | None = None  # one `launch ...` line for `launch --help`
    # When the options have required fields and the job gives no section: how to give them ("pass --host ...").
    needs: str | None = None

    def parse_options(self, section: Any) -> BaseModel | None:
        """The chosen backend's section, validated (pydantic errors propagate to the Job's validation)."""
        if self.options is None:
            return None
        if section is None:
            return self.options()
        if isinstance(section, self.options):
            return section
        return self.options.model_validate(section)
