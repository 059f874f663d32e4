"""The job's code as a content-addressed snapshot: one deterministic .tar.gz of the working tree.

    snap = build(Path.cwd())                  # Snapshot(sha256, size, files, path); key = code/<sha256>.tar.gz
    upload(snap, "s3://bucket/pool")          # bytes sent; 0 when the store already has it
    # on the node:
    python -m launcher.snapshot fetch s3://bucket/pool <sha256> /srv/code     -> /srv/code/<sha256>
    python -m launcher.snapshot unpack /tmp/<sha256>.tar.gz <sha256> /srv/code

What goes in: the working tree as git sees it (tracked files plus untracked files that are not ignored; tracked
files deleted from disk are skipped; never `.git/`), minus what `.launchignore` (gitignore syntax, top level of
the workdir) excludes. Without git (no repository, or no git binary) the directory is walked instead, honouring
the top-level `.gitignore` and `.launchignore` and skipping `.git/`, `__pycache__/` and `.venv/`. Only regular
files and symlinks travel; symlinks stay symlinks and must point inside the tree (the node refuses anything
else when it unpacks). Git submodules are not included.

Same tree -> same bytes -> same sha256: paths sorted, every tar header zeroed (mtime 0, uid/gid 0, no user or
group name), modes reduced to 0o755 / 0o644, one gzip member without a timestamp or file name, deflated at a level
set by the tree's size (6 up to 16 MiB, 1 above), files that do not compress stored as they are. Every choice
follows from the bytes, so the sha256 of the .tar.gz names the code, and a store that already holds
`code/<sha256>.tar.gz` needs nothing uploaded. Any tar.gz reader unpacks it (the node uses Python's tarfile).

The agent travels with the code: unless the workdir is the launcher's own project (its `launcher/` package is
importable from the workdir root and part of the snapshot), the `.py` files of the launcher running on this
machine are added under `.launcher-agent/launcher/`. The node puts `.launcher-agent` on PYTHONPATH, so it runs
the client's agent version, whatever is installed there.

Snapshots are cached in `$LAUNCHER_HOME/snapshots/` (`<sha256>.tar.gz`, plus `index/` mapping the stat of
every file that travels (path, size, mtime, ctime, inode, mode; symlink targets) to the sha256, so launching an
unchanged tree again reads and packs nothing: one `git ls-files` and one lstat per file). Git's ignore rules need
no key of their own: a rule that changes what travels changes the listing, which is the key. The cache keeps the
five newest tarballs and any used in the last hour; older ones go (with their chunk lists) when a snapshot is built.

This module imports no store, boto3 or torch at import time: the node runs it before anything is installed.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

DEFAULT_LIMIT = 200 * 1024**2
LIMIT_ENV = "LAUNCHER_SNAPSHOT_LIMIT"  # (the old LAUNCH_SNAPSHOT_LIMIT is still read)
AGENT_DIR = ".launcher-agent"
IGNORE_FILE = ".launchignore"
# Bumped whenever the packing changes, so a cache index entry never maps a tree to bytes packed differently.
_FORMAT = "launcher-snapshot-3"
_WALK_SKIP = {".git", "__pycache__", ".venv"}
# Deflate level, decided by the tree's size alone (the level is part of the bytes, so of the sha256): a small tree
# keeps level 6, which costs well under a second there and keeps it small (k8s with a pvc:// datapool carries it
# in a ConfigMap); a big one gets level 1, ~6x faster than 6 on source text for ~20% more bytes.
_COMPRESSLEVEL = 1
_SMALL_LEVEL = 6
_SMALL_TREE = 16 * 1024**2
# A file modified less than this long ago may be modified again within the same mtime/ctime tick, unseen by the
# stat key; such trees are not indexed (they are packed again next time, which gives the same sha256 if nothing
# changed).
_RACY_S = 2.0
_SHA = re.compile(r"^[0-9a-f]{64}$")
_BUF = 1024 * 1024
_READ_WHOLE = 8 * 1024 * 1024


class SnapshotError(Exception):
    """A snapshot that cannot be used as it is: missing from the store, corrupt, or an unsafe tar member."""

    exit_code = 1


@dataclass(frozen=True)
class Snapshot:
    sha256: str
    size: int  # bytes of the .tar.gz
    files: int  # tar members, agent files included
    path: Path | None  # the .tar.gz on this machine; None for a dry run's (hashed, kept nowhere)

    @property
    def key(self) -> str:
        return f"code/{self.sha256}.tar.gz"


@dataclass(frozen=True)
class _Item:
    arcname: str
    src: str | Path
    st: os.stat_result  # lstat
    link: str | None = None  # symlink target

    @property
    def size(self) -> int:
        return 0 if self.link is not None else self.st.st_size


# --- ignore rules (gitignore syntax)

def _translate(pat: str) -> str:
    """A gitignore glob as a regex body: `*` and `?` stop at `/`, `**` as a whole component spans directories."""
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            j = i
            while j < n and pat[j] == "*":
                j += 1
            whole = (i == 0 or pat[i - 1] == "/") and (j == n or pat[j] == "/")
            if j - i >= 2 and whole:
                if j == n:
                    out.append(".*")
                else:
                    out.append("(?:.*/)?")
                    j += 1
            else:  # git treats `**` inside a component like `*`
                out.append("[^/]*")
            i = j
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = i + 1
            if j < n and pat[j] in "!^":
                j += 1
            if j < n and pat[j] == "]":
                j += 1
            while j < n and pat[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
                i += 1
                continue
            body = pat[i + 1:j].replace("\\", "\\\\").replace("[", "\\[")
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append(f"(?!/)[{body}]")
            i = j + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pat[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


class IgnoreRules:
    """Ordered gitignore rules for paths relative to one directory; the last matching rule decides, and a file
    inside an excluded directory stays excluded (as in git, a negation cannot reach into it)."""

    def __init__(self, lines=()):
        self.rules: list[tuple[re.Pattern, bool, bool]] = []
        for line in lines:
            self.add(line)

    @classmethod
    def from_files(cls, *paths: Path) -> "IgnoreRules":
        rules = cls()
        for p in paths:
            try:
                text = p.read_text(encoding="utf-8", errors="surrogateescape")
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                continue
            for line in text.splitlines():
                rules.add(line)
        return rules

    def add(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if line.endswith("\\ "):
            line = line[:-2].rstrip(" ") + "\\ "
        else:
            line = line.rstrip(" ")
        if not line or line.startswith("#"):
            return
        negate = line.startswith("!")
        if negate:
            line = line[1:]
        elif line.startswith(("\\!", "\\#")):
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            return
        anchored = "/" in line  # a slash at the start or in the middle ties the pattern to this directory
        body = _translate(line.lstrip("/"))
        rx = re.compile(("^" if anchored else "^(?:.*/)?") + body + "$", re.DOTALL)
        self.rules.append((rx, negate, dir_only))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def match(self, rel: str, is_dir: bool) -> bool:
        """This path alone (its parents are the caller's business): is it ignored?"""
        ignored = False
        for rx, negate, dir_only in self.rules:
            if dir_only and not is_dir:
                continue
            if rx.match(rel):
                ignored = not negate
        return ignored

    def excludes(self, rel: str) -> bool:
        """A file path, its parent directories included."""
        parts = rel.split("/")
        for k in range(1, len(parts)):
            if self.match("/".join(parts[:k]), True):
                return True
        return self.match(rel, False)


# --- the file set

def _git_paths(workdir: Path) -> list[str] | None:
    """Paths git sees under workdir (tracked + untracked-not-ignored), or None when this is no git work tree."""
    try:
        out = subprocess.run(["git", "-C", str(workdir), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, timeout=120,
                             env={**os.environ, "LC_ALL": "C"})  # git's messages in English: we read one below
    except FileNotFoundError:
        return None
    if out.returncode != 0:
        err = out.stderr.decode("utf-8", "replace").strip()
        if "not a git repository" in err.lower():
            return None
        first = err.splitlines()[0] if err else f"exit code {out.returncode}"
        raise UserError(f"git ls-files failed in {workdir}: {first}; fix the repository (or run from a directory "
                        f"outside it) and launch again")
    # A merge conflict lists a path once per stage.
    return sorted({os.fsdecode(p) for p in out.stdout.split(b"\0") if p})


def _walk_paths(workdir: Path, rules: IgnoreRules) -> list[str]:
    out: list[str] = []
    stack = [(workdir, "")]
    while stack:
        d, prefix = stack.pop()
        try:
            it = os.scandir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for de in it:
                rel = prefix + de.name
                if de.is_dir(follow_symlinks=False):
                    if de.name not in _WALK_SKIP and not rules.match(rel, True):
                        stack.append((Path(de.path), rel + "/"))
                elif not rules.match(rel, False):
                    out.append(rel)
    return out


def _link_escapes(rel: str, target: str) -> bool:
    if os.path.isabs(target):
        return True
    joined = os.path.normpath(os.path.join(os.path.dirname(rel), target))
    return joined == ".." or joined.startswith("../")


def _tree_items(workdir: Path) -> list[_Item]:
    launchignore = IgnoreRules.from_files(workdir / IGNORE_FILE)
    paths = _git_paths(workdir)
    if paths is None:
        paths = _walk_paths(workdir, IgnoreRules.from_files(workdir / ".gitignore", workdir / IGNORE_FILE))
    elif launchignore:
        paths = [p for p in paths if not launchignore.excludes(p)]
    items: list[_Item] = []
    base = str(workdir)  # str paths, not Path objects: at 50,000 files pathlib alone was half of an unchanged launch
    for rel in paths:
        if rel == ".git" or rel.startswith(".git/") or "/.git/" in rel or rel.endswith("/.git"):
            continue
        src = f"{base}/{rel}"
        try:
            st = os.lstat(src)
        except (FileNotFoundError, NotADirectoryError):
            continue  # tracked but deleted from the working tree
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(src)
            if _link_escapes(rel, target):
                raise UserError(f"symlink {rel} -> {target} points outside {workdir}, so the node cannot unpack it: "
                                f"add it to {IGNORE_FILE} or make it a relative link inside the project")
            items.append(_Item(rel, src, st, target))
        elif stat.S_ISREG(st.st_mode):
            items.append(_Item(rel, src, st))
        # anything else (a submodule's directory, a fifo, a socket) does not travel
    return items


def _agent_items() -> list[_Item]:
    pkg = Path(__file__).resolve().parent
    items = []
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(".py"):
                src = Path(dirpath) / name
                rel = src.relative_to(pkg).as_posix()
                items.append(_Item(f"{AGENT_DIR}/launcher/{rel}", src, os.lstat(src)))
    # The node's locks travel with the agent: the bootstrap builds its venv from them when the node has no Python
    # with launcher's dependencies and the project has no images/ of its own.
    for lock in sorted((pkg.parent / "images").glob("requirements*.lock")):
        items.append(_Item(f"{AGENT_DIR}/images/{lock.name}", lock, os.lstat(lock)))
    return items


def _has_own_launcher(workdir: Path, items: list[_Item]) -> bool:
    """Only when the workdir root is where `import launcher` finds this very package, and it travels."""
    pkg = Path(__file__).resolve().parent
    return pkg.parent == workdir and any(i.arcname == "launcher/__init__.py" for i in items)


# --- sizes

def _fmt(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            break
        n /= 1024
    text = f"{n:.1f}".removesuffix(".0") if unit != "B" else str(int(n))
    return f"{text} {unit}"


def _limit(limit_bytes: int) -> int:
    from . import envvars

    env = (envvars.get("SNAPSHOT_LIMIT") or "").strip()
    if env and limit_bytes == DEFAULT_LIMIT:
        from .units import parse_size

        return parse_size(env, LIMIT_ENV)
    return limit_bytes


def _check_limit(items: list[_Item], limit: int) -> None:
    total = sum(i.size for i in items)
    if total <= limit:
        return
    largest = sorted(items, key=lambda i: (-i.size, i.arcname))[:5]
    names = ", ".join(f"{i.arcname} ({_fmt(i.size)})" for i in largest)
    raise UserError(f"code snapshot is {_fmt(total)}, over the {_fmt(limit)} limit; largest files: {names} — data "
                    f"belongs in the datapool; add them to {IGNORE_FILE} or raise the limit ({LIMIT_ENV})")


# --- packing
#
# One gzip member holding one tar stream, written by hand rather than through gzip.GzipFile + tarfile: at 50,000
# files tarfile's header building (~0.1 ms a member) and zlib at level 6 on one thread were nearly all of the time
# (docs/benchmarks.md, "Scale: snapshot"). Deflate runs at level 1 on a big tree (_COMPRESSLEVEL), in segments on
# several threads; a file that deflate cannot shrink (weights, images, archives: checked on two samples) goes in
# as stored blocks, since level 1 on random bytes is its slowest case (~25 MB/s on the dev VM) for no gain. Every
# choice depends on the bytes alone, so the same tree still gives the same tarball, and any tar.gz reader reads it
# (tarfile's "r:gz" on the node, `tar xzf`).

_TAR_BLOCK = 512
_TAR_RECORD = 20 * _TAR_BLOCK  # what tarfile pads the end of an archive to
_STORED_MAX = 0xFFFF  # bytes in one stored deflate block
_PROBE = 8 * 1024  # bytes of each of the two samples that decide stored vs deflated
_PROBE_MIN = 64 * 1024  # smaller files are always deflated: the probe would cost what it could save
_STORE_RATIO = 0.9  # a sample that deflates to more than this is taken as incompressible
_STREAM_CHUNK = 4 * 1024 * 1024
_SEGMENT = 1024 * 1024  # deflated bytes per segment, each compressed on its own (in parallel)
_WINDOW = 32 * 1024  # deflate's window: what a segment is primed with
# Threads that deflate: the main thread reads, checksums and writes meanwhile. At most 4: beyond that the main
# thread is the limit.
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, XFL 0, OS unknown
# The fixed part of a ustar header (PAX magic) for a member whose name and link fit its fields.
_UID_GID = b"0000000\x00" * 2
_MTIME0 = b"00000000000\x00"
_TAIL = b"ustar\x0000" + b"\x00" * (32 + 32 + 8 + 8 + 155)  # magic, version, uname, gname, dev, prefix


def _deflate_segment(data: bytes, zdict: bytes, level: int, final: bool) -> bytes:
    """One segment of the deflate stream, alone: primed with the 32 KB before it (so matches reach back as in one
    long stream) and ended on a byte boundary (a sync flush) or, the last, with the final block."""
    if zdict:
        z = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        z = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return z.compress(data) + z.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


class _GzipOut:
    """One gzip member written as it goes: deflated segments (compressed on `workers` threads, as pigz does: zlib
    lets go of the GIL), stored blocks where asked, all in stream order; the sha256 and size of what reaches the
    file, the crc32 and length of what went in. Where a segment ends depends on the bytes alone, never on the
    threads, so the output is the same with any number of them."""

    def __init__(self, f, level: int, workers: int = 1, pool=None):
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0  # compressed bytes out
        self.crc = 0
        self.isize = 0  # bytes in
        self.level = level
        self.buf: list[bytes] = []  # bytes to deflate, not cut into a segment yet
        self.buffered = 0
        self.window = b""  # the last 32 KB of the stream before self.buf
        self.workers = workers
        self.pool, self.own_pool = pool, False  # a pool passed in is the caller's (one for every chunk)
        if pool is None and workers > 1:
            self.pool, self.own_pool = _deflate_pool(workers), True
        self.pending: collections.deque = collections.deque()  # futures (or bytes) in stream order
        self._write(_GZIP_HEADER)

    def _write(self, data) -> None:
        if data:
            self.f.write(data)
            self.h.update(data)
            self.n += len(data)

    def _drain(self, keep: int) -> None:
        """Write out finished segments in order, waiting while more than `keep` are in flight."""
        while self.pending:
            head = self.pending[0]
            if isinstance(head, bytes):
                self._write(self.pending.popleft())
            elif len(self.pending) > keep or head.done():
                self._write(self.pending.popleft().result())
            else:
                return

    def _cut(self, final: bool = False) -> None:
        data = b"".join(self.buf)
        self.buf, self.buffered = [], 0
        zdict, self.window = self.window, (self.window + data[-_WINDOW:])[-_WINDOW:]
        if self.pool is None:
            self.pending.append(_deflate_segment(data, zdict, self.level, final))
        else:
            self.pending.append(self.pool.submit(_deflate_segment, data, zdict, self.level, final))
        self._drain(keep=2 * self.workers)  # bounds the memory in flight

    def deflate(self, data) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.isize += len(data)
        self.buf.append(data)
        self.buffered += len(data)
        if self.buffered >= _SEGMENT:
            self._cut()

    def store(self, data) -> None:
        """`data` as stored blocks, after the deflated bytes before it (that segment ends byte-aligned)."""
        if self.buf:
            self._cut()
        self.crc = zlib.crc32(data, self.crc)
        self.isize += len(data)
        parts = []
        view = memoryview(data)
        for i in range(0, len(view), _STORED_MAX):
            block = view[i:i + _STORED_MAX]
            n = len(block)
            parts.append(bytes((0, n & 0xFF, n >> 8, ~n & 0xFF, (~n >> 8) & 0xFF)))  # BFINAL 0, BTYPE 00, LEN, NLEN
            parts.append(block)
        self.pending.append(b"".join(parts))
        self.window = (self.window + bytes(view[-_WINDOW:]))[-_WINDOW:]
        self._drain(keep=2 * self.workers)

    def finish(self) -> None:
        self._cut(final=True)  # always a deflated segment last: it holds the final block
        self._drain(keep=0)
        self._write((self.crc & 0xFFFFFFFF).to_bytes(4, "little") + (self.isize & 0xFFFFFFFF).to_bytes(4, "little"))
        self.close()

    def close(self) -> None:
        if self.pool is not None and self.own_pool:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None


def _deflate_pool(workers: int):
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(workers, thread_name_prefix="snapshot-deflate")


class _Tee:
    """The tarball file: what the chunks write, hashed and counted as a whole (each chunk's own gzip member is
    hashed by its _GzipOut)."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, data) -> None:
        self.f.write(data)
        self.h.update(data)
        self.n += len(data)


def _incompressible(data) -> bool:
    """Two samples (the middle, the end), each deflated alone at level 1, both must not shrink: a file whose
    header compresses but whose body does not (.npy, safetensors, PNG) is judged by its body."""
    if len(data) < _PROBE_MIN:
        return False
    mid = len(data) // 2
    for sample in (data[mid:mid + _PROBE], data[-_PROBE:]):
        z = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        if len(z.compress(sample)) + len(z.flush()) <= _STORE_RATIO * len(sample):
            return False
    return True


def _header(name: str, typeflag: bytes, mode: int, size: int, link: str = "") -> bytes:
    """The tar header block(s) of one member: mtime 0, uid/gid 0, no user or group name. A name or link that is
    not ASCII or does not fit its 100 bytes, or a size of 8 GiB or more, gets tarfile's PAX header instead."""
    name_b, link_b = name.encode("utf-8", "surrogateescape"), link.encode("utf-8", "surrogateescape")
    if len(name_b) > 100 or len(link_b) > 100 or size >= 8**11 or not (name_b + link_b).isascii():
        ti = tarfile.TarInfo(name)
        ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
        ti.type, ti.mode, ti.size, ti.linkname = typeflag, mode, size, link
        return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    head = b"".join((name_b.ljust(100, b"\x00"), b"%07o\x00" % mode, _UID_GID, b"%011o\x00" % size, _MTIME0))
    rest = typeflag + link_b.ljust(100, b"\x00") + _TAIL
    chksum = sum(head) + sum(rest) + 8 * 32  # the checksum field itself counts as 8 spaces
    return head + b"%06o\x00 " % chksum + rest + b"\x00" * 12


def _pad(n: int) -> bytes:
    return b"\x00" * (-n % _TAR_BLOCK)


def _changed(item: _Item, exc: BaseException | str) -> UserError:
    return UserError(f"{item.arcname} changed while the code snapshot was packed ({exc}); launch again once it is "
                     f"written")


def _pack_file(gz: _GzipOut, item: _Item) -> None:
    with open(item.src, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        mode = 0o755 if st.st_mode & 0o111 else 0o644
        if st.st_size <= _READ_WHOLE:
            # Read first, size from what was read: a file rewritten meanwhile (an editor saving) cannot leave the
            # header's size and the bytes disagreeing.
            data = f.readall()
            hdr = _header(item.arcname, tarfile.REGTYPE, mode, len(data))
            if _incompressible(data):
                gz.deflate(hdr)
                gz.store(data)
                gz.deflate(_pad(len(data)))
            else:
                gz.deflate(hdr + data + _pad(len(data)))
            return
        size, left = st.st_size, st.st_size
        gz.deflate(_header(item.arcname, tarfile.REGTYPE, mode, size))
        stored = None  # decided on the first chunk, for the whole file
        while left:
            chunk = f.read(min(_STREAM_CHUNK, left))
            if not chunk:
                raise _changed(item, f"{size - left} of {size} bytes there")
            if stored is None:
                stored = _incompressible(chunk)
            (gz.store if stored else gz.deflate)(chunk)
            left -= len(chunk)
        gz.deflate(_pad(size))


# --- chunks
#
# A big tree's tarball is a run of gzip members, "chunks": one per file (its tar header and bytes, compressed alone:
# no match reaches into the file before), then one last member with the archive's end blocks. Concatenated gzip
# members are one valid .tar.gz (gzip, tarfile and `tar xzf` read them as one stream), so nothing on the node
# changes. An edit, an added or a removed file changes its own chunk and leaves every other chunk's bytes as they
# were:
#   - re-packing copies the unchanged chunks from the last tarball (keyed by their file's stat, like the index) and
#     compresses only the changed file;
#   - a box that holds an earlier snapshot gets only the changed chunks, and composes the new tarball from the old
#     one's unchanged byte ranges (`compose_plan`; the ssh backend), checked against the new sha256.
# What a member alone costs: ~25 bytes of gzip framing a file, and matches across files (on the bench's tree, 1 GB
# in 50,000 files, the tarball grew by under 1%). A small tree (the level-6 ones) stays one member: it packs in well
# under a second, and is smallest that way.
# The chunk cache is the `<sha>.chunks` file beside each tarball: a line per chunk, "offset length sha256 tar-bytes
# key", the key naming its files' stat (as the index's key does; "-" for one not to reuse: a file in it may still be
# being written, or the end member). A pack reads those of the last few tarballs: one file each, not one per chunk.
_CHUNK_SOURCES = 3


def _chunk_key(group: list[_Item], level: int) -> str:
    return _index_key(group, f"chunk level {level}")


def _known_chunks(cache: Path) -> dict[str, tuple[str, int, int, str, int]]:
    """key -> (tarball sha, offset, length, sha256, tar bytes) from the newest tarballs' chunk files."""
    known: dict[str, tuple[str, int, int, str, int]] = {}
    for snap in reversed(_chunked_snapshots(cache, limit=_CHUNK_SOURCES)):  # the newest last: its rows win
        try:
            for line in snap.path.with_name(f"{snap.sha256}.chunks").read_text().splitlines():
                offset, length, sha, isize, key = line.split()
                if key != "-":
                    known[key] = (snap.sha256, int(offset), int(length), sha, int(isize))
        except (OSError, ValueError):
            continue
    return known


def _cached_chunk(cache: Path, entry: tuple[str, int, int, str, int], tee: _Tee) -> tuple[int, str, int] | None:
    """The chunk `entry` copied from the tarball that holds it into `tee`, checked by its sha256 on the way: (length,
    sha256, tar bytes), or None (that tarball gone, or bytes that are not the chunk: packed anew)."""
    tar_sha, offset_i, length_i, sha, isize_i = entry
    try:
        with open(cache / f"{tar_sha}.tar.gz", "rb") as f:
            # Checked whole before a byte is written (a chunk read half cannot be taken back): in memory, or for a
            # big file's chunk, read twice (the second read comes from the page cache).
            if length_i <= _READ_WHOLE:
                f.seek(offset_i)
                data = f.read(length_i)
                if len(data) != length_i or hashlib.sha256(data).hexdigest() != sha:
                    return None
                tee.write(data)
                return length_i, sha, isize_i
            if _range_sha256(f, offset_i, length_i) != sha:
                return None
            f.seek(offset_i)
            left = length_i
            while left:
                block = f.read(min(_BUF, left))
                if not block:
                    raise _changed_cache(tar_sha)
                tee.write(block)
                left -= len(block)
    except OSError:
        return None
    return length_i, sha, isize_i


def _range_sha256(f, offset: int, length: int) -> str | None:
    f.seek(offset)
    h, left = hashlib.sha256(), length
    while left:
        block = f.read(min(_BUF, left))
        if not block:
            return None
        h.update(block)
        left -= len(block)
    return h.hexdigest()


def _changed_cache(tar_sha: str) -> UserError:
    return UserError(f"the cached snapshot {tar_sha[:12]} changed while it was read; launch again")


def _pack_group(gz: _GzipOut, group: list[_Item]) -> None:
    for item in group:
        if item.link is not None:
            gz.deflate(_header(item.arcname, tarfile.SYMTYPE, 0o777, 0, item.link))
            continue
        try:
            _pack_file(gz, item)
        except OSError as exc:  # vanished between the listing and now
            raise _changed(item, exc) from None


def _pack(items: list[_Item], out: Path, cache: Path | None = None,
          settled_before: float = 0.0) -> tuple[str, int, list[tuple[int, int, str, int, str]]]:
    """Pack `items` into `out`: (sha256, size, chunks as (offset, length, sha256, tar bytes, cache key)). A big
    tree's chunks come from `cache` when their files are unchanged; a chunk with a file changed after
    `settled_before` gets no key (as the index: its stat may not show the next change)."""
    total = sum(i.size for i in items)
    level = _SMALL_LEVEL if total <= _SMALL_TREE else _COMPRESSLEVEL
    chunked = total > _SMALL_TREE
    groups = [[item] for item in items] if chunked else [items]
    pool = _deflate_pool(_WORKERS) if _WORKERS > 1 else None
    chunks: list[tuple[int, int, str, int, str]] = []  # offset, length, sha256, tar bytes, cache key or "-"
    known = _known_chunks(cache) if chunked and cache is not None else {}
    isize = 0
    try:
        with open(out, "wb", buffering=_BUF) as raw:
            tee = _Tee(raw)
            for group in groups:
                offset = tee.n
                key = _chunk_key(group, level) if chunked and cache is not None else None
                hit = _cached_chunk(cache, known[key], tee) if key in known else None
                if hit is not None:
                    length, sha, size = hit
                else:
                    gz = _GzipOut(tee, level, _WORKERS, pool)
                    try:
                        _pack_group(gz, group)
                        if not chunked:  # one member: the end blocks are in it
                            end = 2 * _TAR_BLOCK
                            gz.deflate(b"\x00" * (end + (-(gz.isize + end) % _TAR_RECORD)))
                        gz.finish()
                    finally:
                        gz.close()
                    length, sha, size = gz.n, gz.h.hexdigest(), gz.isize
                    newest = max((max(i.st.st_mtime, i.st.st_ctime) for i in group), default=0.0)
                    if newest >= settled_before:
                        key = None
                chunks.append((offset, length, sha, size, key or "-"))
                isize += size
            if chunked:  # the archive's end: its own member (its padding depends on every chunk's size)
                offset, end = tee.n, 2 * _TAR_BLOCK
                gz = _GzipOut(tee, level)
                gz.deflate(b"\x00" * (end + (-(isize + end) % _TAR_RECORD)))
                gz.finish()
                chunks.append((offset, gz.n, gz.h.hexdigest(), gz.isize, "-"))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return tee.h.hexdigest(), tee.n, chunks


def _write_chunks(cache: Path, snap: "Snapshot", chunks: list[tuple[int, int, str, int, str]]) -> None:
    """The tarball's chunk file beside it: what compose_plan and the next pack read."""
    if len(chunks) < 2:
        return
    tmp = cache / f".{snap.sha256}.chunks.{uuid.uuid4().hex}"
    tmp.write_text("".join(f"{o} {n} {h} {i} {k}\n" for o, n, h, i, k in chunks))
    os.replace(tmp, cache / f"{snap.sha256}.chunks")


def chunk_list(snap: "Snapshot") -> list[tuple[int, int, str]] | None:
    """The snapshot's chunks as (offset, length, sha256) in its tarball, or None (a one-member snapshot, or none
    recorded)."""
    try:
        rows = [line.split() for line in snap.path.with_name(f"{snap.sha256}.chunks").read_text().splitlines()]
        return [(int(row[0]), int(row[1]), row[2]) for row in rows]
    except (OSError, ValueError):
        return None


def recent_snapshots(snap: "Snapshot", limit: int = 5) -> list["Snapshot"]:
    """Other chunked snapshots in `snap`'s cache, newest first: what a box may hold from an earlier launch."""
    return [s for s in _chunked_snapshots(snap.path.parent, limit + 1) if s.sha256 != snap.sha256][:limit]


def _chunked_snapshots(cache: Path, limit: int) -> list["Snapshot"]:
    found = []
    for f in cache.glob("*.chunks"):
        sha = f.name.removesuffix(".chunks")
        tar = f.with_name(f"{sha}.tar.gz")
        if not _SHA.match(sha):
            continue
        try:
            found.append((f.stat().st_mtime, Snapshot(sha, tar.stat().st_size, 0, tar)))
        except OSError:
            continue
    return [s for _, s in sorted(found, key=lambda t: -t[0])[:limit]]


def composable_from(snap: "Snapshot", holds) -> tuple["Snapshot", list[tuple[str, int, int]]] | None:
    """The newest earlier chunked snapshot of this machine's that the other side holds (`holds(prev)`: a box's file,
    a store's object, of prev's size), and the compose_plan from it to `snap`; None when `snap` is one member or the
    other side holds none of them."""
    new = chunk_list(snap)
    if not new:
        return None
    for prev in recent_snapshots(snap):
        old = chunk_list(prev)
        if old and holds(prev):
            return prev, compose_plan(new, old)
    return None


def compose_plan(new: list[tuple[int, int, str]], old: list[tuple[int, int, str]]) -> list[tuple[str, int, int]]:
    """How to make the new tarball from an old one and the new chunks it lacks: ("old", offset in the old tarball,
    length) and ("new", offset in the new tarball, length), in order, adjacent ranges of one source joined."""
    have = {sha: offset for offset, _, sha in old}
    ops: list[list] = []
    for offset, length, sha in new:
        src, at = ("old", have[sha]) if sha in have else ("new", offset)
        if ops and ops[-1][0] == src and ops[-1][1] + ops[-1][2] == at:
            ops[-1][2] += length
        else:
            ops.append([src, at, length])
    return [tuple(op) for op in ops]


def _index_key(items: list[_Item], what: str = "") -> str:
    h = hashlib.sha256((_FORMAT + what).encode())
    for i in items:
        st = i.st
        if i.link is not None:
            row = f"{i.arcname}\0l\0{i.link}\n"
        else:
            row = f"{i.arcname}\0f\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_mode}\n"
        h.update(row.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _cache_dir(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    from .registry import launcher_home

    return launcher_home() / "snapshots"


def build(workdir: Path, *, limit_bytes: int = DEFAULT_LIMIT, cache_dir: Path | None = None) -> Snapshot:
    """Pack the working tree (see the module docstring); an unchanged tree gives the cached snapshot back.

    `limit_bytes` caps the uncompressed size of the tree's files (LAUNCH_SNAPSHOT_LIMIT overrides the default);
    over it -> UserError naming the five largest files.
    """
    workdir = Path(workdir).expanduser().resolve()
    if not workdir.is_dir():
        raise UserError(f"code directory {workdir} does not exist or is not a directory: launch from your project")
    items = _tree_items(workdir)
    # The limit is about the user's tree: the agent's few hundred KB are not theirs to .launchignore.
    _check_limit(items, _limit(limit_bytes))
    if not _has_own_launcher(workdir, items):
        items = [i for i in items if not i.arcname.startswith(AGENT_DIR + "/")]
        items += _agent_items()
    items.sort(key=lambda i: i.arcname)

    cache = _cache_dir(cache_dir)
    index = cache / "index"
    key = _index_key(items)
    hit = _read_index(index / key, cache)
    if hit is not None:
        return hit

    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{uuid.uuid4().hex}.tar.gz.part"
    started = time.time()
    try:
        sha, size, chunks = _pack(items, tmp, cache, settled_before=started - _RACY_S)
        final = cache / f"{sha}.tar.gz"
        if final.is_file() and final.stat().st_size == size:
            tmp.unlink()  # the same bytes are already there: keep that file, used now (the pruning's clock)
            os.utime(final)
        else:
            os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    snap = Snapshot(sha, size, len(items), final)
    _write_chunks(cache, snap, chunks)
    # ctime too: a file written and then given an old mtime back (cp -p, rsync -t) changed when its ctime says.
    newest = max((max(i.st.st_mtime, i.st.st_ctime) for i in items), default=0.0)
    if newest < started - _RACY_S:
        _write_index(index, key, snap)
    _prune(cache, snap.path)
    return snap


# The cache keeps the newest few tarballs (the chunk cache and a box's compose read the last ones) and any used in
# the last hour (a launch may still be uploading it); every edit of a big tree would otherwise leave a whole tarball.
_KEEP = 5
_KEEP_S = 3600.0


def _prune(cache: Path, keep: Path) -> None:
    """Older tarballs out of the cache, with their chunk lists (an index entry naming one is then a miss: packed
    again)."""
    found = []
    for tar in cache.glob("*.tar.gz"):
        try:
            found.append((tar.stat().st_mtime, tar))
        except OSError:
            continue
    now = time.time()
    for rank, (mtime, tar) in enumerate(sorted(found, reverse=True)):
        if rank < _KEEP or tar == keep or now - mtime < _KEEP_S:
            continue
        sha = tar.name.removesuffix(".tar.gz")
        tar.unlink(missing_ok=True)
        (cache / f"{sha}.chunks").unlink(missing_ok=True)


def _read_index(path: Path, cache: Path) -> Snapshot | None:
    try:
        sha, size, files = path.read_text().split()
        size_i, files_i = int(size), int(files)
    except (OSError, ValueError):
        return None
    tar = cache / f"{sha}.tar.gz"
    try:
        if _SHA.match(sha) and tar.stat().st_size == size_i:
            os.utime(tar)  # used now: the cache's pruning keeps what launches use
            return Snapshot(sha, size_i, files_i, tar)
    except OSError:
        pass
    return None


def _write_index(index: Path, key: str, snap: Snapshot) -> None:
    index.mkdir(parents=True, exist_ok=True)
    tmp = index / f".{key}.{uuid.uuid4().hex}"
    tmp.write_text(f"{snap.sha256} {snap.size} {snap.files}\n")
    os.replace(tmp, index / key)


# --- store

_PART_MIN = 5 * 1024 * 1024  # S3: every part of a multipart upload but the last is at least this
_PUT_MAX = 64 * 1024 * 1024  # a sent part is read into memory: at most this
_COPY_MAX = 5 * 1024**3  # S3: a part is at most this


def store_parts(ops: list[tuple[str, int, int]]) -> list[tuple]:
    """compose_plan's ops as a store's multipart upload: ("copy", offset in the old object, length, offset in the
    new tarball) for an unchanged run the store copies itself, ("put", offset in the new tarball, length) for bytes
    sent. Every part but the last is at least 5 MiB: an unchanged run too short for that, or the bytes a short sent
    part needs to reach it, are sent with the changed ones (they are the same bytes in the new tarball)."""
    parts: list[list] = []

    def put(at: int, n: int) -> None:
        if parts and parts[-1][0] == "put" and parts[-1][1] + parts[-1][2] == at:
            parts[-1][2] += n
        else:
            parts.append(["put", at, n])

    new_at = 0
    for src, at, n in ops:
        length = n
        if src == "old" and n >= _PART_MIN:
            copy_new = new_at
            if parts and parts[-1][0] == "put" and parts[-1][2] < _PART_MIN:
                steal = min(n, _PART_MIN - parts[-1][2])  # the short part before takes the run's first bytes
                parts[-1][2] += steal
                at, n, copy_new = at + steal, n - steal, copy_new + steal
            if n >= _PART_MIN:
                parts.append(["copy", at, n, copy_new])
            elif n:
                put(copy_new, n)
        else:
            put(new_at, n)
        new_at += length
    out: list[tuple] = []
    for part in parts:  # big parts split evenly, each piece still over the minimum
        cap = _PUT_MAX if part[0] == "put" else _COPY_MAX
        pieces = max(1, -(-part[2] // cap))
        if part[2] // pieces < _PART_MIN:
            pieces = 1
        step = -(-part[2] // pieces)
        for i in range(pieces):
            n = min(step, part[2] - i * step)
            if part[0] == "put":
                out.append(("put", part[1] + i * step, n))
            else:
                out.append(("copy", part[1] + i * step, n, part[3] + i * step))
    return out


def _store_list_snapshots(store) -> dict:
    # One LIST of code/: the tarballs there (what a composed upload may copy from), each by its size.
    kwargs = {"lazy": True} if getattr(store, "is_local", False) else {}
    return store.list(want=lambda rel: "/" not in rel and rel.endswith(".tar.gz"), **kwargs)


def _upload_composed(snap: Snapshot, store, listing: dict) -> int | None:
    """A chunked snapshot, to a store that composes multipart uploads (S3) and holds an earlier snapshot of this
    machine's: the unchanged runs are copied by the store from that one, only the rest is sent. Returns the bytes
    sent, or None (not such a store, no such snapshot there, or too little unchanged: a whole upload)."""
    from . import progress

    if not hasattr(store, "put_composed"):
        return None
    found = composable_from(snap, lambda prev: getattr(listing.get(f"{prev.sha256}.tar.gz"), "size", None)
                            == prev.size)
    if found is None:
        return None
    prev, ops = found
    parts = store_parts(ops)
    to_send = sum(p[2] for p in parts if p[0] == "put")
    if to_send > snap.size // 2:
        return None
    with progress.transfer("snapshot", to_send) as sent:
        store.on_bytes = sent
        store.put_composed(snap.path, f"{snap.sha256}.tar.gz", snap.sha256, parts, f"{prev.sha256}.tar.gz")
    progress.report(progress.SNAPSHOT, f"sent {progress.human_bytes(to_send)} of {progress.human_bytes(snap.size)}; "
                                       f"the rest copied in the store from {prev.sha256[:12]}")
    return to_send


def _store_list_one(store, name: str):
    # One LIST of code/; a file store is not asked to hash what it lists (only the size is compared).
    kwargs = {"lazy": True} if getattr(store, "is_local", False) else {}
    return store.list(want=lambda rel: rel == name, **kwargs).get(name)


def in_store_fact(plan) -> tuple[str, str]:
    """For `Backend.where(online=True)` of a backend that uploads the snapshot to the datapool store: whether it is
    there already (one LIST of code/), as the summary's SNAPSHOT_FACT. Never raises: it is a fact, not a check."""
    from .backends.base import SNAPSHOT_FACT
    from .datapool.stores import open_store

    snap = plan.snapshot
    try:
        store = open_store(plan.spec.store_url, "code", endpoint_url=plan.spec.endpoint_url, readonly=True)
        try:
            have = _store_list_one(store, f"{snap.sha256}.tar.gz")
        finally:
            store.close()
    except Exception:  # noqa: BLE001 - a store not made yet (a default store) or not answering: uploaded if missing
        return SNAPSHOT_FACT, "uploaded unless the store has it"
    if have is not None and have.size == snap.size:
        return SNAPSHOT_FACT, "in the store already"
    return SNAPSHOT_FACT, "not in the store: to upload"


def upload(snap: Snapshot, store_url: str, *, endpoint_url: str | None = None) -> int:
    """Put the tarball at `code/<sha256>.tar.gz` under the datapool store's root (not under experiments/).

    Returns the bytes uploaded: 0 when the store already has an object of that key and size (content-addressed,
    so the same key and size is the same snapshot)."""
    from . import progress
    from .datapool.base import Entry
    from .datapool.stores import open_store

    name = f"{snap.sha256}.tar.gz"
    store = open_store(store_url, "code", endpoint_url=endpoint_url)
    try:
        listing = _store_list_snapshots(store)
        have = listing.get(name)
        if have is not None and have.size == snap.size:
            progress.report(progress.SNAPSHOT, "already in store")
            return 0
        sent = _upload_composed(snap, store, listing)
        if sent is not None:
            return sent
        with progress.transfer("snapshot", snap.size) as sent:  # a bar on a terminal, by what the store took
            store.on_bytes = sent
            store.put_file(snap.path, name, Entry(name, snap.size, snap.path.stat().st_mtime, snap.sha256))
        progress.report(progress.SNAPSHOT, f"uploaded {progress.human_bytes(snap.size)} to the store")
        return snap.size
    finally:
        store.close()


def _check_sha(sha256: str) -> str:
    sha = (sha256 or "").strip().lower()
    if not _SHA.match(sha):
        raise UserError(f"bad snapshot sha256 {sha256!r}: expected 64 hex digits (Snapshot.sha256)")
    return sha


def fetch(store_url: str, sha256: str, dest_dir: Path, *, endpoint_url: str | None = None) -> Path:
    """Download `code/<sha256>.tar.gz`, verify it, unpack it into `dest_dir/<sha256>/` (reused if already there)."""
    sha = _check_sha(sha256)
    dest_dir = Path(dest_dir)
    final = dest_dir / sha
    if final.is_dir():
        return final
    from .datapool.errors import SyncError
    from .datapool.hashing import DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE
    from .datapool.s3http import S3Error
    from .datapool.stores import open_store

    name = f"{sha}.tar.gz"
    store = open_store(store_url, "code", endpoint_url=endpoint_url, readonly=True)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{sha}.{uuid.uuid4().hex}.tar.gz.part"
    try:
        try:
            entry = _store_list_one(store, name)
            if entry is not None:
                store.fetch(name, entry, tmp, DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE)
        except (SyncError, S3Error, OSError) as exc:
            raise SnapshotError(f"code snapshot code/{name} could not be downloaded intact from {store_url}: "
                                f"{exc}") from exc
        if entry is None:
            raise SnapshotError(f"code snapshot code/{name} is not in {store_url}: upload it first "
                                f"(launcher.snapshot.upload)")
        return unpack(tmp, sha, dest_dir)
    finally:
        tmp.unlink(missing_ok=True)
        store.close()


# --- unpacking

def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while buf := f.read(_BUF):
            h.update(buf)
    return h.hexdigest()


def _check_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Our own refusal first (one clear line), whether or not this Python has tarfile's data filter."""
    members = tar.getmembers()
    for m in members:
        parts = m.name.split("/")
        if m.name.startswith("/") or os.path.isabs(m.name) or ".." in parts:
            raise SnapshotError(f"code snapshot has an unsafe member '{m.name}' (absolute or with '..'): "
                                f"refusing to unpack it")
        if not (m.isreg() or m.issym() or m.isdir()):
            raise SnapshotError(f"code snapshot member '{m.name}' is not a file, directory or symlink: "
                                f"refusing to unpack it")
        if m.issym() and _link_escapes(m.name, m.linkname):
            raise SnapshotError(f"code snapshot symlink '{m.name}' -> '{m.linkname}' points outside the snapshot: "
                                f"refusing to unpack it")
    return members


def unpack(tar_path: Path, sha256: str, dest_dir: Path) -> Path:
    """Verify the tarball's sha256, then unpack it atomically into `dest_dir/<sha256>/` (reused if already there).

    A mismatch raises SnapshotError naming both hashes and unpacks nothing."""
    sha = _check_sha(sha256)
    tar_path, dest_dir = Path(tar_path), Path(dest_dir)
    final = dest_dir / sha
    if final.is_dir():
        return final
    got = _sha256_file(tar_path)
    if got != sha:
        raise SnapshotError(f"code snapshot {tar_path} is corrupt: sha256 expected {sha}, got {got}; nothing was "
                            f"unpacked")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{sha}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        try:
            with tarfile.open(tar_path, "r:gz") as tar:
                members = _check_members(tar)
                tmp.mkdir()
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # Python < 3.11.4: _check_members above is the whole guard
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise SnapshotError(f"code snapshot {sha} cannot be unpacked safely: {exc}") from exc
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process unpacked the same snapshot first
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- the node's CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.snapshot",
                                     description="Fetch or unpack a code snapshot; prints the unpacked directory.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_fetch = sub.add_parser("fetch", help="download code/<sha>.tar.gz from a store, verify, unpack")
    p_fetch.add_argument("store_url")
    p_fetch.add_argument("sha256")
    p_fetch.add_argument("dest_dir", type=Path)
    p_fetch.add_argument("--endpoint-url", default=None)
    p_unpack = sub.add_parser("unpack", help="verify and unpack a local tarball")
    p_unpack.add_argument("tar", type=Path)
    p_unpack.add_argument("sha256")
    p_unpack.add_argument("dest_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            path = fetch(args.store_url, args.sha256, args.dest_dir, endpoint_url=args.endpoint_url)
        else:
            if not args.tar.is_file():
                raise UserError(f"no tarball at {args.tar}: upload it to the node first")
            path = unpack(args.tar, args.sha256, args.dest_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (SnapshotError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
