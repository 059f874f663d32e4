"""launcher.sshclient against a real OpenSSH sshd on 127.0.0.1 (tests/sshd.py), with real host-key checking.

Nothing here reads or writes the real ~/.ssh: known_hosts is passed explicitly, and the default-path tests point
HOME at a temp dir.
"""
from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.errors import UserError
from launcher.sshclient import RemoteError, RemoteTimeout, SshClient, SshTarget, parse_target

from ..sshd import Sshd, keygen, write_known_hosts, write_wrong_known_hosts

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch):
    # A developer's ssh-agent must not make a "wrong identity" or "no keys" test pass or fail by accident.
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture(scope="module")
def client(sshd: Sshd):
    with SshClient(sshd.target, identity=str(sshd.identity), known_hosts=str(sshd.known_hosts)) as c:
        yield c


@pytest.fixture
def rdir(tmp_path: Path) -> str:
    """A remote directory for file tests. The server runs on this machine, so it is also a local directory."""
    d = tmp_path / "remote"
    d.mkdir()
    return str(d)


# -- parse_target ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("ubuntu@10.0.0.5:2222", SshTarget("ubuntu", "10.0.0.5", 2222)),
    ("ubuntu@gpu-box.example.com", SshTarget("ubuntu", "gpu-box.example.com", 22)),
    ("root@[::1]:2222", SshTarget("root", "::1", 2222)),
    ("root@[fe80::1]", SshTarget("root", "fe80::1", 22)),
    ("root@::1", SshTarget("root", "::1", 22)),
    ("ec2-user@host_1:65535", SshTarget("ec2-user", "host_1", 65535)),
])
def test_parse_target(text, expected):
    assert parse_target(text) == expected


def test_parse_target_defaults_to_the_local_user_and_port_22():
    assert parse_target("box:2200") == SshTarget(getpass.getuser(), "box", 2200)
    assert parse_target("box") == SshTarget(getpass.getuser(), "box", 22)


@pytest.mark.parametrize("text, names", [
    ("", "empty"),
    ("root@", "host is missing"),
    ("root@box:0", "port '0'"),
    ("root@box:70000", "port '70000'"),
    ("root@box:ssh", "port 'ssh'"),
    ("root@box:", "port ''"),
    ("root@[::1", "without ']'"),
    ("root@[box]:22", "not an IPv6"),
    ("root@[::1]x", "unexpected 'x'"),
    ("root@1:2:3", "not an IPv6"),
    ("ro ot@box", "space"),
    ("root@box/x", "'/'"),
    ("-oProxyCommand=x@box", "not a valid user name"),
    ("root@-box", "not a host name"),
])
def test_parse_target_rejects_bad_input_in_one_line(text, names):
    with pytest.raises(UserError) as e:
        parse_target(text)
    msg = str(e.value)
    assert names in msg and "user@host" in msg.replace("[user@]", "user@") and "\n" not in msg


def test_target_names_match_openssh():
    assert parse_target("u@h:2222").known_hosts_name == "[h]:2222"
    assert parse_target("u@h").known_hosts_name == "h"
    assert parse_target("u@[::1]:2222").hostport == "[::1]:2222"
    assert str(parse_target("u@h:22")) == "u@h:22"


# -- run -----------------------------------------------------------------------------------------------------------


def test_run_returns_exit_code_stdout_and_stderr(client):
    assert client.run("echo out; echo err >&2") == (0, b"out\n", b"err\n")
    assert client.run("echo partial; echo why >&2; exit 3", check=False) == (3, b"partial\n", b"why\n")


def test_run_nonzero_exit_raises_remote_error_with_program_and_stderr_tail(client):
    with pytest.raises(RemoteError) as e:
        client.run("SECRETISH=x ls /definitely/not/here")
    assert not isinstance(e.value, UserError)
    assert e.value.exit_code == 2
    msg = str(e.value)
    assert "'ls'" in msg and "/definitely/not/here" in msg and "SECRETISH" not in msg


