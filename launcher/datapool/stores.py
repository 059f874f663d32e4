"""Open a store from its URL: `file:///abs/dir`, `s3://bucket/prefix` or `modal-volume://NAME/path`."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from .base import Store
from .errors import DatapoolUserError
from .local import LocalStore

SCHEMES = "file:///abs/dir, s3://bucket/prefix or modal-volume://NAME/path"
MOUNT_ONLY = ("pvc",)  # stores only the nodes reach, as their datapool folder (a Kubernetes claim)


def mount_only(url: str | None) -> bool:
    """A store the client cannot open and the node need not sync: the node mounts it as its datapool."""
    return bool(url) and urlparse(url).scheme.lower() in MOUNT_ONLY


def open_store(url: str, sub: str = "", *, endpoint_url: str | None = None, region: str | None = None,
               profile: str | None = None, workers: int = 16, readonly: bool = False) -> Store:
    """`sub` narrows the store to a folder inside it (e.g. `experiments/<name>`)."""
    url = (url or "").strip()
    if not url:
        raise DatapoolUserError(f"no datapool store given: pass --datapool {SCHEMES}")
    if url.startswith("/"):
        url = Path(url).as_uri()
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DatapoolUserError(f"file URL '{url}' has a host; use three slashes: file:///abs/dir")
        path = unquote(parsed.path)
        if not path.startswith("/"):
            raise DatapoolUserError(f"file URL '{url}' is not absolute: use file:///abs/dir")
        store = LocalStore(Path(path), sub, readonly=readonly)
        store.flag = "--datapool"
        return store
    if scheme == "s3":
        prefix = "/".join(p for p in (unquote(parsed.path).strip("/"), sub.strip("/")) if p)
        from .s3 import S3Store

        return S3Store(parsed.netloc, prefix, endpoint_url=endpoint_url, region=region, profile=profile,
                       workers=workers)
    if scheme == "modal-volume":
        from .modal_volume import VolumeStore, parse

        name, path = parse(url)
        return VolumeStore(name, "/".join(p for p in (path, sub.strip("/")) if p), create=not readonly)
    shown = f"'{scheme}://'" if scheme else "no scheme"
    raise DatapoolUserError(f"unsupported datapool URL '{url}' ({shown}): use {SCHEMES}")
