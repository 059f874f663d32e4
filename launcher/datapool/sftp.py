"""`sftp://[user@]host[:port]/path`: a folder on a box you can ssh into, as a datapool store.

    sftp://ubuntu@gpu-box/~/.launcher-node/pool     relative to the login's home (`/~/`, curl's convention)
    sftp://ubuntu@gpu-box:2222/srv/pool             absolute
    ...?identity=~/.ssh/gpu.pem&known_hosts=FILE    the key and known_hosts to use (default: ssh-agent and
                                                    ~/.ssh/id_*, ~/.ssh/known_hosts), as the ssh backend's options

The same tree as every store, nothing added but our own `.launcher/` folder (never synced): `tmp/` for uploads in
flight and `sftp-sha256.jsonl`, the box's hash cache (path, size, mtime in ns, sha256), a hint keyed by size and
mtime like the local one. The connection is launcher/sshclient.py's (host key checked, never added; every wait
bounded). Listing and hashing run on the box (`find`, `sha256sum`: the GNU tools every box the ssh backend takes
has), so a no-op sync is one `find` and one small read, and no file crosses the network to be compared.

Writes land whole: the bytes go to `.launcher/tmp/<uuid>.part`, their sha256 is taken while sending and checked
against `sha256sum` of what the box stored, then a posix rename puts the file in place. Reads are checked against
the sha256 the box computed. `SftpFiles` is the same place for one job's folder (launcher/jobstore.py).
"""
from __future__ import annotations

import json
import shlex
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from .base import Entry, Store
from .errors import DatapoolUserError, IntegrityError, SyncError
from .hashing import DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, StreamHasher
from .url import StoreUrl

HOME = "/~"  # a path under it is relative to the login's home; any other path is absolute
QUERY_KEYS = ("identity", "known_hosts")
META = ".launcher"
HASHES = f"{META}/sftp-sha256.jsonl"
TMP = f"{META}/tmp"
# One SSH connection per store, its SFTP channels shared by the sync's workers: sshd allows 10 sessions on one
# connection (MaxSessions), and a channel's requests wait on each other. 4 for transfers, 4 for commands.
CHANNELS = 4
_BUF = 1024 * 1024
_LONG_S = 1800.0  # a `find` or a `sha256sum` pass over a big pool: bounded, but not by the short-command limit


@dataclass(frozen=True)
class Place:
    """Where an sftp URL points: the ssh target, the folder as SFTP takes it ('' = the login's home; relative to
    it, or absolute), and the key files to log in with."""

    target: str
    root: str
    identity: str | None = None
    known_hosts: str | None = None

    @property
    def shown(self) -> str:
        return self.root if self.root.startswith("/") else f"~/{self.root}".rstrip("/")

    def shell(self, path: str) -> str:
        """`path` (as SFTP takes it) as one shell word on the box."""
        if path.startswith("/"):
            return shlex.quote(path)
        return '"$HOME"' + (f"/{shlex.quote(path)}" if path else "")


def parse(url: str | StoreUrl) -> Place:
    """A `sftp://` URL's parts; a bad one is a ValueError (StoreUrl calls this to check it)."""
    text = str(url)
    parsed = urlparse(text)
    from ..errors import UserError
    from ..sshclient import parse_target

    try:
        parse_target(parsed.netloc)
    except UserError as exc:
        raise ValueError(f"bad datapool URL {text!r}: {exc}") from None
    path = unquote(parsed.path)
    if path == HOME or path.startswith(HOME + "/"):
        root = path[len(HOME):].strip("/")
    else:
        root = "/" + path.strip("/") if path.strip("/") else ""
    if not root or ".." in root.split("/"):
        raise ValueError(f"bad datapool URL {text!r}: name a folder on the box without '..', e.g. "
                         "sftp://ubuntu@gpu-box/~/.launcher-node/pool (under the home) or sftp://gpu-box/srv/pool")
    query = parse_qs(parsed.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(QUERY_KEYS))
    if unknown or any(len(v) != 1 or not v[0] for v in query.values()):
        raise ValueError(f"bad datapool URL {text!r}: its query takes identity=FILE and known_hosts=FILE once each"
                         + (f" (not {unknown[0]})" if unknown else ""))
    return Place(parsed.netloc, root, *(query.get(k, [None])[0] for k in QUERY_KEYS))