def test_run_sends_stdin_and_closes_it(client):
    assert client.run("cat", stdin=b"hello\x00bytes") == (0, b"hello\x00bytes", b"")
    # No stdin given: the command sees EOF at once instead of waiting for input.
    assert client.run("cat") == (0, b"", b"")


def test_run_streams_large_stdin_while_reading_output(client):
    # cat writes while it reads: sending all input before reading any output would deadlock on the windows.
    data = os.urandom(12_000_000)
    assert client.run("cat; cat /dev/null >&2", stdin=data) == (0, data, b"")
    # A command that exits without reading its input is not an error.
    assert client.run("echo done", stdin=data)[:2] == (0, b"done\n")


def test_run_reads_large_stdout_and_stderr_together(client):
    # Several times the channel window on both streams: unread stderr would stall the command.
    code, out, err = client.run(
        "head -c 5000000 /dev/zero >&2; head -c 5000000 /dev/zero; head -c 3000000 /dev/zero >&2")
    assert (code, len(out), len(err)) == (0, 5000000, 8000000)


def test_run_timeout_raises_remote_timeout_and_the_client_stays_usable(client, tmp_path):
    pidfile = tmp_path / "pid"
    try:
        with pytest.raises(RemoteTimeout) as e:
            client.run(f"echo $$ > {pidfile}; exec sleep 600", timeout=0.5)
        assert isinstance(e.value, RemoteError) and "'echo'" in str(e.value)
        assert client.run("echo still") == (0, b"still\n", b"")
    finally:
        if pidfile.exists():  # run() leaves a timed-out command running (documented); don't leave it behind
            subprocess.run(["kill", "-KILL", pidfile.read_text().strip()], capture_output=True)


def test_signal_death_is_reported_as_such(client):
    with pytest.raises(RemoteError, match="killed by a signal"):
        client.run("kill -KILL $$")


# -- stream --------------------------------------------------------------------------------------------------------


def test_stream_yields_output_before_the_command_ends(client, tmp_path):
    flag = tmp_path / "flag"
    # The command cannot finish until the flag exists, and the flag is created only after the first chunk arrived.
    stream = client.stream(f"echo first; while [ ! -e {flag} ]; do sleep 0.05; done; echo second")
    first = next(stream)
    assert first == b"first\n"
    client.run(f"touch {flag}")  # a second channel on the same connection, while the stream is open
    assert b"".join(stream) == b"second\n"


def test_stream_nonzero_exit_raises_after_the_output(client):
    got = []
    with pytest.raises(RemoteError) as e:
        for chunk in client.stream("echo some; echo boom >&2; exit 4"):
            got.append(chunk)
    assert b"".join(got) == b"some\n" and e.value.exit_code == 4 and "boom" in str(e.value)
    assert b"".join(client.stream("exit 4", check=False)) == b""


def _wait_until_dead(client, pid: int) -> None:
    # Dead means gone or a zombie: an orphan's new parent (pid 1 in a container) may never reap it.
    client.run(f'while s=$(ps -o stat= -p {pid}) && [ "${{s#Z}}" = "$s" ]; do sleep 0.05; done', timeout=60)


def test_closing_a_stream_early_kills_the_remote_command(client, tmp_path):
    pidfile = tmp_path / "pid"
    # `sleep` never writes, so nothing on the node notices the closed channel except the stream's own cleanup
    # (sshd leaves such commands running).
    stream = client.stream(f"sleep 600 & echo $! > {pidfile}; echo ready; wait")
    assert next(stream) == b"ready\n"
    pid = int(pidfile.read_text())
    try:
        stream.close()
        _wait_until_dead(client, pid)
    finally:
        subprocess.run(["kill", "-KILL", str(pid)], capture_output=True)


# -- files ---------------------------------------------------------------------------------------------------------


def _mode(client, path: str) -> str:
    return client.run(f"stat -c %a {path}")[1].decode().strip()


