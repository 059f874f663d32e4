"""The error data code raises for user mistakes; runners turn it into `error: ...` and exit 2.

A RunnerError (runners/common/errors.py), so any runner that catches the one runner error type catches it too.
"""
from runners.common.errors import RunnerError


class DataError(RunnerError):
    """A user mistake (bad path, format, field, mixture): one line naming the problem and the fix."""
