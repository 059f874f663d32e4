"""Datapool stores and the sync engine.

`open_store(url)` gives a store (`file:///abs/dir`, `s3://bucket/prefix`); `sync(src, dst, ...)` mirrors one
into the other by manifest. boto3 is imported only when an S3 store first talks to S3.
"""
from .errors import DatapoolUserError, IntegrityError, SyncError
from .local import LocalStore
from .stores import mount_only, open_store
from .sync import PathFilter, Reporter, SyncResult, sync

__all__ = ["DatapoolUserError", "IntegrityError", "LocalStore", "PathFilter", "Reporter", "SyncError",
           "SyncResult", "mount_only", "open_store", "sync"]
