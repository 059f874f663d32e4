"""A thin SSH client for the `ssh` backend: run commands, stream output, upload files atomically.

paramiko is imported inside the functions that need it, so that importing this module (and `launch --help`)
stays light.

Host keys are checked against a known_hosts file and never added automatically: a host we have not seen, or
whose key changed, is a UserError whose one line says how to check and record the key.

Secrets: values such as tokens reach the node only as file contents, through `put_bytes(data, path, 0o600)`
(SFTP, created with that mode), never as command-line arguments or environment in a command string. A command
line is visible to every user of the node in `ps` and lands in shell history and sshd logs; a 0600 file does not.
"""
from __future__ import annotations

import getpass
import ipaddress
import logging
import os
import re
import secrets
import select
import shlex
import socket
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .errors import UserError

if TYPE_CHECKING:
    import paramiko

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
_TARGET_FORM = "use [user@]host[:port], e.g. ubuntu@10.0.0.5:2222 or root@[::1]:22"
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$")
_CHUNK = 65536
_STDERR_TAIL = 4096
_NULL_HANDLER = logging.NullHandler()


class RemoteError(Exception):
    """A remote command failed (non-zero exit, timeout, lost connection). Not a UserError: the request was fine."""

    def __init__(self, message: str, *, cmd: str, exit_code: int | None, stderr: bytes):
        super().__init__(message)
        self.cmd = cmd
        self.exit_code = exit_code
        self.stderr = stderr


class RemoteTimeout(RemoteError, TimeoutError):
    """`run(timeout=...)` ran out; the channel was closed."""


class _Deadline(Exception):
    pass


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    port: int = 22

    @property
    def hostport(self) -> str:
        """host:port as people write it; IPv6 in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH (and paramiko) file the host under: bare on port 22, `[host]:port` otherwise."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.hostport}"


def parse_target(text: str) -> SshTarget:
    """`[user@]host[:port]` -> SshTarget. IPv6 goes in brackets when a port follows (`[::1]:2222`); a bare IPv6
    address (`::1`) means port 22. The user defaults to the local user name, like `ssh`."""
    raw = text
    text = (text or "").strip()

    def bad(why: str) -> UserError:
        return UserError(f"bad ssh target '{raw}': {why}; {_TARGET_FORM}")

    if not text:
        raise bad("it is empty")
    if any(c.isspace() for c in text) or "/" in text:
        raise bad("it contains a space or '/'")
    user, at, hostport = text.rpartition("@")
    if at:
        if not _USER.match(user):
            raise bad(f"user '{user}' is not a valid user name")
    else:
        user = getpass.getuser()

    port_text = None
    if hostport.startswith("["):
        host, close, rest = hostport[1:].partition("]")
        if not close:
            raise bad("'[' without ']'")
        if rest:
            if not rest.startswith(":"):
                raise bad(f"unexpected '{rest}' after ']'")
            port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"'{host}' in brackets is not an IPv6 address") from None
    elif hostport.count(":") > 1:
        # More than one colon without brackets can only be a bare IPv6 address: no port can follow it.
        host = hostport
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"'{host}' is not an IPv6 address (put IPv6 in brackets before a port: [::1]:2222)") from None
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
        if not host:
            raise bad("the host is missing")
        if not _HOSTNAME.match(host):
            raise bad(f"'{host}' is not a host name or address")

    port = 22
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise bad(f"port '{port_text}' is not a number from 1 to 65535")
        port = int(port_text)
    return SshTarget(user=user, host=host, port=port)


def _shell_path(path: str) -> str:
    """A path for a command the user will paste: quoted, but with a leading ~/ left for the shell to expand."""
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


class _Counted:
    """A file whose reads are counted for `on_bytes(n)` (put's transfer bar)."""

    def __init__(self, f, on_bytes):
        self.f, self.on_bytes = f, on_bytes

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.on_bytes(len(data))
        return data


def _sftp_path(remote: str) -> str:
    """SFTP does not expand `~`; its relative paths start at the login directory, which is what `~/` means."""
    if remote == "~":
        return "."
    if remote.startswith("~/"):
        return remote[2:] or "."
    return remote


def _program(cmd: str) -> str:
    """The command's first word, for error messages; leading VAR=value words are skipped (values stay out of logs)."""
    for word in cmd.split():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):
            return word
    return cmd.strip()[:40]


