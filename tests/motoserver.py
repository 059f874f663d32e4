"""A moto S3 server in its own process on 127.0.0.1, like a real endpoint. Test modules start their own."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoServer:
    endpoint: str
    log_path: Path
    proc: subprocess.Popen

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
