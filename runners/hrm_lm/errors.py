"""User-facing errors: one line, printed as `error: ...`, exit 2, before any work or any write."""
from __future__ import annotations

import sys


class HRMUserError(Exception):
    """A mistake the user can fix (bad flag, missing data, mismatched config)."""


def fail(message: str) -> "NoReturn":  # noqa: F821
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
