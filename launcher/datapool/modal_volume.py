"""A Modal Volume as the datapool store: `modal-volume://NAME/path` (`modal` is imported only here, when used).

Three views of one volume:
  * `VolumeStore`, a Store for the sync engine: `launch sync up|down --datapool modal-volume://...` moves data
    between a laptop and the volume (the volume is created on the first upload);
  * `VolumeFiles`, a job's folder for launcher/jobstore.py: result.json, log.txt and the cancel marker, read and
    written through Modal's API from the laptop and from the agent's cancel poll alike;
  * `MountedVolume`, the agent's datapool on a Modal node, where the volume is mounted at the datapool root: the
    job writes into it directly, and a commit after each push point (and at the end, result.json last) makes the
    writes durable and visible outside the container.

Modal lists a volume's files with size and time but no hash, so a file of the same size on both sides is copied
again: a resync moves changed and same-size files, never misses one.
"""
from __future__ import annotations

import io
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

from .base import Entry, Store
from .errors import DatapoolUserError
from .hashing import DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, StreamHasher, hash_file


def parse(url: str) -> tuple[str, str]:
    """`modal-volume://NAME/path` -> (NAME, 'path')."""
    parsed = urlparse(url)
    if parsed.scheme != "modal-volume" or not parsed.netloc:
        raise DatapoolUserError(f"bad Modal volume URL {url!r}: use modal-volume://NAME/path")
    return parsed.netloc, unquote(parsed.path).strip("/")


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _volume(name: str, create: bool):
    import modal

    return modal.Volume.from_name(name, create_if_missing=create)


def _user_error(exc: BaseException, name: str) -> Exception:
    import modal.exception as mx

    if isinstance(exc, mx.AuthError):
        return DatapoolUserError(f"Modal refused the credentials for volume {name}: run `modal token new` "
                                 "(or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET)")
    return exc


def _transfer_limit(size: int) -> float:
    """How long one file's transfer may take before the link counts as dead: one call's time, plus the size at the
    slowest rate still called alive (netpolicy.TRANSFER_FLOOR_BPS)."""
    from .. import netpolicy

    return netpolicy.seconds(netpolicy.MODAL_CALL_S) + size / netpolicy.TRANSFER_FLOOR_BPS


def ensure_volume(url: str, *, dry_run: bool = False) -> bool:
    """The volume `url` names, created if missing (`dry_run`: only looked up); True when it was missing. Bounded like
    every Modal call."""
    import modal.exception as mx

    from ..backends.modal.app import bounded

    name, _ = parse(url)
    try:
        bounded(lambda: _volume(name, False).hydrate(), f"looking up volume {name}")
        return False
    except mx.NotFoundError:
        pass
    except mx.Error as exc:
        raise _user_error(exc, name) from None
    if dry_run:
        return True
    try:
        bounded(lambda: _volume(name, True).hydrate(), f"creating volume {name}")
    except mx.Error as exc:
        raise _user_error(exc, name) from None
    return True


class VolumeStore(Store):
    """`modal-volume://NAME/prefix` (+ `sub`) for the sync engine. A missing volume lists as empty; the first
    upload creates it (unless the store was opened read-only)."""

    def __init__(self, name: str, prefix: str = "", *, create: bool = True):
        self.name, self.prefix = name, prefix.strip("/")
        self.url = f"modal-volume://{name}/{self.prefix}" if self.prefix else f"modal-volume://{name}"
        self.create = create
        self._vol = None

    @property
    def vol(self):
        if self._vol is None:
            self._vol = _volume(self.name, self.create)
        return self._vol

    def _key(self, rel: str) -> str:
        return _join(self.prefix, rel)

    def probe(self) -> None:
        """Credentials work (one lookup); a missing volume is fine: a job or an upload creates it."""
        import modal.exception as mx

        from ..backends.modal.app import bounded

        try:
            bounded(lambda: _volume(self.name, False).hydrate(), f"looking up volume {self.name}")
        except mx.NotFoundError:
            return
        except mx.Error as exc:
            raise _user_error(exc, self.name) from None

    def list(self, pool=None, settle_seconds: float = 0.0, want=None) -> dict[str, Entry]:
        import modal.exception as mx
        from modal.volume import FileEntryType

        from ..backends.modal.app import bounded

        try:
            # Listing never creates the volume.
            vol = bounded(lambda: _volume(self.name, False).hydrate(), f"looking up volume {self.name}")
        except mx.NotFoundError:
            return {}
        except mx.Error as exc:
            raise _user_error(exc, self.name) from None
        try:
            found = bounded(lambda: vol.listdir(self.prefix or "/", recursive=True), f"listing volume {self.name}")
        except (mx.NotFoundError, FileNotFoundError):
            return {}  # no such folder (yet)
        out = {}
        cut = len(self.prefix) + 1 if self.prefix else 0
        for e in found:
            if e.type != FileEntryType.FILE:
                continue
            rel = e.path.lstrip("/")[cut:]
            if want is None or want(rel):
                out[rel] = Entry(rel, e.size, float(e.mtime))
        return out

    def put_file(self, src: Path, rel: str, entry: Entry) -> Entry:
        # The hashes the local cache learns (the client hashes again for its own upload: Modal stores by sha256).
        from ..backends.modal.app import bounded

        sha, etag = hash_file(src, entry.size, DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE)

        def upload():
            with self.vol.batch_upload(force=True) as batch:
                batch.put_file(Path(src), self._key(rel))

        bounded(upload, f"uploading {rel} to volume {self.name}", _transfer_limit(entry.size))
        return Entry(rel, entry.size, entry.mtime, sha256=sha, etag=etag)

    def fetch(self, rel: str, entry: Entry, dest_tmp: Path, dest_threshold: int, dest_part_size: int):
        from ..backends.modal.app import bounded

        hasher = StreamHasher(entry.size, dest_threshold, dest_part_size)

        def download() -> int:
            got = 0
            with open(dest_tmp, "wb") as f:
                for chunk in self.vol.read_file(self._key(rel)):
                    f.write(chunk)
                    hasher.update(chunk)
                    got += len(chunk)
            return got

        got = bounded(download, f"downloading {rel} from volume {self.name}", _transfer_limit(entry.size))
        if got != entry.size:
            from .errors import IntegrityError

            raise IntegrityError(f"{rel}: got {got} bytes from volume {self.name}, listed {entry.size}")
        return hasher.result()

    def delete(self, paths: list[str]) -> None:
        from ..backends.modal.app import bounded

        def remove(rel: str) -> None:
            try:
                self.vol.remove_file(self._key(rel))
            except FileNotFoundError:
                pass

        for rel in paths:
            bounded(lambda: remove(rel), f"removing {rel} from volume {self.name}")

    def close(self) -> None:
        self._vol = None


