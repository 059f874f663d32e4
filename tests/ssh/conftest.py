"""Each test module under tests/ssh gets its own real sshd (see tests/sshd.py)."""
from __future__ import annotations

import pytest

from ..sshd import Sshd, start_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Sshd:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _sockets_have_timeouts(tmp_path):
    """Like the contract suite: a process started with base_env(tmp_path) never connects without a timeout."""
    from ..backends.conftest import no_socket_without_timeout

    yield
    no_socket_without_timeout(tmp_path)