def _one_line(e: object) -> str:
    """An exception's text squeezed onto one line: UserErrors are one line."""
    return " ".join(str(e).split())


def _tail(data: bytes, limit: int = 300) -> str:
    text = data.decode("utf-8", "replace").strip()
    text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return text if len(text) <= limit else "..." + text[-limit:]


# Run the command with stdin from /dev/null and a watcher on the channel's stdin: when the channel closes (the
# consumer stopped reading, or our process died), the watcher sees EOF and kills the command's process group.
# sshd starts each session in its own session/process group (setsid) and the shell has no job control, so
# `kill 0` reaches the command and its pipeline but nothing outside this session. Without this, closing the
# channel leaves a `tail -f` running on the node forever when the file stops growing (sshd does not kill it).
# The watcher's output goes to /dev/null so that it does not hold the channel's stdout open after the command ends.
_STREAM_WRAPPER = (
    "exec 3<&0; "
    "{{ cat <&3 >/dev/null 2>&1; kill -TERM 0; }} >/dev/null 2>&1 & "
    "{{ {cmd}\n}} </dev/null 3<&-"
)


class SshClient:
    """One SSH connection to one node. Not thread-safe: use one client per thread.

    Usage: `with SshClient(parse_target("ubuntu@10.0.0.5"), identity="~/.ssh/key.pem") as c: c.run("nvidia-smi")`.
    Methods connect on first use if `connect()` was not called.
    """

    def __init__(
        self,
        target: SshTarget | str,
        identity: str | None = None,
        known_hosts: str | None = None,
        connect_timeout: float | None = None,
    ):
        self.target = parse_target(target) if isinstance(target, str) else target
        self.identity = identity
        if identity is not None and not os.path.isfile(os.path.expanduser(identity)):
            raise UserError(
                f"identity file '{identity}' does not exist; pass the private key for {self.target} to --identity, "
                "or leave --identity out to use ssh-agent and ~/.ssh/id_*"
            )
        self.known_hosts = known_hosts or DEFAULT_KNOWN_HOSTS
        if connect_timeout is None:
            from . import netpolicy

            connect_timeout = netpolicy.seconds(netpolicy.SSH_CONNECT_S)
        self.connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection ----------------------------------------------------------------------------------------------

    def __enter__(self) -> SshClient:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> SshClient:
        """Open the connection (once). Every failure a user can fix is a one-line UserError."""
        if self._client is not None:
            return self
        import paramiko

        t = self.target
        kh_shown = _shell_path(self.known_hosts)
        kh_path = os.path.expanduser(self.known_hosts)
        keyscan = f"ssh-keyscan -p {t.port} {t.host} >> {kh_shown}"

        class _Unknown(paramiko.SSHException):
            pass

        class _Reject(paramiko.MissingHostKeyPolicy):
            # Like paramiko.RejectPolicy (never add), but distinguishable from every other SSHException.
            def missing_host_key(self, client, hostname, key):
                raise _Unknown(hostname)

        # paramiko logs transport-thread failures with tracebacks; with no handler of ours they would reach stderr
        # through logging's last-resort handler next to the one-line error below. An app that configures logging
        # still gets them.
        logging.getLogger("paramiko").addHandler(_NULL_HANDLER)
        pkey = self._load_identity(paramiko) if self.identity is not None else None
        client = paramiko.SSHClient()
        if os.path.isfile(kh_path):
            # "System" host keys: read, matched, never written back (save_host_keys only writes the other set).
            try:
                client.load_system_host_keys(kh_path)
            except OSError as e:
                raise UserError(f"cannot read known_hosts file {kh_shown} ({_one_line(e.strerror or e)}); "
                                "fix its permissions or pass another file") from None
        client.set_missing_host_key_policy(_Reject())
        try:
            client.connect(
                t.host,
                port=t.port,
                username=t.user,
                pkey=pkey,
                # With an explicit identity use only that key (like IdentitiesOnly): failures then name one key,
                # and a full agent cannot exhaust the server's MaxAuthTries before the right key is offered.
                allow_agent=pkey is None,
                look_for_keys=pkey is None,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=max(self.connect_timeout, 30),
            )
        except _Unknown:
            client.close()
            missing = "" if os.path.isfile(kh_path) else " (the file does not exist)"
            raise UserError(
                f"host key of {t.hostport} is not in {kh_shown}{missing}; check it and add it: {keyscan}"
            ) from None
        except paramiko.BadHostKeyException:
            client.close()
            raise UserError(
                f"host key of {t.hostport} CHANGED from the one in {kh_shown}: this may be an attack "
                f"(man-in-the-middle); if the change is expected (the machine was rebuilt), remove the old key and "
                f"add the new one: ssh-keygen -R '{t.known_hosts_name}'"
                + ("" if self.known_hosts == DEFAULT_KNOWN_HOSTS else f" -f {kh_shown}")
                + f" && {keyscan}"
            ) from None
        except paramiko.AuthenticationException as e:
            client.close()
            raise self._auth_error(e) from None
        except paramiko.SSHException as e:
            # When the transport thread failed (no banner, bad protocol) or the handshake ran out of time, connect()
            # reports a vague follow-on error ("No existing session"); the thread's own exception, if any, is the
            # real one.
            transport = client.get_transport()
            cause = transport.get_exception() if transport is not None else None
            client.close()
            if str(e).startswith("No authentication methods available"):
                raise self._auth_error(e) from None
            if cause is None and str(e) == "No existing session":
                what = f"did not complete in {self.connect_timeout:g}s"
            else:
                what = f"failed ({_one_line(cause or e)})"
            raise UserError(
                f"ssh handshake with {t.hostport} {what}; check that sshd listens on that port "
                f"(a wrong port can answer with another protocol, or not at all)"
            ) from None
        except socket.gaierror as e:
            client.close()
            raise UserError(
                f"cannot resolve host '{t.host}' of ssh target {t.hostport} ({e.strerror}); check the host name"
            ) from None
        except (socket.timeout, TimeoutError):
            client.close()
            raise UserError(
                f"timed out after {self.connect_timeout:g}s connecting to {t.hostport}; check that the machine is "
                f"up and that port {t.port} is open to you (firewall, security group)"
            ) from None
        except paramiko.ssh_exception.NoValidConnectionsError:
            client.close()
            raise UserError(
                f"cannot connect to {t.hostport}: connection refused or host unreachable; check that sshd runs "
                f"there and that the port is right"
            ) from None
        except OSError as e:
            client.close()
            raise UserError(
                f"cannot connect to {t.hostport} ({_one_line(e.strerror or e)}); check the host and port"
            ) from None
        except EOFError:  # the peer closed the connection mid-handshake (a dropped link, sshd restarting)
            client.close()
            raise UserError(f"the connection to {t.hostport} was closed during the ssh handshake; check that sshd "
                            "runs there, then try again") from None
        transport = client.get_transport()
        # Keepalives stop NAT gateways and firewalls from dropping an idle connection during a long `tail -f`.
        transport.set_keepalive(30)
        self._client = client
        return self

    def _load_identity(self, paramiko):
        path = os.path.expanduser(self.identity)
        try:
            return paramiko.PKey.from_path(path)
        except (paramiko.PasswordRequiredException, TypeError):
            # cryptography raises TypeError for an encrypted key loaded without a password.
            raise UserError(
                f"identity file '{self.identity}' is encrypted; load it into ssh-agent "
                f"(ssh-add {_shell_path(self.identity)}) and leave --identity out"
            ) from None
        except (paramiko.SSHException, ValueError, OSError) as e:
            raise UserError(
                f"identity file '{self.identity}' is not a private key paramiko can read ({_one_line(e)}); "
                "pass the private key (not the .pub) to --identity"
            ) from None

    def _auth_error(self, e: Exception) -> UserError:
        t = self.target
        used = (f"identity '{self.identity}'" if self.identity is not None
                else "ssh-agent and the default keys (~/.ssh/id_*)")
        return UserError(
            f"ssh authentication failed for user '{t.user}' at {t.hostport} with {used} ({_one_line(e)}); "
            f"check the user name and that the public key is in ~{t.user}/.ssh/authorized_keys there, "
            "or pass --identity"
        )

    def _transport(self) -> paramiko.Transport:
        self.connect()
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError(f"the ssh connection to {self.target.hostport} is closed", cmd="", exit_code=None,
                              stderr=b"")
        return transport

    def alive(self) -> bool:
        """Connected, and the transport not known to be gone (a silently dead link still reads as alive until a
        channel open, a keepalive probe or a timeout finds out)."""
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def disconnect(self) -> None:
        """End the connection but keep this object's references, unlike close(): another thread still using a
        shared client then gets a RemoteError ("closed") instead of an AttributeError, and no new connection."""
        if self._client is not None:
            self._client.close()

    def close_sftp(self) -> None:
        """Close the SFTP channel (its sftp-server process on the node), keeping the connection."""
        if self._sftp is not None:
            try:
                self._sftp.close()
            finally:
                self._sftp = None

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            finally:
                self._sftp = None
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    # -- commands ------------------------------------------------------------------------------------------------

    def run(self, cmd: str, *, stdin: bytes | None = None, timeout: float | None = None,
            check: bool = True) -> tuple[int, bytes, bytes]:
        """Run `cmd` through the login shell; return (exit_code, stdout, stderr). stdin is sent then closed.

        exit_code is -1 when the command died by a signal. With check, a non-zero exit raises RemoteError.
        On timeout the channel is closed and RemoteTimeout raised; the remote command may go on running.
        """
        chan = self._open_channel()
        try:
            chan.exec_command(cmd)
            deadline = None if timeout is None else time.monotonic() + timeout
            out, err = bytearray(), bytearray()
            try:
                for kind, data in self._pump(chan, deadline, stdin or b""):
                    (out if kind == "out" else err).extend(data)
                if not chan.status_event.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
                    raise _Deadline
            except _Deadline:
                raise RemoteTimeout(
                    f"remote command '{_program(cmd)}' on {self.target.hostport} did not finish in {timeout:g}s",
                    cmd=cmd, exit_code=None, stderr=bytes(err),
                ) from None
            code = chan.recv_exit_status()
        finally:
            chan.close()
        self._check_lost(cmd, code, bytes(err))
        if check and code != 0:
            raise self._failed(cmd, code, bytes(err))
        return code, bytes(out), bytes(err)

    def stream(self, cmd: str, *, check: bool = True, first_within: float | None = None) -> Iterator[bytes]:
        """Run `cmd` and yield its stdout in chunks as they arrive, until it ends (e.g. `tail -f log`).

        Closing the generator early (break, .close(), garbage collection) closes the channel, and the command's
        process group on the node is killed with it: don't start background work through stream() (a `setsid`
        child is out of that group). The command's stdin is /dev/null. stderr is kept (its tail) for the
        RemoteError raised, with check, when the command exits non-zero. `first_within`: RemoteTimeout (channel
        closed) when no output came by then; after the first output the stream waits as long as it runs.
        """
        chan = self._open_channel()
        try:
            chan.exec_command("sh -c " + shlex.quote(_STREAM_WRAPPER.format(cmd=cmd)))
            err: deque[bytes] = deque()
            size = 0
            if first_within is not None:
                deadline = time.monotonic() + first_within
                try:
                    for kind, data in self._pump(chan, deadline, None):  # open input: see _STREAM_WRAPPER
                        if kind == "out":
                            yield data
                            break
                        err.append(data)
                        size += len(data)
                except _Deadline:
                    raise RemoteTimeout(
                        f"remote command '{_program(cmd)}' on {self.target.hostport} printed nothing in "
                        f"{first_within:g}s", cmd=cmd, exit_code=None, stderr=b"".join(err),
                    ) from None
            for kind, data in self._pump(chan, None, None):  # open input: see _STREAM_WRAPPER
                if kind == "out":
                    yield data
                else:
                    err.append(data)
                    size += len(data)
                    while size - len(err[0]) >= _STDERR_TAIL:
                        size -= len(err.popleft())
            chan.status_event.wait()
            code = chan.recv_exit_status()
        finally:
            chan.close()
        self._check_lost(cmd, code, b"".join(err))
        if check and code != 0:
            raise self._failed(cmd, code, b"".join(err))

    def _pump(self, chan, deadline: float | None, stdin: bytes | None) -> Iterator[tuple[str, bytes]]:
        """Send `stdin` (then EOF; None: leave the input open) and yield ("out" | "err", data) as either arrives,
        until the remote closes its output. All three go together: a command that writes before it has read all
        its input would otherwise fill our receive window while we sit blocked sending to it, and an unread stderr
        stalls stdout the same way.
        """
        from . import netpolicy

        pending = memoryview(stdin or b"")
        if stdin is not None and not pending:
            chan.shutdown_write()
        heard = time.monotonic()
        while True:
            if chan.recv_ready():
                data = chan.recv(_CHUNK)
                heard = time.monotonic()
                if data:
                    yield "out", data
                continue
            if chan.recv_stderr_ready():
                data = chan.recv_stderr(_CHUNK)
                heard = time.monotonic()
                if data:
                    yield "err", data
                continue
            if deadline is None and time.monotonic() - heard > netpolicy.seconds(netpolicy.SSH_IDLE_PROBE_S):
                # A quiet stream (tail -F of a script that prints nothing) over a dead link would wait for ever:
                # TCP does not notice a peer that is gone. Opening a channel needs the server's answer.
                self._probe(chan)
                heard = time.monotonic()
            if chan.eof_received or chan.closed:
                return
            if pending and chan.send_ready():
                try:
                    pending = pending[chan.send(pending[:_CHUNK]):]
                except OSError:
                    pending = memoryview(b"")  # the command closed its input early: like a broken pipe, not an error
                if not pending:
                    chan.shutdown_write()
                continue
            # The channel's fileno becomes readable when data, EOF or close arrives (the cap is only a backstop);
            # nothing signals a reopened send window, so poll briefly while input is waiting to go out.
            wait = 0.01 if pending else 1.0
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise _Deadline
            select.select([chan], [], [], wait)

    def _open_channel(self):
        """A session channel; a server that does not answer the open within the command timeout is gone (without
        a bound, paramiko waits for ever on a dead link)."""
        from . import netpolicy

        try:
            return self._transport().open_session(timeout=netpolicy.seconds(netpolicy.SSH_COMMAND_S))
        except RemoteError:
            raise
        except Exception as exc:  # noqa: BLE001 - paramiko's SSHException, EOFError, socket errors: all mean gone
            self._client.close()
            raise RemoteError(f"connection to {self.target.hostport} was lost ({exc or type(exc).__name__})",
                              cmd="", exit_code=None, stderr=b"") from None

    def _probe(self, chan) -> None:
        """Raise RemoteError when the server does not answer a channel open within the probe timeout."""
        from . import netpolicy

        try:
            self._transport().open_session(timeout=netpolicy.seconds(netpolicy.SSH_PROBE_TIMEOUT_S)).close()
        except Exception as exc:  # noqa: BLE001 - paramiko's SSHException, EOFError, socket errors: all mean gone
            chan.close()
            self._client.close()
            raise RemoteError(f"connection to {self.target.hostport} was lost (no answer to a keepalive: {exc})",
                              cmd="", exit_code=None, stderr=b"") from None

    def _failed(self, cmd: str, code: int, err: bytes) -> RemoteError:
        how = "was killed by a signal" if code == -1 else f"exited {code}"
        tail = _tail(err)
        return RemoteError(
            f"remote command '{_program(cmd)}' on {self.target.hostport} {how}" + (f": {tail}" if tail else ""),
            cmd=cmd, exit_code=code, stderr=err,
        )

    def _check_lost(self, cmd: str, code: int, err: bytes) -> None:
        transport = self._client.get_transport() if self._client is not None else None
        if code == -1 and (transport is None or not transport.is_active()):
            raise RemoteError(
                f"connection to {self.target.hostport} was lost while running '{_program(cmd)}'",
                cmd=cmd, exit_code=None, stderr=err,
            )

    # -- files ---------------------------------------------------------------------------------------------------

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.open_sftp()
        return self._sftp

    def open_sftp(self) -> paramiko.SFTPClient:
        """A new SFTP channel on this connection, closed by the caller: one per thread, since a channel's requests
        wait on each other (the datapool's sftp store shares one connection among its workers this way)."""
        self._transport()
        from . import netpolicy

        import paramiko

        try:
            sftp = self._client.open_sftp()
        except (paramiko.SSHException, EOFError) as e:
            if not (self._client.get_transport() and self._client.get_transport().is_active()):
                raise
            # The server refused the subsystem (or its program is missing): the fix is on the box.
            raise UserError(f"{self.target.hostport} offers no SFTP ({_one_line(e) or type(e).__name__}): enable it in the box's "
                            "sshd_config with 'Subsystem sftp internal-sftp' (or the path of sftp-server) "
                            "and reload sshd") from None
        # Every SFTP read waits at most this long: a transfer over a dead link fails instead of hanging.
        sftp.get_channel().settimeout(netpolicy.seconds(netpolicy.SSH_COMMAND_S))
        return sftp

    def put(self, local: Path | str, remote: str, mode: int = 0o644, on_bytes=None) -> None:
        """Upload `local` to `remote` atomically: written to a temporary name next to it, then renamed over it, so
        readers see the old file or the whole new one. Missing parent directories are created. `on_bytes(n)`: told
        each n bytes read for sending (a transfer bar)."""
        with open(local, "rb") as f:
            self._put_stream(f if on_bytes is None else _Counted(f, on_bytes), remote, mode)

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        """Write `data` to `remote` atomically (as put()). For secrets use mode 0o600: the file is created with that
        mode, so no other user can open it even while it is being written. This, not a command argument, is how
        secret values reach the node."""
        import io

        self._put_stream(io.BytesIO(data), remote, mode)

    def _put_stream(self, src, remote: str, mode: int) -> None:
        import paramiko
        from paramiko.sftp import (CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_TRUNC,
                                   SFTP_FLAG_WRITE)

        sftp = self._sftp_client()
        path = _sftp_path(remote)
        parent = path.rpartition("/")[0]
        if parent:
            self._mkdir_p(parent)
        tmp = f"{path}.tmp-{secrets.token_hex(6)}"
        # SFTPClient.open() cannot pass a mode, and a chmod after creating leaves a moment in which another user can
        # open the file and keep reading what we write next. Creating it with the mode (and O_EXCL, so a file
        # planted under the temporary name is refused rather than reused with its own mode) closes that gap.
        attrs = paramiko.SFTPAttributes()
        attrs.st_mode = mode & 0o7777
        kind, msg = sftp._request(CMD_OPEN, tmp, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC | SFTP_FLAG_EXCL,
                                  attrs)
        if kind != CMD_HANDLE:
            raise paramiko.SFTPError("Expected handle")
        try:
            with paramiko.SFTPFile(sftp, msg.get_binary(), "wb") as f:
                f.set_pipelined(True)
                while chunk := src.read(1 << 20):
                    f.write(chunk)
                # The server applied its umask at creation; set the exact mode asked for.
                f.chmod(mode & 0o7777)
            sftp.posix_rename(tmp, path)
        except BaseException:
            try:
                sftp.remove(tmp)
            except OSError:
                pass
            raise

    def _mkdir_p(self, path: str) -> None:
        sftp = self._sftp_client()
        missing = []
        current = path
        while current and current not in ("/", "."):
            try:
                sftp.stat(current)
                break
            except FileNotFoundError:
                missing.append(current)
                current = current.rpartition("/")[0]
        for d in reversed(missing):
            try:
                sftp.mkdir(d)
            except OSError:
                # Another writer may have made it in between; only a directory that still is not there is an error.
                if not self.exists(d):
                    raise

    def exists(self, remote: str) -> bool:
        return self._stat(remote) is not None

    def stat_size(self, remote: str) -> int | None:
        st = self._stat(remote)
        return None if st is None else st.st_size

    def _stat(self, remote: str):
        try:
            return self._sftp_client().stat(_sftp_path(remote))
        except FileNotFoundError:
            return None

    def read(self, remote: str) -> bytes | None:
        """The whole file, or None if it does not exist."""
        try:
            with self._sftp_client().open(_sftp_path(remote), "rb") as f:
                f.prefetch()
                return f.read()
        except FileNotFoundError:
            return None

    def get_tree(self, remote: str, local: Path | str) -> int:
        """Download the folder `remote` into `local` (created), recursively, over SFTP: each file written to a
        temporary name beside it and renamed, so a partial file is never seen. Symlinks and other non-regular files
        are skipped. Returns the number of files; 0 when `remote` does not exist."""
        import stat

        sftp = self._sftp_client()
        count = 0
        pending = [(_sftp_path(remote), Path(local))]
        while pending:
            src, dst = pending.pop()
            try:
                entries = sftp.listdir_attr(src)
            except FileNotFoundError:
                continue
            dst.mkdir(parents=True, exist_ok=True)
            for e in entries:
                path = f"{src.rstrip('/')}/{e.filename}"
                if stat.S_ISDIR(e.st_mode or 0):
                    pending.append((path, dst / e.filename))
                elif stat.S_ISREG(e.st_mode or 0):
                    tmp = dst / f".{e.filename}.part-{secrets.token_hex(4)}"
                    try:
                        sftp.get(path, str(tmp))
                        os.replace(tmp, dst / e.filename)
                    finally:
                        tmp.unlink(missing_ok=True)
                    count += 1
        return count