def make_url(target: str, folder: str, *, identity: str | None = None, known_hosts: str | None = None) -> str:
    """The sftp URL of `folder` on `target` (`folder` relative to the login's home unless absolute)."""
    from urllib.parse import quote, urlencode

    path = folder if folder.startswith("/") else f"{HOME}/{folder}"
    query = urlencode({k: v for k, v in (("identity", identity), ("known_hosts", known_hosts)) if v}, safe="/~")
    return f"sftp://{target}{quote(path, safe='/~')}" + (f"?{query}" if query else "")


def connect(place: Place):
    """An open SshClient to the box; what the user can fix (host key, login, no route) is a one-line
    DatapoolUserError."""
    from ..errors import UserError
    from ..sshclient import SshClient

    try:
        return SshClient(place.target, identity=place.identity, known_hosts=place.known_hosts).connect()
    except UserError as exc:
        raise DatapoolUserError(f"sftp store {place.target}: {exc}") from None


def _join(*parts: str) -> str:
    first = parts[0]
    rest = "/".join(p.strip("/") for p in parts[1:] if p and p.strip("/"))
    if not rest:
        return first
    return f"{first.rstrip('/')}/{rest}" if first else rest


def _mtime_ns(text: str) -> int:
    """`find -printf %T@` ("1700000000.1234567890") as integer nanoseconds."""
    sec, _, frac = text.partition(".")
    return int(sec) * 10**9 + int((frac + "000000000")[:9])


def _safe_rel(rel: str) -> bool:
    parts = rel.split("/")
    return not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts)


