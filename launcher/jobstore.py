"""A job's folder in the datapool store, `experiments/<exp>/reports/jobs/<id>/`: where client and node meet.

The agent pushes `log.txt` while the job runs and `result.json` last; `launch status` reads `result.json` here
before it asks the backend; `launch logs -f` tails `log.txt` here; `launch down` writes the cancel marker here,
which the agent polls. Client and node never need a live link.

Small objects only (a marker, a result, a log read from an offset): one request each, through the same
transports the sync engine uses. A store of None means the datapool root on this machine *is* the store.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator
from .datapool.records import record_headers
from .datapool.url import StoreUrl

from .node.layout import job_report_dir


class JobStore:
    def __init__(self, store_url: str | None, local_root: str | Path | None, experiment: str, job_id: str,
                 endpoint_url: str | None = None):
        self.rel = f"experiments/{experiment}/reports/jobs/{job_id}"
        self._http = None
        self._vol = None  # a Modal volume's job folder (launcher/datapool/modal_volume.py) answers instead
        store_url = StoreUrl.of(store_url)
        if store_url and store_url.scheme == "modal-volume":
            from .datapool.modal_volume import VolumeFiles

            self._vol, self.dir = VolumeFiles(store_url, self.rel), None
            return
        if store_url and store_url.scheme == "sftp":  # a folder on a box, over SFTP: the same four calls
            from .datapool.sftp import SftpFiles

            self._vol, self.dir = SftpFiles(store_url, self.rel), None
            return
        if store_url is None or store_url.scheme == "file":
            base = Path(store_url.path) if store_url else Path(local_root)
            self.dir: Path | None = job_report_dir(base / "experiments" / experiment, job_id)
            self.bucket = self.prefix = None
        else:
            self.dir = None
            self.bucket = store_url.netloc
            self.prefix = store_url.under(self.rel)
            self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")

    @property
    def http(self):
        if self._http is None:
            from .datapool.s3http import S3Http

            self._http = S3Http(endpoint_url=self.endpoint_url)
        return self._http

    def read(self, name: str, start: int = 0, size: int | None = None) -> bytes | None:
        """The object's bytes from `start` on (at most `size` of them from a file or S3 store: a 1 GB log is read
        a piece at a time, never whole); None if it does not exist (b'' if it has nothing past start)."""
        if self._vol is not None:
            return self._vol.read(name, start)  # a volume's reads are whole; `size` is a bound only where honoured
        if self.dir is not None:
            try:
                with open(self.dir / name, "rb") as f:
                    f.seek(start)
                    return f.read(-1 if size is None else size)
            except (FileNotFoundError, NotADirectoryError):
                return None
        from .datapool.s3http import S3Error

        if size is not None and size <= 0:
            return b""
        try:
            end = 2**62 if size is None else start + size - 1
            _, data = self.http.get_object(self.bucket, f"{self.prefix}/{name}",
                                           byte_range=(start, end) if start or size is not None else None)
            return data
        except S3Error as exc:
            if exc.status == 416:  # nothing past `start` yet
                return b""
            if exc.status == 404 or exc.code in ("NoSuchKey", "NotFound"):
                return None
            raise

    def pieces(self, name: str, start: int = 0, piece: int = 1 << 20) -> Iterator[bytes]:
        """The object's bytes from `start` to its end, in pieces of at most `piece` bytes as they are read: one
        open file or one GET (read as it arrives), so a 1 GB log starts printing at once and is never in memory
        whole. Nothing when it does not exist or has nothing past `start`."""
        if self._vol is not None:
            data = self._vol.read(name, start)
            if data:
                yield data
            return
        if self.dir is not None:
            try:
                f = open(self.dir / name, "rb")
            except (FileNotFoundError, NotADirectoryError):
                return
            with f:
                f.seek(start)
                while data := f.read(piece):
                    yield data
            return
        from .datapool.s3http import S3Error

        try:
            _, _, body = self.http.request("GET", self.bucket, f"{self.prefix}/{name}",
                                           headers={"Range": f"bytes={start}-"} if start else None, stream=True)
        except S3Error as exc:
            if exc.status in (404, 416) or exc.code in ("NoSuchKey", "NotFound"):
                return  # 416: nothing past `start` yet
            raise
        try:
            while data := body.read(piece):
                yield data
        finally:
            body.close()

    def size(self, name: str) -> int | None:
        """The object's size in bytes, or None when it does not exist or this store cannot say without reading it
        (a volume): `launch logs -n N` then reads the log from its start."""
        if self._vol is not None:
            return None
        if self.dir is not None:
            try:
                return os.stat(self.dir / name).st_size
            except (FileNotFoundError, NotADirectoryError):
                return None
        from .datapool.s3http import S3Error

        try:
            _, headers, _ = self.http.request("HEAD", self.bucket, f"{self.prefix}/{name}")
        except S3Error as exc:
            if exc.status == 404 or exc.code in ("NoSuchKey", "NotFound"):
                return None
            raise
        length = headers.get("Content-Length")
        return int(length) if length is not None else None

    def write(self, name: str, data: bytes) -> None:
        if self._vol is not None:
            return self._vol.write(name, data)
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.dir / name)
            return
        key = f"{self.prefix}/{name}"
        self.http.put_object(self.bucket, key, data,
                             {"Content-Type": "application/octet-stream", **record_headers(self.bucket, key)})

    def remove(self, name: str) -> None:
        """Delete one object; a missing one is fine."""
        if self._vol is not None:
            return self._vol.remove(name)
        if self.dir is not None:
            (self.dir / name).unlink(missing_ok=True)
            return
        self.http.request("DELETE", self.bucket, f"{self.prefix}/{name}")

    def exists(self, name: str) -> bool:
        if self._vol is not None:
            return self._vol.exists(name)
        if self.dir is not None:
            return (self.dir / name).exists()
        from .datapool.s3http import S3Error

        try:
            self.http.request("HEAD", self.bucket, f"{self.prefix}/{name}")
            return True
        except S3Error as exc:
            if exc.status == 404 or exc.code in ("NoSuchKey", "NotFound"):
                return False
            raise

    def close(self) -> None:
        if self._vol is not None:
            self._vol.close()
        if self._http is not None:
            self._http.close()
            self._http = None
