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

    def read(self, name: str, start: int = 0) -> bytes | None:
        """The object's bytes from `start` on; None if it does not exist (b'' if it has nothing past start)."""
        if self._vol is not None:
            return self._vol.read(name, start)
        if self.dir is not None:
            try:
                with open(self.dir / name, "rb") as f:
                    f.seek(start)
                    return f.read()
            except (FileNotFoundError, NotADirectoryError):
                return None
        from .datapool.s3http import S3Error

        try:
            _, data = self.http.get_object(self.bucket, f"{self.prefix}/{name}",
                                           byte_range=(start, 2**62) if start else None)
            return data
        except S3Error as exc:
            if exc.status == 416:  # nothing past `start` yet
                return b""
            if exc.status == 404 or exc.code in ("NoSuchKey", "NotFound"):
                return None
            raise

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
