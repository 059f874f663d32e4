"""Each test module under tests/ssh gets its own real sshd (see tests/sshd.py)."""
from __future__ import annotations

import pytest

from ..sshd import Sshd, start_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Sshd:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
