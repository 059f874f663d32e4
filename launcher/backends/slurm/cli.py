"""Slurm's commands and the job's files, on this machine or on a login node over SSH: one small surface (`sh`,
`write`, `put`, `size`, `read`) so the backend never asks where it runs.

Here: `sbatch` is on PATH and no login node is named; commands run under bash in your home, files are written under
the base dir directly (the cluster's filesystem is this machine's). Over SSH (`host` set, which wins): the same
commands through the login shell (paramiko, the host key checked against known_hosts and never added), files over
SFTP. Either way `slurm_env` is exported first (SLURM_CONF of a second cluster, say).

A connection is kept per login node for the life of the process: `launch logs -f` and a foreground wait look at the
job every second, and each new SSH handshake costs ~0.4 s. Every wait is bounded (launcher/netpolicy.py): the
connect by SSH_CONNECT_S, a command by SSH_COMMAND_S unless it names its own, a file read likewise (a command, not
SFTP, which has no timeout). A connection that timed out is dropped, so the next look opens a fresh one.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from ...errors import UserError
from .script import base_word

_CLIENTS: dict[tuple, object] = {}  # (host, identity, known_hosts) -> a connected SshClient


class Unreachable(Exception):
    """Slurm (its controller, or the login node) did not answer: a state to wait out, not an error of the job."""


# What Slurm's clients print when the controller is down or unreachable.
_NO_CONTROLLER = ("Unable to contact slurm controller", "Socket timed out", "Zero Bytes were transmitted",
                  "Connection refused", "Could not establish a configuration source")


class SlurmCli:
    def __init__(self, opts: dict):
        self.opts = opts
        self.host = opts.get("host")
        self.remote_dir = opts.get("remote_dir") or ".launcher-node"

    @property
    def where(self) -> str:
        return f"the login node {self.host}" if self.host else "this machine"

    # -- local or remote -----------------------------------------------------------------------------------------

    def check_reachable(self) -> None:
        """Preflight: the login node answers (host key, login), or sbatch is here. UserError otherwise."""
        if self.host:
            self._client()
        elif shutil.which("sbatch") is None:
            raise UserError("--backend slurm: no sbatch on this machine's PATH and no login node: pass --host "
                            "[USER@]LOGIN_NODE (or slurm: host: in the profile), or launch from a machine with "
                            "Slurm's commands")

    def _client(self):
        from ...sshclient import SshClient

        key = (self.host, self.opts.get("identity"), self.opts.get("known_hosts"))
        client = _CLIENTS.get(key)
        if client is None:
            client = SshClient(self.host, identity=key[1], known_hosts=key[2]).connect()
            _CLIENTS[key] = client
        return client

    def _drop(self) -> None:
        client = _CLIENTS.pop((self.host, self.opts.get("identity"), self.opts.get("known_hosts")), None)
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a dead connection may not close cleanly
                pass

    def _env_prefix(self) -> str:
        return "".join(f"export {k}={shlex.quote(v)}; " for k, v in (self.opts.get("slurm_env") or {}).items())

    def sh(self, body: str, *, timeout: float | None = None, in_base: bool = False) -> tuple[int, str, str]:
        """Run a bash snippet in your home (or the base dir): (exit code, stdout, stderr). Raises Unreachable when
        the login node or the Slurm controller did not answer (within `timeout`, default netpolicy.SSH_COMMAND_S)."""
        if timeout is None:
            from ... import netpolicy

            timeout = netpolicy.seconds(netpolicy.SSH_COMMAND_S)
        if in_base:
            body = f"mkdir -p {base_word(self.remote_dir)} && cd {base_word(self.remote_dir)} || exit 97; {body}"
        if self.host:
            code, out, err = self._ssh(f"{self._env_prefix()}{body}", timeout)
        else:
            env = {**os.environ, **(self.opts.get("slurm_env") or {})}
            try:
                done = subprocess.run(["bash", "-c", body], cwd=Path.home(), env=env, capture_output=True,
                                      timeout=timeout, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise Unreachable(f"Slurm did not answer in {timeout:g} s on {self.where}") from None
            code, out, err = done.returncode, done.stdout, done.stderr
        out_s, err_s = out.decode(errors="replace"), err.decode(errors="replace")
        if code != 0 and any(s in err_s for s in _NO_CONTROLLER):
            raise Unreachable(f"Slurm's controller did not answer on {self.where}: {last_line(err_s)}")
        return code, out_s, err_s

    def _ssh(self, cmd: str, timeout: float) -> tuple[int, bytes, bytes]:
        import threading

        from ... import netpolicy
        from ...sshclient import RemoteTimeout

        for tries in (1, 2):
            try:
                client = self._client()
            except UserError as e:
                raise Unreachable(str(e.args[0])) from None
            # The command's timeout starts once its channel is open, and paramiko waits for the server to open one
            # without a limit: over a silent link that is for ever. The watchdog closes the connection once the
            # command's time and a connect's are up, which ends the wait.
            fired = []
            watchdog = threading.Timer(timeout + netpolicy.seconds(netpolicy.SSH_CONNECT_S),
                                       lambda: fired.append(True) or client.close())
            watchdog.daemon = True
            watchdog.start()
            try:
                return client.run(cmd, timeout=timeout, check=False)
            except RemoteTimeout as e:
                self._drop()  # a connection that went silent is not asked again: the next look opens a fresh one
                raise Unreachable(str(e)) from None
            except Exception as e:  # noqa: BLE001 - the kept connection went away: one fresh one, then give up
                self._drop()
                if fired:
                    raise Unreachable(f"{self.where} did not answer in {timeout:g} s") from None
                if tries == 2:
                    raise Unreachable(f"{self.where}: {e}") from None
            finally:
                watchdog.cancel()
        raise AssertionError("not reached")

    # -- files under the base dir ------------------------------------------------------------------------------

    def local_base(self) -> Path:
        return Path(self.remote_dir) if self.remote_dir.startswith("/") else Path.home() / self.remote_dir

    def _remote(self, rel: str) -> str:
        return f"{self.remote_dir}/{rel}"  # SFTP's relative paths start in the login's home

    def write(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        """Write atomically (a temporary name, then a rename), created with `mode`: a secret is never readable."""
        if self.host:
            self._client().put_bytes(data, self._remote(rel), mode=mode)
            return
        path = self.local_base() / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, mode)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put(self, local: Path, rel: str) -> None:
        if self.host:
            self._client().put(local, self._remote(rel))
            return
        path = self.local_base() / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.copyfile(local, tmp)
        os.replace(tmp, path)

    def size(self, rel: str) -> int | None:
        if self.host:
            return self._client().stat_size(self._remote(rel))
        try:
            return (self.local_base() / rel).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, rel: str) -> bytes | None:
        if self.host:
            # A command rather than SFTP: it is bounded (SFTP reads have no timeout) and shares the kept connection.
            from ... import netpolicy

            path = f"{base_word(self.remote_dir)}/{shlex.quote(rel)}"
            code, out, _ = self._ssh(f"if [ -f {path} ]; then cat {path}; else exit 66; fi",
                                     netpolicy.seconds(netpolicy.SSH_COMMAND_S))
            if code == 66:
                return None
            if code != 0:
                raise Unreachable(f"{self.where}: reading {rel} failed (exit {code})")
            return out
        try:
            return (self.local_base() / rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""
