"""Each relay test gets its own commander process (real HTTP on 127.0.0.1, its own state file and secret)."""
from __future__ import annotations

import secrets

import pytest

from ..motoserver import moto_with_bucket
from ..sshd import start_sshd
from .commander import Commander

BUCKET = "relay"


@pytest.fixture
def relay_secret() -> str:
    return secrets.token_hex(16)


@pytest.fixture
def relay_env(launcher_env, relay_secret) -> dict:
    """The env a worker's client needs: the shared secret by name, as `launch` passes it to jobs."""
    return {**launcher_env, "RELAY_SHARED_SECRET": relay_secret}


@pytest.fixture
def commander(tmp_path, relay_env, relay_secret, project):
    c = Commander(state_path=tmp_path / "relay" / "state.db", log_path=tmp_path / "commander.log",
                  secret=relay_secret, env=relay_env, cwd=project)
    c.state_path.parent.mkdir(parents=True, exist_ok=True)
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from moto_with_bucket(tmp_path_factory, BUCKET)
