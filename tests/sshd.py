"""A real OpenSSH sshd on 127.0.0.1 for tests: its own host key, client key, config and known_hosts in a temp dir.

Use `start_sshd(tmp_dir)` from a module-scoped fixture (tests/ssh/conftest.py has one) and `stop()` it at teardown.
The server logs to `<dir>/sshd.log`; a failed start raises with the log's tail.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"  # sshd refuses to re-exec itself unless started by absolute path


@dataclass
class Sshd:
    host: str
    port: int
    user: str
    identity: Path  # client private key; its .pub is in the server's authorized_keys
    known_hosts: Path  # `[127.0.0.1]:PORT ssh-ed25519 ...`: the server's real host key
    host_key_pub: str  # "ssh-ed25519 AAAA..." (no comment)
    dir: Path
    log: Path
    proc: subprocess.Popen

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return f"[{self.host}]:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def keygen(path: Path) -> Path:
    """A fresh ed25519 key pair at path / path.pub, no passphrase."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL)
    return path


def _pub(path: Path) -> str:
    """'type base64' of a .pub file, without its comment."""
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


def write_known_hosts(path: Path, sshd: Sshd, key_pub: str | None = None) -> Path:
    """A known_hosts file with one line for the server: its real key, or `key_pub` ('type base64')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{sshd.known_hosts_name} {key_pub or sshd.host_key_pub}\n")
    return path


def write_wrong_known_hosts(path: Path, sshd: Sshd) -> Path:
    """A known_hosts file recording a different ed25519 key for the same [host]:port: what a changed key looks like."""
    path.parent.mkdir(parents=True, exist_ok=True)
    other = keygen(path.parent / f"{path.name}.other_host_key")
    return write_known_hosts(path, sshd, _pub(other))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(d: Path, port: int, extra: str) -> str:
    return f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {d}/host_ed25519
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
# The temp dir sits under world-writable /tmp, which StrictModes would refuse.
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PrintMotd no
UseDNS no
Subsystem sftp internal-sftp
LogLevel VERBOSE
{extra}"""


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def start_sshd(tmp_dir: Path, *, attempts: int = 5, ready_timeout: float = 30) -> Sshd:
    """Start sshd (-D -e, own process group) and return once it has sent its SSH banner on its port."""
    d = Path(tmp_dir)
    d.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir sshd insists on
    host_key = keygen(d / "host_ed25519")
    identity = keygen(d / "id_ed25519")
    (d / "authorized_keys").write_text(Path(f"{identity}.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    # PerSourcePenalties (OpenSSH >= 9.8) would lock 127.0.0.1 out after the tests' deliberate auth failures.
    extra = "PerSourcePenalties no\n"
    cfg = d / "sshd_config"
    cfg.write_text(_config(d, 22, extra))
    if subprocess.run([SSHD, "-t", "-f", str(cfg)], capture_output=True).returncode != 0:
        extra = ""
    last = ""
    for _ in range(attempts):
        # The port is free now but not reserved; a lost race shows up as sshd exiting, and we try another.
        port = _free_port()
        cfg.write_text(_config(d, port, extra))
        log = d / "sshd.log"
        with open(log, "wb") as logf:
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        sshd = Sshd(host="127.0.0.1", port=port, user="root", identity=identity, known_hosts=d / "known_hosts",
                    host_key_pub=_pub(host_key), dir=d, log=log, proc=proc)
        deadline = time.monotonic() + ready_timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if _banner(port):
                write_known_hosts(sshd.known_hosts, sshd)
                return sshd
            time.sleep(0.05)
        last = sshd.log_tail()
        sshd.stop()
    raise RuntimeError(f"sshd did not start after {attempts} attempts; last log:\n{last}")
