"""`launch check --backend local`: the agent runs here, in this interpreter."""
from __future__ import annotations

import sys

from ..base import Check


def checks(options=None) -> list[Check]:
    return [Check("python", True, f"{sys.version.split()[0]} at {sys.executable}: jobs run here as a subprocess")]
