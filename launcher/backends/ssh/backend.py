"""The ssh backend: a job on a box you already have (a GPU workstation, a rented server), over OpenSSH.

    launch --backend ssh --host ubuntu@gpu-box --datapool s3://bucket/pool runners/sft_run.py ...

The client uploads the code snapshot (once per hash) and the node bootstrap over SFTP, starts the bootstrap in its
own session on the box (it outlives the client and the connection), and leaves. Host keys are checked against
known_hosts and never added on the fly. Layout on the box, under `~/<remote_dir>` (default ~/.launcher-node):

    code/<sha>.tar.gz, code/<sha>/     the snapshot, shared by every job of the same tree
    datapool/                          the node's datapool root, synced with the job's store
    jobs/<id>/                         bootstrap.sh, spec.json, pid files, agent.log, setup.log, result.json

Secret values travel as a 0600 file over SFTP that the bootstrap reads and deletes, never as arguments.
Teardown on a box you own means the job's processes, not the machine: the dead-man switch kills them at the
deadline instead of powering the box off.
"""
from __future__ import annotations

import os
import shlex
import threading
from typing import Iterator

from pydantic import ConfigDict

from ... import progress
from ...node import bootstrap
from ...job import Job
from ...plan import Plan
from ...spec import PUSHING_MARKER
from ...sshclient import RemoteTimeout
from ..base import Backend, Capabilities, Handle, HandleData, JobState, NodePaths, Observation, observed
from .options import SshOptions

# Start the bootstrap detached from the SSH session: setsid (own session, so a dropped connection sends it no
# SIGHUP), output to a file, stdin closed; print its pid and start time so every later signal can check them.
# `cd` must not share the backgrounded list: `cd X && cmd &` forks a subshell that holds the channel open.
_START = ('cd {base} || exit 1; setsid bash {state}/bootstrap.sh > {state}/bootstrap.out 2>&1 < /dev/null & '
          'p=$!; echo "$p $(sed -E "s/^.*\\) //" /proc/$p/stat | cut -d" " -f20)"')

# A process is still ours if its start time matches the one recorded with its pid.
_SAME = 'same() { [ -n "$1" ] && [ "$(sed -E "s/^.*\\) //" /proc/$1/stat 2>/dev/null | cut -d" " -f20)" = "$2" ]; }; '


# One SSH connection per box in this process, shared by everything that talks to it: a foreground launch's
# preflight, snapshot check and upload, start, log follow (its own thread) and status looks are channels on one
# transport, instead of a handshake each (~0.2 s of the client's CPU, and the box's) and a new one every look.
# A connection that a lost channel, a failed keepalive probe or a timeout found dead is replaced on next use.
_SHARED: dict[tuple, object] = {}
_SHARED_LOCK = threading.Lock()


def _connection(ssh: SshOptions):
    """The shared, connected SshClient for this box (made here on first use, or when the last one died)."""
    from ...sshclient import SshClient

    key = (ssh.host, ssh.identity, ssh.known_hosts)
    with _SHARED_LOCK:  # two threads that both need a new connection make one
        client = _SHARED.get(key)
        if client is None or not client.alive():
            _SHARED.pop(key, None)
            client = SshClient(ssh.host, identity=ssh.identity, known_hosts=ssh.known_hosts).connect()
            _SHARED[key] = client
        return client


# A foreground launch's follow stream, opened by start() on the start's own channel, until its logs(follow).
_STARTED: dict[str, tuple] = {}
# Jobs whose log this process follows live now. The follow runs on the node while the bootstrap (before the log
# exists) or the agent lives, and ends when they do or the link drops: while it runs, the job is active, and a
# status look need not start a shell on the box for that (a login shell each, every second of a foreground wait,
# beside the job's own setup on the same CPUs). The look after the stream ends asks the box.
_FOLLOWED: dict[str, int] = {}


