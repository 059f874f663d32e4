"""The node bootstrap (launcher/node/bootstrap.py) run for real with bash on this machine, laid out as the ssh backend lays
out a box (code/<sha>.tar.gz, datapool/, jobs/<id>/ under one base dir) and pushing into a file:// store.

`shutdown`, `poweroff` and `halt` are stubs first on PATH that only append their argv to a file: a test proves the
teardown ran, and this machine stays up.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.node import bootstrap
from launcher.proc import ProcRef
from launcher.snapshot import build
from launcher.spec import DEADMAN_MARGIN_S, SPEC_VERSION, AgentSpec
from .waiting import wait_for as _wait_for

EXPERIMENT = "boot"
HELLO = 'import os, pathlib\nprint("hello from the node", os.environ["JOB_ID"], flush=True)\n' \
        'pathlib.Path(os.environ["RAN"]).write_text("ran")\n'
# SIGTERM is ignored from the first line and across exec, so the agent's own stop (its stop time is already past
# for a deadline this close) cannot end it: only a SIGKILL does. Written in bash so the trap is set long before
# the agent's first stop check (0.2 s after the start).
STUBBORN = 'trap "" TERM\necho "$$" > "$READY"\nexec sleep 600\n'
STUB = '#!/bin/sh\necho "$(basename "$0") $*" >> "$TEARDOWN_LOG"\nexit 0\n'


def _state(pid: int) -> str | None:
    """The process's state letter, None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _dead(pid: int) -> bool:
    # PID 1 here does not reap orphans: a zombie is as dead as it gets.
    return _state(pid) in (None, "Z", "X")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(d.name))
    return out


def _pid(path: Path) -> int:
    return int(path.read_text().split()[0])


