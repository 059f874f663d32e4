"""The snapshot's upload over SFTP feeds the launch's transfer bar (launcher/progress.py): every byte sent is
counted, against the private sshd (tests/ssh/conftest.py)."""
from __future__ import annotations

import io
import os

import pytest

from launcher import progress
from launcher.sshclient import SshClient


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def client(sshd):
    with SshClient(sshd.target, identity=str(sshd.identity), known_hosts=str(sshd.known_hosts)) as c:
        yield c


def test_put_counts_every_byte_for_the_bar(client, tmp_path):
    local = tmp_path / "snap.tar.gz"
    local.write_bytes(os.urandom(3 * (1 << 20) + 12345))  # more than one read of the upload loop
    counted = []
    client.put(local, str(tmp_path / "remote" / "snap.tar.gz"), on_bytes=counted.append)
    assert sum(counted) == local.stat().st_size and len([n for n in counted if n]) > 1
    assert (tmp_path / "remote" / "snap.tar.gz").read_bytes() == local.read_bytes()


def test_the_bar_is_drawn_on_a_terminal_and_the_status_line_comes_back(client, tmp_path):
    local = tmp_path / "snap.tar.gz"
    local.write_bytes(os.urandom(2 * (1 << 20)))
    out = Tty()
    with progress.showing(progress.Reporter(out)) as shown:
        progress.report(progress.SNAPSHOT, "abc, 3 files, 2.0 MiB")
        with progress.transfer("snapshot", local.stat().st_size) as sent:
            client.put(local, str(tmp_path / "remote" / "snap.tar.gz"), on_bytes=sent)
        assert shown._status is not None  # the phase's status line again, after the bar
    assert "0.0/2.1 MB" in out.getvalue() and "2.1/2.1 MB" in out.getvalue(), out.getvalue()[-500:]  # the bar


def test_no_bar_when_not_a_terminal(client, tmp_path):
    local = tmp_path / "snap.tar.gz"
    local.write_bytes(os.urandom(1 << 20))
    out = io.StringIO()
    with progress.showing(progress.Reporter(out)):
        with progress.transfer("snapshot", local.stat().st_size) as sent:
            client.put(local, str(tmp_path / "remote" / "snap.tar.gz"), on_bytes=sent)
    assert out.getvalue() == ""  # nothing extra: the plain lines are the phases alone