def _log_path(pool: str, experiment: str, job_id: str) -> str:
    """The job's log.txt on the box, relative to remote_dir, as a shell word."""
    return shlex.quote(f"{pool}/experiments/{experiment}/reports/jobs/{job_id}/log.txt")


def _follow_body(log: str, offset: int, boot_pid, boot_start) -> str:
    """Wait for the log (the node may still be setting up), then follow it until the agent is gone; from byte
    `offset` (a reconnect after a drop starts right after the bytes the caller has). tail looks for the agent every
    0.1 s: the foreground's end waits for that look (tail's own default is 1 s)."""
    start = f"+{int(offset) + 1}"
    return (f'while [ ! -f {log} ] && [ ! -f "$S/result.json" ] && same {boot_pid} {boot_start}; '
            f'do sleep 0.3; done; '
            f'[ -f {log} ] || {{ cat "$S/setup.log" 2>/dev/null; exit 0; }}; '
            f'read -r p s < "$S/agent.pid" 2>/dev/null; '
            f'if same "$p" "$s"; then exec tail -c {start} -F -s 0.1 --pid="$p" {log} 2>/dev/null; '
            f'else tail -c {start} {log}; fi')


def _forget(client) -> None:
    """A shared connection that timed out may be a dead link TCP has not noticed: the next use connects anew."""
    with _SHARED_LOCK:
        for key, c in list(_SHARED.items()):
            if c is client:
                del _SHARED[key]
    client.disconnect()


def _base(remote_dir: str) -> str:
    """The node's base dir as a shell word: relative to the login's home unless absolute."""
    return shlex.quote(remote_dir) if remote_dir.startswith("/") else f'"$HOME"/{shlex.quote(remote_dir)}'


def _has_snapshot(client, base: str, sha: str, size: int) -> bool:
    def sha256_of(rel: str) -> str | None:
        code, out, _ = client.run(f"cd {_base(base)} && sha256sum {shlex.quote(rel)}", timeout=120, check=False)
        return out.decode(errors="replace").split()[0] if code == 0 and out.split() else None

    return bootstrap.snapshot_present(lambda rel: client.stat_size(f"{base}/{rel}"), sha256_of, sha, size)


# Run on the box with its python3 (stdlib only): the new tarball from an older one's byte ranges and the chunks
# sent (launcher/snapshot.py compose_plan), written beside it, checked against its sha256, then renamed into place.
_COMPOSE = r"""
import hashlib, json, os, sys
old, delta, ops_file, out, sha = sys.argv[1:6]
h, part = hashlib.sha256(), out + ".part"
try:
    with open(old, "rb") as fo, open(delta, "rb") as fd, open(part, "wb") as w:
        for src, at, n in json.load(open(ops_file)):
            f = fo if src == "old" else fd
            f.seek(at)
            while n:
                block = f.read(min(n, 1 << 20))
                if not block:
                    sys.exit(f"{old if src == 'old' else delta} ends early")
                w.write(block)
                h.update(block)
                n -= len(block)
    if h.hexdigest() != sha:
        sys.exit(f"composed {h.hexdigest()}, not {sha}")
    os.replace(part, out)
finally:
    for f in (delta, ops_file, part):
        if os.path.exists(f):
            os.unlink(f)
"""


