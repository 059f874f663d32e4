"""A moto S3 server in its own process on 127.0.0.1, like a real endpoint. Test modules start their own.

The server's access log is how tests count requests: every HTTP request the code under test made, whether it ran
in the test's process or in a `launch` subprocess.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE = re.compile(r'"(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP/[\d.]+" (\d+)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoServer:
    endpoint: str
    log_path: Path
    proc: subprocess.Popen
    _mark: int = field(default=0, init=False, repr=False)  # where requests() starts counting

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).read()
        self.mark()

    def _settled_size(self) -> int:
        """The log's size once the server has written the lines of the requests already answered: it logs each
        line after its response, so on a busy machine a line can trail the response by more than a moment."""
        size, stable = self.log_path.stat().st_size, 0
        for _ in range(60):
            time.sleep(0.05)
            now = self.log_path.stat().st_size
            stable = stable + 1 if now == size else 0
            size = now
            if stable >= 3:
                break
        return size

    def mark(self) -> None:
        """Requests before this call are not counted by requests()."""
        self._mark = self._settled_size()

    def requests(self, settle: bool = True) -> list[tuple[str, str, int]]:
        """Every request since mark(). settle=False reads the log as it is now: for polling a transfer in flight,
        where the log never settles."""
        if settle:
            self._settled_size()
        with open(self.log_path, "rb") as f:
            f.seek(self._mark)
            # Some werkzeug versions colour the line of a 206 or 304 (ANSI codes around the request): drop them.
            text = _ANSI.sub("", f.read().decode("utf-8", "replace"))
        return [(m[1], m[2], int(m[3])) for m in _LINE.finditer(text) if "/moto-api/" not in m[2]]

    def object_reads(self) -> list[str]:
        """GETs of objects (not LIST: those carry list-type / a bucket-only path) and HEADs."""
        out = []
        for method, path, _ in self.requests():
            if method == "HEAD":
                out.append(path)
            elif method == "GET" and "list-type=" not in path and path.strip("/").count("/") >= 1:
                out.append(path)
        return out

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_moto(log_dir: Path) -> MotoServer:
    return start_moto_with(log_dir)


def moto_with_bucket(tmp_path_factory, bucket: str):
    """A test module's own moto server with one bucket, stopped after it: in a module-scoped fixture,
    `yield from moto_with_bucket(tmp_path_factory, BUCKET)`."""
    server = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        server.stop()


MOTO_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true"}


def start_moto_with(log_dir: Path, command=None, env: dict[str, str] | None = None,
                    log_name: str = "moto.log") -> MotoServer:
    """Like start_moto, but the caller picks the server command (`command(port) -> argv`) and extra env.

    For servers that wrap moto's WSGI app (tests/ec2/ice_server.py) or need moto settings, which moto reads from
    the environment once, at import, so they must be in the process's env from the start.
    """
    port = free_port()
    argv = command(port) if command else [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    log = Path(log_dir) / log_name
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return MotoServer(endpoint, log, proc)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited: {log.read_text()}")
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"moto server did not start: {log.read_text()}")