class VolumeFiles:
    """One job's folder in a volume (launcher/jobstore.py's small objects). Each call is bounded like every Modal
    control-plane call (launcher/backends/modal/app.py `bounded`, netpolicy.MODAL_CALL_S): a status or a cancel
    marker while Modal does not answer fails in seconds instead of hanging."""

    def __init__(self, store_url: str, rel: str):
        name, prefix = parse(store_url)
        self.name, self.base = name, _join(prefix, rel)
        self._vol = None

    @property
    def vol(self):
        if self._vol is None:
            self._vol = _volume(self.name, False)
        return self._vol

    def read(self, name: str, start: int = 0) -> bytes | None:
        import modal.exception as mx

        from ..backends.modal.app import bounded

        def read():
            try:
                return b"".join(self.vol.read_file(_join(self.base, name)))
            except (FileNotFoundError, mx.NotFoundError):
                return None

        data = bounded(read, f"reading {name} from volume {self.name}")
        return None if data is None else data[start:]

    def write(self, name: str, data: bytes) -> None:
        from ..backends.modal.app import bounded

        def write():
            self._vol = _volume(self.name, True)  # `launch down` before the job's first commit: it may be new
            with self.vol.batch_upload(force=True) as batch:
                batch.put_file(io.BytesIO(data), _join(self.base, name))

        bounded(write, f"writing {name} to volume {self.name}")

    def remove(self, name: str) -> None:
        import modal.exception as mx

        from ..backends.modal.app import bounded

        def remove():
            try:
                self.vol.remove_file(_join(self.base, name))
            except (FileNotFoundError, mx.NotFoundError):
                pass

        bounded(remove, f"removing {name} from volume {self.name}")

    def exists(self, name: str) -> bool:
        return self.read(name) is not None

    def close(self) -> None:
        self._vol = None


class MountedVolume:
    """The agent's datapool on a Modal node: the volume is mounted at the root, so there is nothing to copy; each
    push point commits it instead (every push_interval while the script runs, after it, and after result.json)."""

    def __init__(self, store_url: str, push_interval: float = 30.0):
        self.name, _ = parse(store_url)
        self.push_interval = push_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.commits = 0

    def commit(self) -> None:
        from .. import netpolicy
        from ..backends.modal.app import bounded

        with self._lock:
            bounded(lambda: _volume(self.name, False).commit(), f"committing volume {self.name}",
                    netpolicy.seconds(netpolicy.MODAL_COMMIT_S))
            self.commits += 1

    def pull_inputs(self, resume=()) -> None:
        """Mounted with the newest commit at container start: the inputs (and a retry's checkpoints) are there."""

    def start_pushing(self, paths) -> None:
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.push_interval):
                try:
                    self.commit()
                except Exception as exc:  # noqa: BLE001 - the next round commits everything since
                    sys.stderr.write(f"[launcher] warning: volume commit failed: {exc}\n")

        self._thread = threading.Thread(target=loop, name="volume-commit", daemon=True)
        self._thread.start()

    def final_push(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.commit()

    def push_file(self, path) -> None:
        self.commit()

    def pull_paths(self, paths, exclude=()) -> None:
        """Another container's commits since this one started (a relay worker's committed checkpoint)."""
        _volume(self.name, False).reload()

    def push_path(self, path) -> None:
        self.commit()