class SftpStore(Store):
    is_local = False

    def __init__(self, url: str | StoreUrl, sub: str = "", *, readonly: bool = False,
                 threshold: int = DEFAULT_MULTIPART_THRESHOLD, part_size: int = DEFAULT_PART_SIZE):
        try:
            self.place = parse(url)
        except ValueError as exc:
            raise DatapoolUserError(str(exc)) from None
        self.sub = sub.strip("/")
        self.base = _join(self.place.root, self.sub)
        self.url = f"sftp://{self.place.target}{'/~/' if not self.base.startswith('/') else ''}{self.base}"
        self.readonly = readonly
        # The ETag-style hash is computed for the local layout, so the local hash cache learns from uploads.
        self.threshold, self.part_size = threshold, part_size
        self._ssh = None
        self._lock = threading.Lock()
        self._idle: list = []
        self._open: list = []
        self._transfers = threading.BoundedSemaphore(CHANNELS)
        self._commands = threading.BoundedSemaphore(CHANNELS)
        self._made: set[str] = set()
        self._hashes: dict[str, tuple[int, int, str]] | None = None  # the box's hash cache, keyed from the root
        self._dirty = False

    def describe(self) -> str:
        return self.url

    # --- connection
    @property
    def ssh(self):
        with self._lock:
            if self._ssh is None:
                self._ssh = connect(self.place)
            return self._ssh

    @contextmanager
    def _sftp(self):
        """One SFTP channel for the caller's thread while it works; returned for the next one after."""
        from ..errors import UserError

        with self._transfers:
            ssh = self.ssh
            with self._lock:
                chan = self._idle.pop() if self._idle else None
            if chan is None:
                try:
                    chan = ssh.open_sftp()
                except UserError as exc:  # the box offers no SFTP: the fix is there
                    raise DatapoolUserError(str(exc)) from None
                with self._lock:
                    self._open.append(chan)
            try:
                yield chan
            except (OSError, EOFError, IntegrityError, DatapoolUserError, SyncError):
                with self._lock:  # a file error leaves the channel fine; a dead one fails its next user too
                    self._idle.append(chan)
                raise
            else:
                with self._lock:
                    self._idle.append(chan)

    def _run(self, cmd: str, *, stdin: bytes | None = None, timeout: float = _LONG_S) -> tuple[int, bytes, bytes]:
        with self._commands:
            return self.ssh.run(cmd, stdin=stdin, timeout=timeout, check=False)

    def probe(self) -> None:
        code, _, err = self._run(f"B={self.place.shell(self.base)}; [ ! -e \"$B\" ] || [ -d \"$B\" ]", timeout=60)
        if code != 0:
            raise DatapoolUserError(f"{self.url} is a file on {self.place.target}, not a directory: fix the URL")
        with self._sftp():
            pass  # a box without the sftp subsystem says so here, in one line

    # --- listing
    def list(self, pool=None, settle_seconds: float = 0.0, want=None) -> dict[str, Entry]:
        """One `find` on the box (size, mtime), hashes from the box's cache or `sha256sum` there for the rest."""
        found = self._find()
        hashes = self._load_hashes()
        out: dict[str, Entry] = {}
        todo: list[str] = []
        for rel, (size, mns) in found.items():
            if not _safe_rel(rel) or (want is not None and not want(rel)):
                continue
            hit = hashes.get(self._key(rel))
            sha = hit[2] if hit is not None and hit[:2] == (size, mns) else None
            out[rel] = Entry(rel, size, mns / 1e9, sha, None)
            if sha is None:
                todo.append(rel)
        for rel, sha in self._hash_on_box(todo).items():
            out[rel].sha256 = sha
            e = out[rel]
            with self._lock:
                hashes[self._key(rel)] = (e.size, found[rel][1], sha)
                self._dirty = True
        with self._lock:  # rows of files no longer there (within this view) go
            prefix = f"{self.sub}/" if self.sub else ""
            for key in [k for k in hashes if k.startswith(prefix) and k[len(prefix):] not in found]:
                del hashes[key]
                self._dirty = True
        self._save_hashes()
        return out

    def _find(self) -> dict[str, tuple[int, int]]:
        cmd = (f"B={self.place.shell(self.base)}; [ -e \"$B\" ] || exit 0; [ -d \"$B\" ] || exit 3; cd \"$B\" && "
               f"find . -path ./{META} -prune -o -type f -printf '%P\\0%s\\0%T@\\0'")
        code, out, err = self._run(cmd)
        if code == 3:
            raise DatapoolUserError(f"{self.url} is a file on {self.place.target}, not a directory: fix the URL")
        if code != 0:
            raise SyncError(f"{self.url}: listing failed on the box (find exited {code}): "
                            + " ".join(err.decode(errors="replace").split())[:300])
        fields = out.split(b"\0")
        found = {}
        for i in range(0, len(fields) - 2, 3):
            rel = fields[i].decode("utf-8", "surrogateescape")
            found[rel] = (int(fields[i + 1]), _mtime_ns(fields[i + 2].decode()))
        return found

    def _hash_on_box(self, rels: list[str]) -> dict[str, str]:
        """sha256 of these files, computed on the box (nothing crosses the network); a file gone since is left out."""
        if not rels:
            return {}
        names = b"".join(r.encode("utf-8", "surrogateescape") + b"\0" for r in rels)
        code, out, err = self._run(f"cd {self.place.shell(self.base)} && xargs -0 -r sha256sum -z --", stdin=names)
        got = {}
        for rec in out.split(b"\0"):
            if len(rec) > 66:
                got[rec[66:].decode("utf-8", "surrogateescape")] = rec[:64].decode()
        if code != 0 and not got:
            raise SyncError(f"{self.url}: sha256sum failed on the box (exit {code}): "
                            + " ".join(err.decode(errors="replace").split())[:300])
        return got

    def _key(self, rel: str) -> str:
        return f"{self.sub}/{rel}" if self.sub else rel

    def _load_hashes(self) -> dict[str, tuple[int, int, str]]:
        if self._hashes is None:
            rows: dict[str, tuple[int, int, str]] = {}
            try:
                with self._sftp() as sftp, sftp.open(_join(self.place.root, HASHES), "rb") as f:
                    text = f.read().decode("utf-8", "surrogateescape")
            except FileNotFoundError:
                text = ""
            for line in text.splitlines():
                try:  # a hint only: a bad line is dropped, the file is hashed again
                    path, size, mns, sha = json.loads(line)
                    rows[path] = (int(size), int(mns), str(sha))
                except (ValueError, TypeError):
                    continue
            self._hashes = rows
        return self._hashes

    def _save_hashes(self) -> None:
        if self.readonly or not self._dirty or self._hashes is None:
            return
        with self._lock:
            data = "".join(json.dumps([p, *row]) + "\n" for p, row in sorted(self._hashes.items()))
            self._dirty = False
        with self._sftp() as sftp:
            self._write_atomic(sftp, data.encode("utf-8", "surrogateescape"), _join(self.place.root, HASHES))

    # --- writing
    def _mkdirs(self, sftp, path: str) -> None:
        """mkdir -p over SFTP, remembering what exists (a file in the way is one error for that file)."""
        todo = []
        cur = path
        while cur and cur not in ("/", ".") and cur not in self._made:
            try:
                st = sftp.stat(cur)
            except FileNotFoundError:
                todo.append(cur)
                cur = cur.rpartition("/")[0]
                continue
            import stat

            if not stat.S_ISDIR(st.st_mode or 0):
                raise IntegrityError(f"{cur} is a file on the box, cannot place files under it")
            break
        for d in reversed(todo):
            try:
                sftp.mkdir(d)
            except OSError:
                try:  # another worker made it in between; only a folder still missing is an error
                    sftp.stat(d)
                except FileNotFoundError:
                    raise
        with self._lock:
            self._made.update(todo)
            self._made.add(path)

    def _write_atomic(self, sftp, data: bytes, path: str) -> None:
        tmp_dir = _join(self.place.root, TMP)
        self._mkdirs(sftp, tmp_dir)
        self._mkdirs(sftp, path.rpartition("/")[0] or ".")
        tmp = f"{tmp_dir}/{uuid.uuid4().hex}.part"
        try:
            with sftp.open(tmp, "wb") as f:
                f.write(data)
            sftp.posix_rename(tmp, path)
        except BaseException:
            _remove(sftp, tmp)
            raise

    def put_file(self, src: Path, rel: str, entry: Entry) -> Entry:
        """Send a local file: sha256 taken from the bytes sent, checked against `sha256sum` of what the box stored,
        then renamed into place (no reader sees part of it)."""
        import stat

        dest = _join(self.base, rel)
        tmp_dir = _join(self.place.root, TMP)
        tmp = f"{tmp_dir}/{uuid.uuid4().hex}.part"
        with self._sftp() as sftp:
            self._mkdirs(sftp, tmp_dir)
            self._mkdirs(sftp, dest.rpartition("/")[0] or ".")
            try:
                h = StreamHasher(entry.size, self.threshold, self.part_size)
                sent = 0
                with open(src, "rb") as fin, sftp.open(tmp, "wb") as fout:
                    fout.set_pipelined(True)
                    while buf := fin.read(_BUF):
                        h.update(buf)
                        fout.write(buf)
                        sent += len(buf)
                sha, etag = h.result()
                if entry.sha256 and not entry.hint and sha != entry.sha256:
                    raise IntegrityError(f"{rel}: changed while uploading (sha256 {sha[:12]} != {entry.sha256[:12]})")
                mtime = int(entry.mtime)  # SFTP keeps whole seconds
                sftp.utime(tmp, (mtime, mtime))
                stored = self._sha_of(tmp)
                if stored != sha:
                    raise IntegrityError(f"{rel}: the box stored other bytes than were sent (sha256 "
                                         f"{(stored or 'none')[:12]} != {sha[:12]}); nothing was put in place")
                try:
                    if stat.S_ISDIR(sftp.stat(dest).st_mode or 0):
                        raise IntegrityError(f"{rel}: is a directory on the box, cannot replace it with a file")
                except FileNotFoundError:
                    pass
                sftp.posix_rename(tmp, dest)
            except BaseException:
                _remove(sftp, tmp)
                raise
        with self._lock:
            if self._hashes is not None:
                self._hashes[self._key(rel)] = (sent, mtime * 10**9, sha)
                self._dirty = True
        return Entry(rel, sent, entry.mtime, sha, etag)

    def _sha_of(self, path: str) -> str | None:
        code, out, _ = self._run(f"sha256sum -- {self.place.shell(path)}", timeout=_LONG_S)
        return out.split()[0].decode() if code == 0 and out.split() else None

    # --- reading
    def fetch(self, rel: str, entry: Entry, dest_tmp: Path, dest_threshold: int, dest_part_size: int):
        """Read into dest_tmp; the bytes must have the sha256 the box computed. Returns (sha256, local ETag)."""
        h = StreamHasher(entry.size, dest_threshold, dest_part_size)
        got = 0
        with self._sftp() as sftp, sftp.open(_join(self.base, rel), "rb") as fin, open(dest_tmp, "wb") as fout:
            fin.prefetch(entry.size)
            while buf := fin.read(_BUF):
                h.update(buf)
                fout.write(buf)
                got += len(buf)
        sha, etag = h.result()
        if got != entry.size:
            raise IntegrityError(f"{rel}: got {got} bytes, expected {entry.size} (changed on the box?)")
        if entry.sha256 and sha != entry.sha256:
            raise IntegrityError(f"{rel}: received bytes have sha256 {sha[:12]}..., the box says "
                                 f"{entry.sha256[:12]}...: corrupt transfer or file changed; nothing was written")
        return sha, etag

    def delete(self, paths: list[str]) -> None:
        with self._sftp() as sftp:
            for rel in paths:
                _remove(sftp, _join(self.base, rel))
        with self._lock:
            if self._hashes is not None:
                for rel in paths:
                    if self._hashes.pop(self._key(rel), None) is not None:
                        self._dirty = True

    def close(self) -> None:
        try:
            if self._ssh is not None:
                self._save_hashes()  # what uploads learned: the next listing need not hash them on the box
        except Exception:  # noqa: BLE001 - a hint only; the next listing hashes those files again
            pass
        with self._lock:
            chans, self._open, self._idle = self._open, [], []
            ssh, self._ssh = self._ssh, None
        for chan in chans:
            try:
                chan.close()
            except Exception:  # noqa: BLE001 - closing a dead channel
                pass
        if ssh is not None:
            ssh.close()


