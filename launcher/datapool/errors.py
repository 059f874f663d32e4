"""Datapool errors: user mistakes (exit 2) versus failures while moving data (exit 1)."""
from __future__ import annotations

try:  # the CLI turns UserError into `error: ...` and exit 2
    from launcher.errors import UserError as _UserError
except ImportError:  # pragma: no cover - only while the lead's module is missing
    class _UserError(Exception):
        exit_code = 2


class DatapoolUserError(_UserError):
    """A bad URL, a missing bucket, no credentials, a root that is a file: nothing was changed."""

    exit_code = 2


class SyncError(Exception):
    """Some files could not be moved or verified; the others were, and a re-run converges."""

    exit_code = 1


class IntegrityError(SyncError):
    """Bytes that arrived do not match the hash the source recorded."""
