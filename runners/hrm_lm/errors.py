"""User-facing errors: one line, printed as `error: ...`, exit 2, before any work or any write.

HRM-LM raises the runners' one error type (runners/common/errors.py); the subclass only keeps the name that the
HRM-LM code and its tests use.
"""
from __future__ import annotations

from runners.common.errors import RunnerError, die


class HRMUserError(RunnerError):
    """A mistake the user can fix (bad flag, missing data, mismatched config)."""


fail = die
