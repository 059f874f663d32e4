"""Datapool errors: user mistakes (exit 2) versus failures while moving data (exit 1)."""
from __future__ import annotations

from launcher.errors import UserError


class DatapoolUserError(UserError):
    """A bad URL, a missing bucket, no credentials, a root that is a file: nothing was changed."""

    exit_code = 2


class SyncError(Exception):
    """Some files could not be moved or verified; the others were, and a re-run converges."""

    exit_code = 1


class IntegrityError(SyncError):
    """Bytes that arrived do not match the hash the source recorded."""