def _compose_on_box(client, base: str, snap, python: str) -> int | None:
    """A chunked snapshot (launcher/snapshot.py) whose box holds an earlier snapshot of this machine's: only the
    chunks the box lacks are sent, and the box composes the tarball from the old one's ranges (checked against the
    new sha256 there, and by the bootstrap again). Returns the bytes sent, or None: no such earlier snapshot there,
    or composing failed (the caller uploads the whole tarball, as without chunks)."""
    import json
    import tempfile

    from ... import snapshot as snapshots
    from ...sshclient import RemoteError

    found = snapshots.composable_from(
        snap, lambda prev: client.stat_size(f"{base}/code/{prev.sha256}.tar.gz") == prev.size)
    if found is None:
        return None
    prev, ops = found
    to_send = sum(n for src, _, n in ops if src == "new")
    if to_send > snap.size // 2:
        return None  # most of it changed: the whole tarball is as cheap
    sha = snap.sha256
    names = [f"code/{prev.sha256}.tar.gz", f"code/.{sha}.delta", f"code/.{sha}.ops", f"code/{sha}.tar.gz"]
    at, remote_ops = 0, []
    with tempfile.NamedTemporaryFile(dir=snap.path.parent, prefix=".delta.") as delta, open(snap.path, "rb") as f:
        for src, offset, n in ops:  # the new ranges, one after the other, in the delta file the box reads
            if src == "old":
                remote_ops.append(("old", offset, n))
                continue
            f.seek(offset)
            left = n
            while left:
                block = f.read(min(left, 1 << 20))
                delta.write(block)
                left -= len(block)
            remote_ops.append(("delta", at, n))
            at += n
        delta.flush()
        try:
            with progress.transfer("snapshot", to_send) as sent:
                client.put(delta.name, f"{base}/{names[1]}", on_bytes=sent)
            client.put_bytes(json.dumps(remote_ops).encode(), f"{base}/{names[2]}")
            client.run(f"cd {_base(base)} && {shlex.quote(python)} - " + " ".join(map(shlex.quote, names + [sha])),
                       stdin=_COMPOSE.encode(), timeout=600)
        except RemoteError as exc:
            progress.report(progress.SNAPSHOT, f"composing on the box failed ({str(exc).splitlines()[0]}); "
                                               "uploading the whole snapshot")
            return None
    progress.report(progress.SNAPSHOT, f"sent {progress.human_bytes(to_send)} of {progress.human_bytes(snap.size)} "
                                       f"(the changed chunks); the rest composed on the box from {prev.sha256[:12]}")
    return to_send


def _offer_uv(client, base: str) -> str:
    """The uv wheel at tools/uv-<sha256>.whl under remote_dir, uploaded only when absent (the bootstrap checks its
    sha256 before it uses it, and installs with pip without it); its sha256, or "" when there is none to offer."""
    from ... import nodesetup

    wheel = nodesetup.offered_uv_wheel()
    if wheel is None:
        return ""
    sha = nodesetup.sha256_file(wheel)
    remote = f"{base}/{nodesetup.TOOLS_DIR}/{nodesetup.uv_name(sha)}"
    if client.stat_size(remote) != wheel.stat().st_size:
        client.put(wheel, remote)
    return sha


def _shown(remote_dir: str) -> str:
    return remote_dir if remote_dir.startswith("/") else f"~/{remote_dir}"


def box_pool(job: Job) -> str | None:
    """An sftp:// store on the job's own box is the node's datapool root (nothing syncs): that folder as the agent
    takes it (relative to remote_dir, where it runs, or absolute); None for any other store. An sftp:// store on
    another box is a UserError: the node would need keys to reach it."""
    url = job.datapool
    if url is None or url.scheme != "sftp":
        return None
    from ...datapool.sftp import parse
    from ...errors import UserError
    from ...sshclient import parse_target

    place = parse(url)
    if parse_target(place.target) != parse_target(job.ssh.host):
        raise UserError(f"--datapool {place.target}: an sftp:// store of --backend ssh must be on the job's box "
                        f"({job.ssh.host}); use s3:// for a store elsewhere")
    if place.root.startswith("/"):
        return place.root
    remote_dir = job.ssh.remote_dir.strip("/")
    if job.ssh.remote_dir.startswith("/"):
        raise UserError(f"--datapool {url}: give the folder as an absolute path (sftp://{place.target}/abs/path): "
                        f"remote_dir {job.ssh.remote_dir} is absolute, so the home is not known before the job runs")
    if place.root == remote_dir or place.root.startswith(remote_dir + "/"):
        return place.root[len(remote_dir):].strip("/") or "."
    return "../" * len(remote_dir.split("/")) + place.root