class Node:
    """One bootstrap run: the base dir, the store, the stub log; `kill_all` in teardown leaves nothing behind."""

    def __init__(self, tmp_path: Path, script: str, source: str, *, deadline_at: float | None = None,
                 grace_period: int = 5, env: dict | None = None, files: dict[str, str] | None = None):
        """`files`: more of the project ({relative path: text}), e.g. its own images/requirements.lock."""
        self.tmp = tmp_path
        self.project = tmp_path / "project"
        self.project.mkdir()
        (self.project / script).write_text(source)
        for rel, text in (files or {}).items():
            (self.project / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.project / rel).write_text(text)
        self.snap = build(self.project, cache_dir=tmp_path / "snapshots")
        self.base = tmp_path / "node"
        self.store = tmp_path / "store"
        self.store.mkdir()  # the bucket exists (the client probes it before it submits)
        self.stubs = tmp_path / "stubs"
        self.stubs.mkdir()
        for name in ("shutdown", "poweroff", "halt"):
            (self.stubs / name).write_text(STUB)
            (self.stubs / name).chmod(0o755)
        self.teardown_log = tmp_path / "teardown.log"
        self.job_id = "boot-" + os.urandom(3).hex()
        self.spec = AgentSpec(
            version=SPEC_VERSION, job_id=self.job_id, backend="ssh", run_name="boot", script=script, args=[],
            env=env or {}, secrets=[], experiment=EXPERIMENT, workdir=f"code/{self.snap.sha256}",
            datapool_root="datapool", store_url=self.store.as_uri(), endpoint_url=None, https_proxy=None, no_proxy=None,
            ca_bundle=None,
            state_dir=f"jobs/{self.job_id}", deadline_at=deadline_at, grace_period=grace_period,
            push_interval=30, push_timeout=120, preemptible=False, attempt=1, relay=None,
        )
        self.state = self.base / "jobs" / self.job_id
        self.proc: subprocess.Popen | None = None

    def place_snapshot(self) -> Path:
        """Where the ssh backend uploads it: <base>/code/<sha>.tar.gz."""
        dest = self.base / "code" / f"{self.snap.sha256}.tar.gz"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.snap.path, dest)
        return dest

    def start(self, *, python: str = sys.executable, teardown: str = "poweroff",
              keep_on_failure: bool = False, url: str = "", path: str | None = None, env: dict | None = None,
              **render_kw) -> subprocess.Popen:
        """`url`: the node fetches the snapshot from there (as EC2 and k8s nodes do) instead of finding it uploaded.
        `path`: the node's PATH after the stubs (default: this one's); `env`: more of the node's environment;
        `render_kw`: the rest of bootstrap.render's keywords."""
        script = bootstrap.render(self.spec, base=shlex.quote(str(self.base)), snapshot_sha=self.snap.sha256,
                                  snapshot_tar="" if url else f"code/{self.snap.sha256}.tar.gz", snapshot_url=url,
                                  python=python, teardown=teardown, keep_on_failure=keep_on_failure, **render_kw)
        script_path = self.tmp / "bootstrap.sh"
        script_path.write_text(script)
        # A node has its own network: the proxies of whoever runs the tests are not its.
        node_env = {k: v for k, v in os.environ.items()
                    if k not in ("PYTHONPATH", "DATAPOOL_ROOT", "EXPERIMENT", "CHECKPOINT_DIR", "LAUNCH_DATAPOOL")
                    and k.lower() not in ("https_proxy", "http_proxy", "no_proxy", "ssl_cert_file", "aws_ca_bundle")}
        node_env.update(PATH=f"{self.stubs}:{path or node_env.get('PATH', '/usr/bin:/bin')}",
                        TEARDOWN_LOG=str(self.teardown_log), OMP_NUM_THREADS="1", **(env or {}))
        # Its own session, as the ssh backend starts it (setsid): the dead-man switch signals its group.
        self.proc = subprocess.Popen(["bash", str(script_path)], env=node_env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out.decode(errors="replace")

    def teardown_calls(self) -> list[str]:
        return self.teardown_log.read_text().splitlines() if self.teardown_log.exists() else []

    def setup_log(self) -> str:
        try:
            return (self.state / "setup.log").read_text()
        except OSError:
            return ""

    def store_result(self) -> Path:
        return self.store / "experiments" / EXPERIMENT / "reports" / "jobs" / self.job_id / "result.json"

    def kill_all(self) -> None:
        """SIGKILL whatever of this run is still there, by recorded identity only."""
        for name in ("agent.pid", "script.pid", "deadman.pid"):
            ref = ProcRef.load(self.state / name)
            if ref is not None:
                ref.signal(signal.SIGCONT)
                ref.signal_group(signal.SIGKILL)
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture
def node(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # the project is walked, never a repo above it
    made = []

    def _make(*args, **kw) -> Node:
        n = Node(tmp_path, *args, **kw)
        made.append(n)
        return n

    yield _make
    for n in made:
        n.kill_all()


def test_happy_path_pushes_the_result_tears_down_and_disarms_the_switch(node, tmp_path):
    ran = tmp_path / "ran.txt"
    n = node("hello.py", HELLO, env={"RAN": str(ran)})
    n.place_snapshot()
    n.start()
    rc, out = n.finish()
    assert rc == 0, out + n.setup_log()
    assert ran.read_text() == "ran"

    result = json.loads(n.store_result().read_text())
    assert (result["reason"], result["exit_code"], result["job_id"]) == ("exited", 0, n.job_id), result
    assert json.loads((n.state / "result.json").read_text()) == result  # the node's own copy
    assert "hello from the node" in (n.store_result().parent / "log.txt").read_text()
    assert (n.base / "code" / n.snap.sha256 / "hello.py").is_file()

    assert n.teardown_calls() == ["shutdown -h now"]  # once, and the first of the three answered
    assert "teardown: poweroff" in n.setup_log()
    deadman = ProcRef.load(n.state / "deadman.pid")
    assert deadman is not None
    # Its `sleep` shares its group: nothing of the switch may outlive the job and fire later.
    assert _wait_for(lambda: not deadman.alive() and not _group_members(deadman.pid), timeout=30), \
        _group_members(deadman.pid)


def test_corrupt_snapshot_is_refused_reported_to_the_store_and_torn_down(node, tmp_path):
    ran = tmp_path / "ran.txt"
    n = node("hello.py", HELLO, env={"RAN": str(ran)})
    tar = n.place_snapshot()
    _corrupt_same_size(tar)
    n.start()
    rc, out = n.finish()
    assert rc == 1, out

    result = json.loads(n.store_result().read_text())
    assert (result["reason"], result["exit_code"]) == ("setup_failed", 1), result
    assert "step 'snapshot'" in result["error"], result["error"]
    assert f"is not the expected {n.snap.sha256}" in result["error"], result["error"]
    assert json.loads((n.state / "result.json").read_text())["reason"] == "setup_failed"
    assert not (n.base / "code" / n.snap.sha256).exists()  # nothing unpacked from bad bytes
    assert "launching again uploads it anew" in result["error"] and not tar.exists()  # never used again
    assert not ran.exists() and not (n.state / "agent.pid").exists()
    assert n.teardown_calls() == ["shutdown -h now"]


def _corrupt_same_size(tar: Path) -> None:
    data = bytearray(tar.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    tar.write_bytes(bytes(data))


def _serve_snapshot(n: Node, tmp_path: Path):
    """An http server on 127.0.0.1 holding the node's snapshot at /snap.tar.gz (shut it down after)."""
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    shutil.copyfile(n.snap.path, served / "snap.tar.gz")
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_corrupt_cached_snapshot_is_fetched_again_and_the_job_runs(node, tmp_path):
    ran = tmp_path / "ran.txt"
    n = node("hello.py", HELLO, env={"RAN": str(ran)})
    server = _serve_snapshot(n, tmp_path)
    try:
        _corrupt_same_size(n.place_snapshot())  # a cached copy of the right size and the wrong bytes
        n.start(url=f"http://127.0.0.1:{server.server_address[1]}/snap.tar.gz")
        rc, out = n.finish()
    finally:
        server.shutdown()
    assert rc == 0, out + n.setup_log()
    assert ran.read_text() == "ran"
    assert "cached snapshot did not match its sha256: deleted, fetched again" in n.setup_log()
    tar = n.base / "code" / f"{n.snap.sha256}.tar.gz"
    assert tar.read_bytes() == n.snap.path.read_bytes()


def test_an_unpacked_folder_without_its_stamp_is_unpacked_again(node, tmp_path):
    ran = tmp_path / "ran.txt"
    n = node("hello.py", HELLO, env={"RAN": str(ran)})
    n.place_snapshot()
    cut_short = n.base / "code" / n.snap.sha256
    cut_short.mkdir(parents=True)
    (cut_short / "leftover.txt").write_text("from an unpack that never finished")  # and no hello.py, no stamp
    n.start()
    rc, out = n.finish()
    assert rc == 0, out + n.setup_log()
    assert ran.read_text() == "ran"
    assert (cut_short / "hello.py").is_file() and not (cut_short / "leftover.txt").exists()
    assert (cut_short / ".launcher-unpacked").read_text().strip() == n.snap.sha256
    assert not list((n.base / "code").glob(".*stale*"))  # the set-aside folder is gone


def test_missing_interpreter_leaves_the_result_on_the_node_and_tears_down(node, tmp_path):
    ran = tmp_path / "ran.txt"
    n = node("hello.py", HELLO, env={"RAN": str(ran)})
    n.place_snapshot()
    n.start(python="/nonexistent/python3")
    rc, out = n.finish()
    assert rc == 1, out

    result = json.loads((n.state / "result.json").read_text())
    assert (result["job_id"], result["reason"], result["exit_code"]) == (n.job_id, "setup_failed", 1), result
    assert "step 'python'" in result["error"] and "/nonexistent/python3" in result["error"], result["error"]
    assert not n.store_result().exists()  # no Python to push with
    assert not ran.exists()
    assert n.teardown_calls() == ["shutdown -h now"]


def _stubborn_node(node, tmp_path, lead_s: float) -> Node:
    """A job whose dead-man switch fires `lead_s` from now, running a script only SIGKILL ends, with a grace so
    long that the agent would not kill it for an hour."""
    n = node("stubborn.sh", STUBBORN, deadline_at=time.time() + lead_s - DEADMAN_MARGIN_S, grace_period=3600,
             env={"READY": str(tmp_path / "ready")})
    n.place_snapshot()
    return n


def _script_alive_just_before_the_deadline(n: Node, tmp_path: Path) -> int:
    """The script's pid, once it has outlived the agent's own stop (0.2 s after it started, its stop time being
    long past) right up to the switch's deadline: whatever ends it after that is the switch."""
    assert _wait_for(lambda: (tmp_path / "ready").exists() and (n.state / "script.pid").exists()), n.setup_log()
    script = _pid(n.state / "script.pid")
    # The switch sleeps whole seconds to the rendered (truncated) deadline: it fires at or after int(deadman_at).
    time.sleep(max(0.0, int(n.spec.deadman_at) - 0.5 - time.time()))
    assert "reached" not in n.setup_log(), "the switch fired before the script was up: raise lead_s"
    assert not _dead(script), "the script died before the deadline: the test would prove nothing"
    return script


def test_dead_man_switch_kills_the_jobs_processes_at_the_deadline(node, tmp_path):
    n = _stubborn_node(node, tmp_path, lead_s=6)
    n.start(teardown="none")
    script = _script_alive_just_before_the_deadline(n, tmp_path)
    agent = _pid(n.state / "agent.pid")
    assert _wait_for(lambda: _dead(script), timeout=60), n.setup_log()
    assert _wait_for(lambda: _dead(agent), timeout=30)
    assert "deadline" in n.setup_log() and "reached" in n.setup_log(), n.setup_log()
    assert n.teardown_calls() == []  # teardown none: a box you own stays up


def test_dead_man_switch_kills_a_hung_agent(node, tmp_path):
    # A hung agent (here: stopped) does not act on SIGTERM; the switch must SIGKILL it 10 s later. The bootstrap
    # shell dies of that SIGTERM and is reaped at once (by init on a real box; here by us, its parent).
    n = _stubborn_node(node, tmp_path, lead_s=7)
    n.start(teardown="none")
    # Stopped once it has recorded the script it started (script.pid): stopped sooner, it never would, and the
    # script's own "ready" can come first.
    assert _wait_for(lambda: (tmp_path / "ready").exists() and (n.state / "agent.pid").exists()
                     and (n.state / "script.pid").exists()), n.setup_log()
    agent = ProcRef.load(n.state / "agent.pid")
    assert agent is not None and agent.signal(signal.SIGSTOP)
    script = _script_alive_just_before_the_deadline(n, tmp_path)
    assert _wait_for(lambda: n.proc.poll() is not None, timeout=60), n.setup_log()  # reaped, as init would
    assert "reached" in n.setup_log()
    assert _wait_for(lambda: _dead(script), timeout=60)
    deadman = ProcRef.load(n.state / "deadman.pid")
    assert _wait_for(lambda: not deadman.alive(), timeout=30)  # the switch has done all it will do
    # The switch's SIGTERM ends the bootstrap shell too, so the agent is killed by its own identity, not the shell's.
    assert not agent.alive()


def test_dead_man_switch_powers_off_a_cloud_node(node, tmp_path):
    n = _stubborn_node(node, tmp_path, lead_s=6)
    n.start(teardown="poweroff")
    _script_alive_just_before_the_deadline(n, tmp_path)
    # The agent is still holding on to its stubborn script: only the switch can be calling shutdown.
    assert _wait_for(lambda: n.teardown_calls() != [], timeout=60), n.setup_log()
    assert n.teardown_calls() == ["shutdown -h now"]
    assert "reached" in n.setup_log() and "teardown:" not in n.setup_log(), n.setup_log()
    assert n.proc.poll() is None  # the bootstrap itself never got to its teardown


def test_unsafe_snapshot_member_is_refused_before_anything_is_unpacked(node, tmp_path):
    """A tarball whose hash checks out can still hold `../x`: the bootstrap's own guard refuses it on any Python
    (tarfile's data filter exists only from 3.11.4 on)."""
    import dataclasses
    import hashlib
    import io
    import tarfile

    n = node("hello.py", HELLO)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as t:
        data = b"owned\n"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    sha = hashlib.sha256(evil.read_bytes()).hexdigest()
    n.snap = dataclasses.replace(n.snap, sha256=sha, path=evil)
    n.spec = n.spec.model_copy(update={"workdir": f"code/{sha}"})
    n.place_snapshot()
    n.start()
    rc, out = n.finish()
    assert rc == 1, out
    result = json.loads(n.store_result().read_text())
    assert result["reason"] == "setup_failed" and "unsafe member '../escaped.txt'" in result["error"], result
    assert not (n.base / "escaped.txt").exists() and not (n.base / "code" / sha).exists()
    assert n.teardown_calls() == ["shutdown -h now"]


@pytest.mark.parametrize("keep", [False, True])
def test_a_failed_job_tears_down_unless_kept_for_debugging(node, keep):
    n = node("fail.py", "import sys\nprint('failing', flush=True)\nsys.exit(3)\n")
    n.place_snapshot()
    n.start(keep_on_failure=keep)
    rc, out = n.finish()
    assert rc == 3, out + n.setup_log()
    assert json.loads(n.store_result().read_text())["exit_code"] == 3
    if keep:
        assert n.teardown_calls() == [] and "kept for debugging" in n.setup_log()
        deadman = ProcRef.load(n.state / "deadman.pid")
        assert deadman is not None and deadman.alive()  # the deadline still ends it
    else:
        assert n.teardown_calls() == ["shutdown -h now"]


def test_the_snapshot_comes_through_the_jobs_proxy_trusting_its_ca(node, tmp_path):
    """The node: section's proxy and CA reach the bootstrap's own download: an https:// snapshot URL whose
    certificate only the job's CA signs, fetched through the job's proxy (a CONNECT tunnel)."""
    from .netparts import Proxy, TlsFront, ca_and_cert

    ran = tmp_path / "ran.txt"
    n = node("hello.py", HELLO, env={"RAN": str(ran)})
    server = _serve_snapshot(n, tmp_path)
    ca, cert, key = ca_and_cert(tmp_path)
    front = TlsFront(f"http://127.0.0.1:{server.server_address[1]}", cert, key)
    proxy = Proxy()
    n.spec = n.spec.model_copy(update={"https_proxy": proxy.url, "ca_bundle": ca.read_text()})
    try:
        n.start(url=f"{front.endpoint}/snap.tar.gz")
        rc, out = n.finish()
    finally:
        server.shutdown()
        front.close()
        proxy.close()
    assert rc == 0, out + n.setup_log()
    assert ran.read_text() == "ran"
    assert [line.rsplit(" ", 1)[0] for line in proxy.seen] == [f"CONNECT {front.endpoint.split('://')[1]}"]
