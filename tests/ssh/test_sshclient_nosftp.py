"""A box whose sshd has no sftp subsystem: one line that names the sshd_config setting, not a paramiko traceback."""
from __future__ import annotations

import signal
import time

import pytest

from launcher.errors import UserError
from launcher.sshclient import SshClient

from ..sshd import Sshd, _banner, start_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Sshd:
    """The suite's sshd, reloaded (SIGHUP) with its `Subsystem sftp` line removed."""
    server = start_sshd(tmp_path_factory.mktemp("sshd-nosftp"))
    cfg = server.dir / "sshd_config"
    cfg.write_text("".join(line for line in cfg.read_text().splitlines(keepends=True)
                           if not line.startswith("Subsystem")))
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    time.sleep(0.3)
    while not _banner(server.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    yield server
    server.stop()


def test_no_sftp_subsystem_is_one_line_naming_the_setting(sshd: Sshd, tmp_path):
    with SshClient(sshd.target, identity=str(sshd.identity), known_hosts=str(sshd.known_hosts)) as c:
        assert c.run("echo ok")[1].strip() == b"ok"  # the shell works; only SFTP is missing
        with pytest.raises(UserError) as err:
            c.put_bytes(b"x", str(tmp_path / "f"))
    msg = str(err.value)
    assert "\n" not in msg and "Subsystem sftp" in msg and "sshd_config" in msg, msg