class SshTarget(SshOptions):
    """The box as a handle records it: the job's `ssh:` options, lenient about a key a later version dropped (an old
    record still reads)."""

    model_config = ConfigDict(extra="ignore")


class SshHandle(HandleData):
    """Where the job is on the box. Everything but the core's fields comes from `start`: a record that never got
    that far (a failed start) has None here."""

    ssh: SshTarget | None = None  # the box (stored as a plain dict: the registry's JSON)
    base: str | None = None  # the node's base dir, `remote_dir` (relative to the login's home unless absolute)
    state: str | None = None  # the job's state dir under base: jobs/<id>
    sha: str | None = None  # the code snapshot's hash: code/<sha>/ on the box
    boot: tuple[int, int] | None = None  # the bootstrap's (pid, start time): every signal checks both
    experiment: str = "default"
    pool: str = "datapool"  # the node's datapool root under base (the sftp:// store's folder when it is the box's)


class SshBackend(Backend):
    name = "ssh"
    handle_type = SshHandle
    where_fields = ("host",)
    capabilities = Capabilities(remote=True, gpus=None, spot=False, max_nodes=1, datapool_schemes=("s3", "sftp"),
                                resources_enforced=False)

    def check(self, job: Job) -> list[str]:
        notes = []
        if job.terminate_after:
            notes.append("--terminate-after on ssh: the job's processes end with it; the box stays yours")
        if job.keep_on_failure:
            notes.append("--keep-on-failure on ssh: the box is never torn down; its job dir keeps the logs")
        box_pool(job)  # an sftp:// store on another box is refused here, in one line
        return notes

    def node_paths(self, job: Job, job_id: str, snapshot_sha: str | None) -> NodePaths:
        pool = box_pool(job)
        return NodePaths(workdir=f"code/{snapshot_sha}", datapool_root=pool or "datapool", state_dir=f"jobs/{job_id}",
                         root_is_store=pool is not None)

    def default_datapool(self, options=None, *, online: bool = False) -> str | None:
        """No --datapool: the box itself, `<remote_dir>/pool` over SFTP (nothing to create elsewhere)."""
        if options is None:
            return None
        from ...datapool.sftp import make_url

        return make_url(options.host, f"{options.remote_dir.rstrip('/')}/pool", identity=options.identity,
                        known_hosts=options.known_hosts)

    def create_datapool(self, url: str, *, dry_run: bool = False) -> bool:
        """The pool folder on the box (mode 0700 where it is made); `dry_run` only looks."""
        from ...datapool.sftp import connect, parse

        place = parse(url)
        client = connect(place)
        try:
            if client.exists(place.root):
                return False
            if not dry_run:
                client.run(f"umask 077 && mkdir -p -- {place.shell(place.root)}", timeout=60)
            return True
        finally:
            client.close()

    def render(self, plan: Plan) -> dict:
        ssh = plan.job.ssh
        sha = plan.snapshot.sha256
        state = plan.spec.state_dir
        from ... import nodesetup
        from ..slots import slot

        # uv for the venv (not needed where the interpreter is named): its sha256 is known once the client has the
        # wheel, at start, which puts it at tools/uv-<sha>.whl under remote_dir unless there (_offer_uv).
        script = bootstrap.render(plan.spec, base=_base(ssh.remote_dir), snapshot_sha=sha,
                                  snapshot_tar=f"code/{sha}.tar.gz", python=ssh.python, teardown="none",
                                  lock_hash=nodesetup.lock_hash(plan.job.workdir),
                                  uv_sha="" if ssh.python else slot("uv_sha"))
        uploads = [{"path": f"{_shown(ssh.remote_dir)}/code/{sha}.tar.gz", "bytes": plan.snapshot.size,
                    "when": bootstrap.UPLOAD_WHEN},
                   {"path": f"{_shown(ssh.remote_dir)}/{state}/bootstrap.sh", "bytes": len(script.encode())}]
        if plan.job.secrets:
            uploads.append({"path": f"{_shown(ssh.remote_dir)}/{state}/secrets.env", "mode": "0600",
                            "holds": list(plan.job.secrets)})
        return {
            "host": ssh.host,
            "identity": ssh.identity,
            "known_hosts": ssh.known_hosts or "~/.ssh/known_hosts",
            "upload": uploads,
            "run": _START.format(base=_base(ssh.remote_dir), state=state),
            "bootstrap": script,
        }

    def price(self, job: Job) -> dict:
        return {"usd_per_hour": None, "note": "your own box: no price known"}

    def access_checks(self, options=None) -> list:
        from .access import checks

        return checks(options)

    def where(self, plan: Plan, *, online: bool = False) -> list[tuple[str, str]]:
        ssh = plan.job.ssh
        gpu = f"; --gpu {plan.job.gpu} asked, not checked" if plan.job.gpu else ""
        key = f" (key {ssh.identity})" if ssh.identity else ""
        return [("host", f"{ssh.host}{key}"),
                ("machine", f"the box as it is{gpu}"),
                ("node dir", f"{_shown(ssh.remote_dir)}; python {ssh.python or 'the bootstrap picks'}")]

    # -- talking to the box ----------------------------------------------------------------------------------------

    def _client(self, ssh: SshOptions):
        from ...sshclient import SshClient

        return SshClient(ssh.host, identity=ssh.identity, known_hosts=ssh.known_hosts).connect()

    def preflight(self, plan: Plan) -> None:
        # Host key, reachability and login are checked before anything is recorded or uploaded; start, the log
        # follower and the looks reuse the connection (_connection).
        _connection(plan.job.ssh)

    def start(self, plan: Plan, *, detach: bool) -> dict:
        ssh = plan.job.ssh
        sha = plan.snapshot.sha256
        state = plan.spec.state_dir
        base = ssh.remote_dir
        client = _connection(ssh)
        try:
            if not _has_snapshot(client, base, sha, plan.snapshot.size):
                if _compose_on_box(client, base, plan.snapshot, ssh.python or "python3") is None:
                    with progress.transfer("snapshot", plan.snapshot.size) as sent:  # a bar on a terminal
                        client.put(plan.snapshot.path, f"{base}/code/{sha}.tar.gz", on_bytes=sent)
                    progress.report(progress.SNAPSHOT,
                                    f"uploaded {progress.human_bytes(plan.snapshot.size)} to the box")
            else:
                progress.report(progress.SNAPSHOT, "already on the box")
            if plan.job.secrets:
                lines = "".join(f"{name}={shlex.quote(os.environ[name])}\n" for name in plan.job.secrets)
                client.put_bytes(lines.encode(), f"{base}/{state}/secrets.env", mode=0o600)
            script = plan.request["bootstrap"]
            if not ssh.python:
                from ..slots import fill

                script = fill(script, {"uv_sha": _offer_uv(client, base)})
            client.put_bytes(script.encode(), f"{base}/{state}/bootstrap.sh", mode=0o755)
            if detach:
                _, out, _ = client.run(plan.request["run"], timeout=60)
            else:
                out = self._start_following(client, plan)
        except RemoteTimeout:
            _forget(client)
            raise
        finally:
            client.close_sftp()  # the connection stays (follow, looks); the box's sftp-server need not
        pid, start = out.decode().split()
        return {"ssh": ssh.model_dump(), "base": base, "state": state, "sha": sha, "boot": [int(pid), int(start)],
                "experiment": plan.job.experiment, "pool": plan.spec.datapool_root}

    def _start_following(self, client, plan: Plan) -> bytes:
        """The foreground's start: the bootstrap started and its log followed in one command, on one channel (a
        second command would cost the box a second login shell, in series): the first line is the bootstrap's
        `pid start`, returned; the rest is the log from byte 0, kept for this process's first `logs(follow)`."""
        from ...sshclient import RemoteError

        d = plan.spec
        body = _follow_body(_log_path(d.datapool_root, plan.job.experiment, plan.job_id), 0, '"$bp"', '"$bs"')
        cmd = (f'{plan.request["run"]}; S={shlex.quote(d.state_dir)}; {_SAME}bp=$p; '
               f'bs=$(sed -E "s/^.*\\) //" /proc/$p/stat | cut -d" " -f20); {body}')
        stream = client.stream(cmd, first_within=60)
        head = b""
        for chunk in stream:
            head += chunk
            if b"\n" in head:
                break
        else:
            raise RemoteError(f"the bootstrap's start on {client.target.hostport} printed no process id",
                              cmd=cmd, exit_code=None, stderr=b"")
        line, _, rest = head.partition(b"\n")
        _STARTED[plan.job_id] = (stream, rest)
        return line

    def _sh(self, handle: Handle, body: str, timeout: float | None = None) -> tuple[int, bytes]:
        from ... import netpolicy

        timeout = netpolicy.SSH_COMMAND_S if timeout is None else timeout
        d = handle.data
        client = _connection(d.ssh)
        try:
            code, out, _ = client.run(f"cd {_base(d.base)} && S={shlex.quote(d.state)} && {_SAME}{body}",
                                      timeout=timeout, check=False)
        except RemoteTimeout:
            _forget(client)
            raise
        return code, out

    def status(self, handle: Handle) -> Observation:
        import json

        from ...errors import UserError
        from ...sshclient import RemoteError

        if handle.job_id in _FOLLOWED:
            return Observation(JobState.RUNNING)  # the live follow stream is the look (see _FOLLOWED)
        boot_pid, boot_start = handle.data.boot
        body = (f'if [ -f "$S/result.json" ]; then echo result; cat "$S/result.json"; '
                f'elif read -r p s < "$S/agent.pid" 2>/dev/null && same "$p" "$s"; then '
                f'if [ -f "$S/{PUSHING_MARKER}" ]; then echo pushing; head -n 1 "$S/{PUSHING_MARKER}"; '
                f'else echo running; fi; '
                f'elif same {boot_pid} {boot_start}; then echo pending; '
                f'else echo lost; tail -n 5 "$S/setup.log" "$S/agent.log" 2>/dev/null; fi')
        try:
            _, out = self._sh(handle, body)
        except (RemoteError, UserError) as exc:  # a failed connect is a UserError (it names the host and the fix)
            return Observation(JobState.UNREACHABLE, None, str(exc))  # for now: not an ending
        except Exception as exc:  # noqa: BLE001 - whatever else a broken link raises is not an answer either
            return Observation(JobState.UNREACHABLE, None, f"{type(exc).__name__}: {exc}")
        head, _, rest = out.decode(errors="replace").partition("\n")
        if head == "result":
            return observed(json.loads(rest))
        if head == "pushing":  # the script ended; the agent retries its last push to a store that does not answer
            return Observation(JobState.PUSHING, None, rest.strip() or "store unreachable, retrying")
        if head in ("running", "pending"):
            return Observation(JobState(head))
        return Observation(JobState.LOST, None, rest.strip() or "the job's processes are gone and it left no result")

    stream_is_store_log = True  # the stream is the node's log.txt itself

    def logs(self, handle: Handle, follow: bool = False, offset: int = 0) -> Iterator[bytes] | None:
        d = handle.data
        started = _STARTED.pop(handle.job_id, None)
        if started is not None:
            if follow and not offset:  # this process started it: the start's own channel already follows it
                return self._following(handle, self._started_stream(*started))
            started[0].close()
        log = _log_path(d.pool, d.experiment, handle.job_id)
        if not follow:
            body = f'tail -c +{int(offset) + 1} {log} 2>/dev/null || cat "$S/setup.log" 2>/dev/null; true'
        else:
            boot_pid, boot_start = d.boot
            body = _follow_body(log, offset, boot_pid, boot_start)
        # A box that cannot be reached raises: the follower (joblog.logs) reads the store's copy meanwhile and tries
        # again; a one-off `launch logs` reads the store's copy.
        stream = self._stream(_connection(d.ssh), handle, body)
        return self._following(handle, stream) if follow else stream

    def _stream(self, client, handle: Handle, body: str) -> Iterator[bytes]:
        # Closing the stream closes its channel (and the node's tail with it), not the shared connection.
        d = handle.data
        yield from client.stream(f"cd {_base(d.base)} && S={shlex.quote(d.state)} && {_SAME}{body}", check=False)

    @staticmethod
    def _started_stream(stream, rest: bytes) -> Iterator[bytes]:
        from ...sshclient import RemoteError

        if rest:
            yield rest
        try:
            yield from stream
        except RemoteError as exc:
            if exc.exit_code is None:
                raise  # the connection was lost: the follower reconnects from its offset
            # else the follow part's own exit status, which a follow never checks (as _stream)

    @staticmethod
    def _following(handle: Handle, stream: Iterator[bytes]) -> Iterator[bytes]:
        """While this runs, status() takes the live stream as its look (see _FOLLOWED)."""
        _FOLLOWED[handle.job_id] = _FOLLOWED.get(handle.job_id, 0) + 1
        try:
            yield from stream
        finally:
            _FOLLOWED[handle.job_id] -= 1
            if not _FOLLOWED[handle.job_id]:
                del _FOLLOWED[handle.job_id]

    def interrupt(self, handle: Handle) -> None:
        self._sh(handle, 'touch "$S/cancel-requested"; read -r p s < "$S/agent.pid" 2>/dev/null && same "$p" "$s" '
                         '&& kill -TERM "$p"; true')

    def cancel(self, handle: Handle, grace: float | None = None) -> None:
        # `-m launcher.nodectl` (the shim, not launcher.node.nodectl): the node runs its own copy of the code, which
        # may predate launcher/node/.
        # The node runs the same policy itself (launcher/node/nodectl.py: marker, SIGTERM, grace, SIGKILL, confirm), in
        # one call: for ssh one connection instead of one per look.
        d = handle.data
        grace = d.grace_period if grace is None else grace
        boot_pid, boot_start = d.boot
        py = shlex.quote(d.ssh.python or "python3")
        agent_path = f'code/{d.sha}/.launcher-agent:code/{d.sha}'
        # The node's own nodectl (same rules as the local backend); if the code never got there, kill the
        # bootstrap's process group by hand.
        body = (f'touch "$S/cancel-requested"; '
                f'PYTHONPATH={agent_path} {py} -m launcher.nodectl cancel "$S" --grace {grace:g} > /dev/null 2>&1 '
                f'|| {{ same {boot_pid} {boot_start} && kill -KILL -- -{boot_pid}; '
                f'read -r p s < "$S/deadman.pid" 2>/dev/null && same "$p" "$s" && kill -KILL -- "-$p"; }}; true')
        self._sh(handle, body, timeout=grace + 60)

    def fetch_outputs(self, handle: Handle, into) -> None:
        """`launch sync up --from-job JOB`: the outputs a push_failed job kept on the box, over SFTP (outputs.py)."""
        from ...errors import UserError
        from . import outputs

        d = handle.data
        if d.ssh is None or d.base is None:
            raise UserError(f"job {handle.job_id} never started on a box: it has no outputs to fetch")
        client = self._client(d.ssh)
        try:
            if not outputs.fetch(client, d.base, d.experiment, into):
                where = outputs.remote_experiment_dir(_shown(d.base), d.experiment)
                raise UserError(f"job {handle.job_id}: no outputs under {where} on {d.ssh.host} (cleaned up?)")
        finally:
            client.close()
