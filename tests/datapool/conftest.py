"""A real moto S3 server on 127.0.0.1 per module (tests/motoserver.py: it counts requests through its access log),
reset before each test."""
from __future__ import annotations

import pytest

from ..motoserver import start_moto_with

BUCKET = "pool-bucket"  # same as helpers.BUCKET


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory):
    server = start_moto_with(tmp_path_factory.mktemp("moto"), log_name="access.log")
    yield server
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