def test_put_bytes_creates_parents_and_sets_mode_for_secrets(client, rdir):
    path = f"{rdir}/a/b/secret.env"
    client.put_bytes(b"TOKEN=s3cr3t\n", path, mode=0o600)
    assert client.read(path) == b"TOKEN=s3cr3t\n"
    assert _mode(client, path) == "600"
    assert os.listdir(f"{rdir}/a/b") == ["secret.env"]  # no temporary file left behind


def test_put_replaces_the_file_by_rename_and_applies_mode(client, rdir, tmp_path):
    local = tmp_path / "run.sh"
    local.write_bytes(b"#!/bin/sh\necho v2\nexit 0\n" + os.urandom(300_000))
    path = f"{rdir}/run.sh"
    client.put_bytes(b"v1", path)
    assert _mode(client, path) == "644"
    inode_before = client.run(f"stat -c %i {path}")[1]
    client.put(local, path, mode=0o755)
    assert client.read(path) == local.read_bytes()
    assert _mode(client, path) == "755"
    # A new inode: the old file was replaced whole by a rename, never rewritten in place (no partial file visible).
    assert client.run(f"stat -c %i {path}")[1] != inode_before
    assert sorted(os.listdir(rdir)) == ["run.sh"]
    assert client.run(f"{path}")[1] == b"v2\n"


def test_exists_stat_size_and_read(client, rdir):
    path = f"{rdir}/x/data.bin"
    assert not client.exists(path) and client.stat_size(path) is None and client.read(path) is None
    client.put_bytes(b"12345", path)
    assert client.exists(path) and client.exists(f"{rdir}/x")
    assert client.stat_size(path) == 5 and client.read(path) == b"12345"
    client.put_bytes(b"", f"{rdir}/empty")
    assert client.stat_size(f"{rdir}/empty") == 0 and client.read(f"{rdir}/empty") == b""


def test_failed_upload_leaves_no_temporary_file(client, rdir):
    (Path(rdir) / "dir").mkdir()
    with pytest.raises(OSError):
        client.put_bytes(b"x", f"{rdir}/dir")  # cannot rename a file over a directory
    assert os.listdir(f"{rdir}/dir") == [] and sorted(os.listdir(rdir)) == ["dir"]


# -- connecting: host keys, identity, network ----------------------------------------------------------------------


def _connect(sshd: Sshd, **kw) -> None:
    kw.setdefault("identity", str(sshd.identity))
    with SshClient(sshd.target, **kw) as c:
        c.run("true")


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and e.value.exit_code == 2
    return msg