def _remove(sftp, path: str) -> None:
    try:
        sftp.remove(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # a dead channel: the temp file stays under .launcher/tmp, invisible to the tree


class SftpFiles:
    """One job's folder in an sftp store (launcher/jobstore.py): small files, one SFTP request or two each."""

    def __init__(self, url: str | StoreUrl, rel: str):
        try:
            self.place = parse(url)
        except ValueError as exc:
            raise DatapoolUserError(str(exc)) from None
        self.dir = _join(self.place.root, rel)
        self._ssh = None
        self._chan = None

    def _client(self):
        if self._ssh is None:
            self._ssh = connect(self.place)
        return self._ssh

    def _sftp(self, ssh):
        if self._chan is None:
            self._chan = ssh.open_sftp()
        return self._chan

    @contextmanager
    def _using(self):
        """A link that broke is dropped: the next call connects again (a follower outlives a Wi-Fi drop)."""
        try:
            yield self._client()
        except FileNotFoundError:
            raise
        except DatapoolUserError:
            raise
        except Exception:  # noqa: BLE001 - paramiko's SSHException, EOFError, socket errors: the link is gone
            self.close()
            raise

    def read(self, name: str, start: int = 0) -> bytes | None:
        with self._using() as ssh:
            try:
                with self._sftp(ssh).open(f"{self.dir}/{name}", "rb") as f:
                    f.seek(start)
                    return f.read()
            except FileNotFoundError:
                return None

    def write(self, name: str, data: bytes) -> None:
        with self._using() as ssh:
            ssh.put_bytes(data, f"{self.dir}/{name}")

    def remove(self, name: str) -> None:
        with self._using() as ssh:
            try:
                self._sftp(ssh).remove(f"{self.dir}/{name}")
            except FileNotFoundError:
                pass

    def exists(self, name: str) -> bool:
        with self._using() as ssh:
            return ssh.exists(f"{self.dir}/{name}")

    def close(self) -> None:
        chan, self._chan = self._chan, None
        ssh, self._ssh = self._ssh, None
        for thing in (chan, ssh):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing what a dropped link left
                    pass
