"""Open a store from its URL: `file:///abs/dir`, `s3://bucket/prefix`, `sftp://host/~/dir` or `modal-volume://NAME/path`."""
from __future__ import annotations

from pathlib import Path

from .base import Store
from .errors import DatapoolUserError
from .local import LocalStore
from .url import StoreUrl

SCHEMES = "file:///abs/dir, s3://bucket/prefix, sftp://[user@]host[:port]/~/dir or modal-volume://NAME/path"
MOUNT_ONLY = ("pvc",)  # stores only the nodes reach, as their datapool folder (a Kubernetes claim)


def mount_only(url: str | None) -> bool:
    """A store the client cannot open and the node need not sync: the node mounts it as its datapool."""
    return bool(url) and StoreUrl.of(url).scheme in MOUNT_ONLY


def open_store(url: str, sub: str = "", *, endpoint_url: str | None = None, region: str | None = None,
               profile: str | None = None, workers: int = 16, readonly: bool = False) -> Store:
    """`sub` narrows the store to a folder inside it (e.g. `experiments/<name>`)."""
    if not (url or "").strip():
        raise DatapoolUserError(f"no datapool store given: pass --datapool {SCHEMES}")
    try:
        parsed = StoreUrl.of(url)
    except ValueError as exc:
        raise DatapoolUserError(str(exc)) from None
    if parsed.scheme == "file":
        store = LocalStore(Path(parsed.path), sub, readonly=readonly)
        store.flag = "--datapool"
        return store
    if parsed.scheme == "s3":
        from .s3 import S3Store

        return S3Store(parsed.netloc, parsed.under(sub), endpoint_url=endpoint_url, region=region, profile=profile,
                       workers=workers)
    if parsed.scheme == "sftp":
        from .sftp import SftpStore

        return SftpStore(parsed, sub, readonly=readonly)
    if parsed.scheme == "modal-volume":
        from .modal_volume import VolumeStore, parse

        name, path = parse(parsed)
        return VolumeStore(name, "/".join(p for p in (path, sub.strip("/")) if p), create=not readonly)
    raise DatapoolUserError(f"a {parsed.scheme}:// store is only mounted by nodes: use {SCHEMES}")