def test_unknown_host_key_is_refused_with_the_keyscan_fix(sshd, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    with pytest.raises(UserError) as e:
        _connect(sshd, known_hosts=str(kh))
    msg = _one_line(e)
    assert f"host key of 127.0.0.1:{sshd.port} is not in {kh}" in msg
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {kh}" in msg
    assert kh.read_text() == ""  # never added


def test_changed_host_key_is_refused_as_a_possible_attack(sshd, tmp_path):
    kh = write_wrong_known_hosts(tmp_path / "known_hosts", sshd)
    before = kh.read_text()
    with pytest.raises(UserError) as e:
        _connect(sshd, known_hosts=str(kh))
    msg = _one_line(e)
    assert "CHANGED" in msg and "attack" in msg
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {kh}" in msg and f"ssh-keyscan -p {sshd.port}" in msg
    assert kh.read_text() == before


def test_default_known_hosts_is_under_home(sshd, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(UserError) as e:
        _connect(sshd)
    msg = _one_line(e)
    assert "is not in ~/.ssh/known_hosts (the file does not exist)" in msg
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> ~/.ssh/known_hosts" in msg

    write_wrong_known_hosts(home / ".ssh" / "known_hosts", sshd)
    with pytest.raises(UserError) as e:
        _connect(sshd)
    msg = _one_line(e)
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' && ssh-keyscan" in msg

    write_known_hosts(home / ".ssh" / "known_hosts", sshd)
    _connect(sshd)


def test_without_identity_the_default_keys_under_home_are_used(sshd, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    write_known_hosts(home / ".ssh" / "known_hosts", sshd)
    with pytest.raises(UserError) as e:
        _connect(sshd, identity=None)
    msg = _one_line(e)
    assert "authentication failed for user 'root'" in msg and "ssh-agent and the default keys" in msg

    for suffix in ("", ".pub"):
        (home / ".ssh" / f"id_ed25519{suffix}").write_bytes(Path(f"{sshd.identity}{suffix}").read_bytes())
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    _connect(sshd, identity=None)


def test_wrong_identity_names_the_key_and_the_user(sshd, tmp_path):
    other = keygen(tmp_path / "not_authorized")
    with pytest.raises(UserError) as e:
        _connect(sshd, identity=str(other), known_hosts=str(sshd.known_hosts))
    msg = _one_line(e)
    assert f"identity '{other}'" in msg and "user 'root'" in msg and f"127.0.0.1:{sshd.port}" in msg


def test_missing_identity_file_is_refused_before_connecting(tmp_path):
    with pytest.raises(UserError) as e:
        SshClient("root@127.0.0.1:1", identity=str(tmp_path / "nope.pem"))
    assert "nope.pem' does not exist" in _one_line(e)


def test_unreadable_and_encrypted_identities(sshd, tmp_path):
    pub = tmp_path / "key.pub"
    pub.write_text(sshd.host_key_pub + "\n")
    with pytest.raises(UserError) as e:
        _connect(sshd, identity=str(pub), known_hosts=str(sshd.known_hosts))
    assert "not a private key" in _one_line(e)

    enc = tmp_path / "enc"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "passphrase", "-f", str(enc)], check=True)
    with pytest.raises(UserError) as e:
        _connect(sshd, identity=str(enc), known_hosts=str(sshd.known_hosts))
    assert "is encrypted" in _one_line(e) and "ssh-add" in str(e.value)


def test_closed_port_names_host_and_port(sshd, tmp_path):
    import socket

    with socket.socket() as s:  # bound, never listening: connections to it are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(UserError) as e:
            SshClient(f"root@127.0.0.1:{port}", identity=str(sshd.identity),
                      known_hosts=str(sshd.known_hosts)).connect()
    msg = _one_line(e)
    assert f"cannot connect to 127.0.0.1:{port}" in msg and "refused" in msg


def test_a_port_that_never_answers_ssh_names_host_and_port(sshd):
    import socket

    with socket.socket() as s:  # listening but never accepting or sending a banner
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        port = s.getsockname()[1]
        with pytest.raises(UserError) as e:
            SshClient(f"root@127.0.0.1:{port}", identity=str(sshd.identity), known_hosts=str(sshd.known_hosts),
                      connect_timeout=0.5).connect()
    assert f"127.0.0.1:{port}" in _one_line(e)


def test_a_port_that_answers_another_protocol_names_host_and_port(sshd):
    import socket
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]

        def answer_http():
            conn, _ = s.accept()
            with conn:
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer_http, daemon=True).start()
        with pytest.raises(UserError) as e:
            SshClient(f"root@127.0.0.1:{port}", identity=str(sshd.identity), known_hosts=str(sshd.known_hosts)).connect()
    msg = _one_line(e)
    assert f"ssh handshake with 127.0.0.1:{port} failed" in msg and "banner" in msg


def test_unresolvable_host_names_the_host(sshd):
    with pytest.raises(UserError) as e:
        SshClient("root@no-such-host.invalid:2222", identity=str(sshd.identity),
                  known_hosts=str(sshd.known_hosts)).connect()
    assert "no-such-host.invalid" in _one_line(e)


# -- lightness ----------------------------------------------------------------------------------------------------


def test_importing_sshclient_does_not_import_paramiko():
    code = "import sys, launcher.sshclient; print('paramiko' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
