"""A real moto S3 server on 127.0.0.1 (its own process, like a real endpoint), reset before each test.

The server's access log is how tests count requests: every HTTP request the code under test made,
whether it ran in this process or in a `launch sync` subprocess.
"""
from __future__ import annotations

import re
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..motoserver import start_moto_with

BUCKET = "pool-bucket"  # same as helpers.BUCKET
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE = re.compile(r'"(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP/[\d.]+" (\d+)')


@dataclass
class Moto:
    endpoint: str
    log_path: Path
    _mark: int = 0

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


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory):
    server = start_moto_with(tmp_path_factory.mktemp("moto"), log_name="access.log")
    yield Moto(server.endpoint, server.log_path)
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Credentials for moto only; no ~/.aws, no instance metadata lookups."""
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "DATAPOOL_ROOT",
              "LAUNCH_DATAPOOL"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def s3(moto_server, aws_env):
    moto_server.reset()
    moto_server.client().create_bucket(Bucket=BUCKET)
    moto_server.mark()
    return moto_server
