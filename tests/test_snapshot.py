"""The code snapshot (launcher/snapshot.py): which files travel, deterministic bytes, the size limit, the agent
package, upload to file:// and S3 (a real moto server), and verified, atomic, safe unpacking on the node."""
from __future__ import annotations

import filecmp
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from launcher.errors import UserError
from launcher.snapshot import IgnoreRules, Snapshot, SnapshotError, build, fetch, unpack, upload

from .motoserver import start_moto_with

REPO = Path(__file__).resolve().parents[1]
AGENT = ".launcher-agent/"
OLD = 1_000_000_000  # an mtime long past: files not being written right now


@pytest.fixture(autouse=True)
def hermetic(monkeypatch, tmp_path):
    """No user git config, no repository above tmp_path, our own LAUNCHER_HOME, no limit from the environment."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LAUNCH_SNAPSHOT_LIMIT", raising=False)
    monkeypatch.delenv("LAUNCHER_SNAPSHOT_LIMIT", raising=False)


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        p.write_bytes(content)
    return root


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   check=True, capture_output=True)


def names(snap: Snapshot, agent: bool = False) -> set[str]:
    with tarfile.open(snap.path) as tar:
        return {n for n in tar.getnames() if agent or not n.startswith(AGENT)}


def members(snap: Snapshot) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(snap.path) as tar:
        return {m.name: m for m in tar.getmembers()}


SMALL = {"train.py": "print('hi')\n", "pkg/__init__.py": "", "pkg/model.py": "X = 1\n", "README.md": "# r\n"}


# --- determinism and the cache

def test_same_tree_same_bytes_and_the_cached_file_is_reused(tmp_path):
    src = write_tree(tmp_path / "proj", SMALL)
    cache = tmp_path / "cache"
    a = build(src, cache_dir=cache)
    b = build(src, cache_dir=cache)
    assert a == b
    assert a.key == f"code/{a.sha256}.tar.gz"
    assert a.path == cache / f"{a.sha256}.tar.gz"
    assert hashlib.sha256(a.path.read_bytes()).hexdigest() == a.sha256
    assert a.size == a.path.stat().st_size
    assert a.files == len(names(a, agent=True))

    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    for i, p in enumerate(sorted(copy.rglob("*"))):
        os.utime(p, (OLD + i * 7919, OLD + i * 7919))
    c = build(copy, cache_dir=tmp_path / "other-cache")
    assert c.sha256 == a.sha256
    assert filecmp.cmp(a.path, c.path, shallow=False)

    raw = a.path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip MTIME
    assert raw[3] & 0x08 == 0  # no FNAME
    for m in members(a).values():
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
    assert list(members(a)) == sorted(members(a))


def test_default_cache_is_under_launcher_home(tmp_path):
    snap = build(write_tree(tmp_path / "proj", SMALL))
    assert snap.path.parent == tmp_path / "home" / "snapshots"


INDEX_CHECK = """
import json, os, sys, tarfile, time
from pathlib import Path
import launcher, launcher.snapshot as s
src, cache, old = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
s._RACY_S = 0.05  # the files' ctimes are from a moment ago (copied just now): settled after this, not 2 s
time.sleep(0.1)
first = s.build(src, cache_dir=cache)
indexed = len(list((cache / "index").iterdir()))
again = s.build(src, cache_dir=cache)
inodes = [first.path.stat().st_ino, again.path.stat().st_ino]
(src / "pkg" / "model.py").write_text("X = 2\\n")
os.utime(src / "pkg" / "model.py", (old, old))
edited = s.build(src, cache_dir=cache)
print(json.dumps({"agent": launcher.__file__, "indexed": indexed, "shas": [first.sha256, again.sha256, edited.sha256],
                  "inodes": inodes, "model": tarfile.open(edited.path).extractfile("pkg/model.py").read().decode()}))
"""


def test_an_unchanged_tree_is_indexed_and_an_edit_is_still_seen(tmp_path, launcher_env):
    # The agent files are part of the index key, and this repo's are edited while tests run: a frozen copy with
    # old mtimes makes "every file is old enough to index" true here.
    agent_src = tmp_path / "agent-src"
    shutil.copytree(REPO / "launcher", agent_src / "launcher", ignore=shutil.ignore_patterns("__pycache__"))
    src = write_tree(tmp_path / "proj", SMALL)
    for p in [*agent_src.rglob("*"), *src.rglob("*")]:
        os.utime(p, (OLD, OLD))
    out = subprocess.run([sys.executable, "-c", INDEX_CHECK, str(src), str(tmp_path / "cache"), str(OLD)],
                         env={**launcher_env, "PYTHONPATH": str(agent_src)}, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert Path(got["agent"]).is_relative_to(agent_src)
    assert got["indexed"] == 1
    first, again, edited = got["shas"]
    assert again == first and got["inodes"][0] == got["inodes"][1]
    # Same size, same mtime, new bytes: the index key's ctime catches it.
    assert edited != first and got["model"] == "X = 2\n"


@pytest.fixture
def packs(monkeypatch):
    """Every tree build() packs, as the number of items; the index used as soon as a tree is 50 ms old."""
    import launcher.snapshot as snapshot

    # The agent files are this checkout's launcher/, edited by other work while tests run: not the subject here.
    monkeypatch.setattr(snapshot, "_agent_items", lambda: [])
    monkeypatch.setattr(snapshot, "_RACY_S", 0.05)
    calls: list[int] = []
    real = snapshot._pack

    def counting(items, out, *args, **kwargs):
        calls.append(len(items))
        return real(items, out, *args, **kwargs)

    monkeypatch.setattr(snapshot, "_pack", counting)
    return calls


def settled_build(src: Path, cache: Path) -> Snapshot:
    time.sleep(0.1)  # every file older than _RACY_S: this build may index the tree, so the next may hit
    return build(src, cache_dir=cache)


def _content_same_size_and_mtime(repo: Path) -> None:
    (repo / "pkg" / "model.py").write_text("X = 2\n")
    os.utime(repo / "pkg" / "model.py", (OLD, OLD))


def _exclude(repo: Path) -> None:
    (repo / ".git" / "info").mkdir(parents=True, exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("*.log\n")


STALE_CHANGES = {
    # change -> what the new snapshot must show
    "content, same size and mtime": (_content_same_size_and_mtime,
                                     lambda s: tar_read(s, "pkg/model.py") == b"X = 2\n"),
    "added file": (lambda r: (r / "pkg" / "new.py").write_text("new\n"), lambda s: "pkg/new.py" in names(s)),
    "removed file": (lambda r: (r / "README.md").unlink(), lambda s: "README.md" not in names(s)),
    "mode": (lambda r: (r / "train.py").chmod(0o755), lambda s: members(s)["train.py"].mode == 0o755),
    ".gitignore rule": (lambda r: (r / ".gitignore").write_text("*.log\n"), lambda s: "notes.log" not in names(s)),
    ".git/info/exclude rule (no file in the tree changes)": (_exclude, lambda s: "notes.log" not in names(s)),
    ".launchignore rule": (lambda r: (r / ".launchignore").write_text("scratch.txt\n"),
                           lambda s: "scratch.txt" not in names(s) and ".launchignore" in names(s)),
    "untracked file deleted": (lambda r: (r / "scratch.txt").unlink(), lambda s: "scratch.txt" not in names(s)),
}


def tar_read(snap: Snapshot, name: str) -> bytes:
    with tarfile.open(snap.path) as tar:
        return tar.extractfile(name).read()


@pytest.mark.parametrize("change", list(STALE_CHANGES))
def test_the_index_never_returns_a_stale_snapshot(tmp_path, packs, change):
    repo = write_tree(tmp_path / "repo", {**SMALL, ".gitignore": "", "notes.log": "log\n",
                                          "scratch.txt": "untracked\n"})
    git(repo, "init", "-q")
    git(repo, "add", *SMALL, ".gitignore")
    git(repo, "commit", "-qm", "init")
    for p in repo.rglob("*"):
        if ".git" not in p.relative_to(repo).parts:
            os.utime(p, (OLD, OLD))
    cache = tmp_path / "cache"
    first = settled_build(repo, cache)
    assert settled_build(repo, cache) == first and len(packs) == 1  # indexed: the second build packed nothing
    assert {"notes.log", "scratch.txt", "pkg/model.py"} <= names(first)

    apply, shows = STALE_CHANGES[change]
    apply(repo)
    changed = settled_build(repo, cache)
    assert len(packs) == 2 and changed.sha256 != first.sha256
    assert shows(changed)
    assert settled_build(repo, cache) == changed and len(packs) == 2  # and that tree is indexed in turn


def test_a_tree_changed_in_the_last_seconds_is_not_indexed(tmp_path, monkeypatch):
    import launcher.snapshot as snapshot

    monkeypatch.setattr(snapshot, "_agent_items", lambda: [])
    src = write_tree(tmp_path / "proj", SMALL)
    for p in src.rglob("*"):
        os.utime(p, (OLD, OLD))  # an old mtime, as cp -p or rsync -t leave it: the ctime still says "just now"
    cache = tmp_path / "cache"
    a = build(src, cache_dir=cache)
    assert not (cache / "index").exists()
    assert build(src, cache_dir=cache) == a  # packed again, to the same bytes


# --- the packed format: one gzip member, one tar stream, read by any reader

@pytest.mark.parametrize("small_tree", [16 * 1024**2, 0], ids=["level 6 (a small tree)", "level 1 (a big tree)"])
def test_packed_bytes_read_back_with_tarfile_and_gzip(tmp_path, monkeypatch, small_tree):
    import gzip
    import random

    import launcher.snapshot as snapshot

    monkeypatch.setattr(snapshot, "_SMALL_TREE", small_tree)
    monkeypatch.setattr(snapshot, "_READ_WHOLE", 256 * 1024)  # the streamed path too, on files of a few 100 KB
    monkeypatch.setattr(snapshot, "_STREAM_CHUNK", 100 * 1024)
    rng = random.Random(7)
    noise, small = rng.randbytes(400_000), rng.randbytes(1000)
    text = b"".join(b"def f%d(x):\n    return x * %d\n" % (i, i % 97) for i in range(30_000))[:700_000]
    long_name = "deep/" + "n" * 120 + ".py"
    files = {
        "empty.txt": b"", "block.txt": b"a" * 512, long_name: b"a PAX header for the name\n",
        "donn\u00e9es/\u00e9t\u00e9.py": b"non-ASCII name\n",
        "weights.bin": noise[:200_000],  # incompressible, read whole: stored blocks
        "big_noise.bin": noise,  # incompressible, streamed
        "big_text.txt": text,  # streamed, deflated
        "header_then_noise.npy": b"{'descr': '<f4'}" + b" " * 20_000 + noise[:150_000],  # judged by its middle too
        "small_noise.bin": small,  # below the probe size: deflated whatever it is
    }
    src = write_tree(tmp_path / "proj", files)
    (src / "link").symlink_to(long_name)  # a link target over 100 bytes
    (src / "big_text.txt").chmod(0o755)
    snap = build(src, cache_dir=tmp_path / "cache")
    gz = snap.path.read_bytes()
    raw = gzip.decompress(gz)  # checks the trailer's crc32 and length
    assert len(raw) % (20 * 512) == 0
    with tarfile.open(snap.path) as tar:
        got = {m.name: m for m in tar.getmembers() if not m.name.startswith(AGENT)}
        assert set(got) == set(files) | {"link"}
        for name, data in files.items():
            m = got[name]
            assert m.isreg() and tar.extractfile(m).read() == data, name
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
            assert m.mode == (0o755 if name == "big_text.txt" else 0o644)
        assert got["link"].issym() and got["link"].linkname == long_name and got["link"].mode == 0o777
    # Stored, not deflated: a stored block carries up to 64 KB verbatim, which deflate output never does.
    assert noise[1000:60_000] in gz  # weights.bin
    assert noise[310_000:360_000] in gz  # big_noise.bin, inside its fourth streamed chunk
    assert noise[50_000:100_000] in gz  # header_then_noise.npy's body
    assert text[:4000] not in gz and small[:500] not in gz
    out = unpack(snap.path, snap.sha256, tmp_path / "node")
    assert (out / "big_noise.bin").read_bytes() == noise and (out / "link").read_bytes() == files[long_name]


@pytest.mark.parametrize("small_tree", [16 * 1024**2, 0], ids=["level 6", "level 1"])
def test_the_same_bytes_whatever_the_number_of_deflate_threads(tmp_path, monkeypatch, small_tree):
    import gzip
    import random

    import launcher.snapshot as snapshot

    monkeypatch.setattr(snapshot, "_SMALL_TREE", small_tree)
    monkeypatch.setattr(snapshot, "_SEGMENT", 5000)  # hundreds of segments, finished out of order by the threads
    rng = random.Random(3)
    files = {f"src/m{i:03d}.py": b"".join(b"x%d = %d\n" % (j, rng.randint(0, 9)) for j in range(rng.randint(0, 900)))
             for i in range(60)}
    files.update({"w1.bin": rng.randbytes(90_000), "w2.bin": rng.randbytes(70_000)})  # stored between segments
    src = write_tree(tmp_path / "proj", files)
    shas = []
    for workers in (1, 3):
        monkeypatch.setattr(snapshot, "_WORKERS", workers)
        snap = build(src, cache_dir=tmp_path / f"cache-{workers}")
        shas.append(snap.sha256)
        gzip.decompress(snap.path.read_bytes())  # crc32 and length agree
        with tarfile.open(snap.path) as tar:
            assert {n: tar.extractfile(n).read() for n in files} == files
    assert shas[0] == shas[1]


def test_a_file_that_shrinks_while_streamed_is_refused(tmp_path, monkeypatch):
    import launcher.snapshot as snapshot

    monkeypatch.setattr(snapshot, "_READ_WHOLE", 1024)
    monkeypatch.setattr(snapshot, "_STREAM_CHUNK", 1000)
    src = write_tree(tmp_path / "proj", {"big.txt": b"x" * 10_000, "a.py": "a"})
    real = snapshot._incompressible

    def truncating(data):  # called on big.txt's first chunk: the file shrinks before the second is read
        if data == b"x" * 1000:
            os.truncate(src / "big.txt", 10)
        return real(data)

    monkeypatch.setattr(snapshot, "_incompressible", truncating)
    with pytest.raises(UserError, match="big.txt changed while the code snapshot was packed"):
        build(src, cache_dir=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_file()]  # no partial tarball left


# --- which files travel

def test_git_tree_as_git_sees_it_plus_launchignore(tmp_path):
    repo = write_tree(tmp_path / "repo", {
        "a.py": "a", "sub/b.py": "b", "gone.py": "deleted later", "x.log": "ignored by git",
        "build/out.bin": "ignored dir", ".gitignore": "*.log\nbuild/\n",
        "secret.txt": "launchignored", "notes/secret.txt": "launchignored at any depth",
        "only_top.txt": "anchored", "sub/only_top.txt": "kept: the rule is anchored",
        "data/big.bin": "dir rule", "deep/x/y.tmp": "** rule", "table.csv": "*.csv", "keep.csv": "negated",
        ".launchignore": "secret.txt\n/only_top.txt\ndata/\n**/*.tmp\n*.csv\n!keep.csv\n# a comment\n",
    })
    git(repo, "init", "-q")
    git(repo, "add", "a.py", "sub/b.py", "gone.py", ".gitignore")
    git(repo, "commit", "-qm", "init")
    (repo / "gone.py").unlink()
    write_tree(repo, {"new.py": "untracked, not ignored"})

    snap = build(repo, cache_dir=tmp_path / "cache")
    assert names(snap) == {"a.py", "sub/b.py", "new.py", ".gitignore", ".launchignore", "sub/only_top.txt",
                           "keep.csv"}
    assert not any(n == ".git" or n.startswith(".git/") for n in names(snap, agent=True))


def test_plain_directory_without_git(tmp_path):
    src = write_tree(tmp_path / "plain", {
        "run.py": "r", "lib/util.py": "u", ".git/config": "not a repo git knows", "__pycache__/run.pyc": "c",
        "lib/__pycache__/util.pyc": "c", ".venv/lib/site.py": "v", "out.log": "gitignored",
        "ckpt/model.bin": "gitignored dir", "scratch/a.txt": "launchignored", "keep.log": "negated",
        ".gitignore": "*.log\nckpt/\n", ".launchignore": "scratch/\n!keep.log\n",
    })
    snap = build(src, cache_dir=tmp_path / "cache")
    assert names(snap) == {"run.py", "lib/util.py", ".gitignore", ".launchignore", "keep.log"}


def test_git_not_installed_walks_the_directory(tmp_path, monkeypatch):
    repo = write_tree(tmp_path / "repo", {"a.py": "a", "x.log": "ignored", ".gitignore": "*.log\n"})
    git(repo, "init", "-q")
    git(repo, "add", "a.py", ".gitignore")
    git(repo, "commit", "-qm", "init")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    snap = build(repo, cache_dir=tmp_path / "cache")
    assert names(snap) == {"a.py", ".gitignore"}


def test_executable_bit_kept_other_modes_normalised(tmp_path):
    src = write_tree(tmp_path / "proj", {"run.sh": "#!/bin/sh\necho hi\n", "data.txt": "d", "private.txt": "p"})
    (src / "run.sh").chmod(0o700)
    (src / "private.txt").chmod(0o600)
    snap = build(src, cache_dir=tmp_path / "cache")
    m = members(snap)
    assert (m["run.sh"].mode, m["data.txt"].mode, m["private.txt"].mode) == (0o755, 0o644, 0o644)
    out = unpack(snap.path, snap.sha256, tmp_path / "node")
    assert os.access(out / "run.sh", os.X_OK)
    assert not os.access(out / "data.txt", os.X_OK)


def test_symlinks_travel_as_symlinks(tmp_path):
    src = write_tree(tmp_path / "proj", {"conf/base.yaml": "lr: 1\n"})
    (src / "current.yaml").symlink_to("conf/base.yaml")
    snap = build(src, cache_dir=tmp_path / "cache")
    link = members(snap)["current.yaml"]
    assert link.issym() and link.linkname == "conf/base.yaml"
    out = unpack(snap.path, snap.sha256, tmp_path / "node")
    assert (out / "current.yaml").is_symlink()
    assert (out / "current.yaml").read_text() == "lr: 1\n"


@pytest.mark.parametrize("target", ["/etc/hostname", "../outside.txt"])
def test_symlink_out_of_the_tree_is_refused_at_build(tmp_path, target):
    src = write_tree(tmp_path / "proj", SMALL)
    (src / "escape").symlink_to(target)
    with pytest.raises(UserError) as e:
        build(src, cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert "escape" in msg and ".launchignore" in msg and "\n" not in msg


@pytest.mark.parametrize("rules,path,ignored", [
    (["*.log"], "a/b/run.log", True),
    (["/top.txt"], "top.txt", True),
    (["/top.txt"], "sub/top.txt", False),
    (["docs/*.md"], "docs/a.md", True),
    (["docs/*.md"], "docs/x/a.md", False),
    (["a/**/b.txt"], "a/b.txt", True),
    (["a/**/b.txt"], "a/x/y/b.txt", True),
    (["**/cache"], "x/cache/f", True),
    (["out/**"], "out/a/b", True),
    (["build/"], "build", False),  # a file named build: the rule is for directories
    (["build/"], "src/build/x.o", True),
    (["*.csv", "!keep.csv"], "keep.csv", False),
    (["data/", "!data/keep.txt"], "data/keep.txt", True),  # as in git: no re-including inside an excluded dir
    (["file[0-9].txt"], "file7.txt", True),
    (["file[!0-9].txt"], "file7.txt", False),
    (["\\#hash"], "#hash", True),
])
def test_ignore_rules_follow_gitignore(rules, path, ignored):
    assert IgnoreRules(rules).excludes(path) is ignored


# --- the size limit

def test_over_the_limit_names_the_five_largest(tmp_path):
    sizes = {"a.bin": 9000, "b.bin": 8000, "c.bin": 7000, "d.bin": 6000, "e.bin": 5000, "f.py": 40, "g.py": 30}
    src = write_tree(tmp_path / "proj", {k: b"x" * v for k, v in sizes.items()})
    with pytest.raises(UserError) as e:
        build(src, limit_bytes=10 * 1024, cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("code snapshot is 34.2 KB, over the 10 KB limit; largest files: "
                          "a.bin (8.8 KB), b.bin (7.8 KB), c.bin (6.8 KB), d.bin (5.9 KB), e.bin (4.9 KB)")
    assert "f.py" not in msg and ".launchignore" in msg and "LAUNCHER_SNAPSHOT_LIMIT" in msg
    assert not (tmp_path / "cache").exists()  # checked before anything is packed

    (src / ".launchignore").write_text("*.bin\n")
    assert names(build(src, limit_bytes=10 * 1024, cache_dir=tmp_path / "cache")) == {"f.py", "g.py",
                                                                                     ".launchignore"}


def test_limit_from_the_environment(tmp_path, monkeypatch):
    src = write_tree(tmp_path / "proj", {"w.bin": b"x" * 3000})
    monkeypatch.setenv("LAUNCHER_SNAPSHOT_LIMIT", "2Ki")
    with pytest.raises(UserError, match=r"over the 2 KB limit"):
        build(src, cache_dir=tmp_path / "cache")
    monkeypatch.setenv("LAUNCHER_SNAPSHOT_LIMIT", "1MB")
    assert names(build(src, cache_dir=tmp_path / "cache")) == {"w.bin"}
    monkeypatch.setenv("LAUNCHER_SNAPSHOT_LIMIT", "lots")
    with pytest.raises(UserError, match="LAUNCHER_SNAPSHOT_LIMIT"):
        build(src, cache_dir=tmp_path / "cache")


# --- the agent travels with the code

def test_launcher_package_added_when_the_workdir_lacks_it(tmp_path):
    snap = build(write_tree(tmp_path / "proj", SMALL), cache_dir=tmp_path / "cache")
    agent = {n[len(AGENT):] for n in names(snap, agent=True) if n.startswith(AGENT)}
    for must in ("launcher/__init__.py", "launcher/node/agent.py", "launcher/snapshot.py", "launcher/datapool/s3.py"):
        assert must in agent
    assert all(n.endswith(".py") and "__pycache__" not in n for n in agent if n.startswith("launcher/"))
    # and the node's locks, for the bootstrap's venv (tests/test_images.py)
    assert {n for n in agent if not n.startswith("launcher/")} == {"images/requirements.lock",
                                                                   "images/requirements-gpu.lock"}
    assert (members(snap)[AGENT + "launcher/snapshot.py"].size
            == (REPO / "launcher" / "snapshot.py").stat().st_size)


CHECK_OWN = """
import json, sys
from pathlib import Path
import launcher, launcher.snapshot as s
snap = s.build(Path.cwd(), cache_dir=Path(sys.argv[1]))
import tarfile
print(json.dumps({"file": launcher.__file__, "names": tarfile.open(snap.path).getnames()}))
"""


def test_launcher_package_not_added_when_the_workdir_has_it(tmp_path, launcher_env):
    proj = tmp_path / "proj"
    shutil.copytree(REPO / "launcher", proj / "launcher", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    write_tree(proj, {"train.py": "t"})
    env = {**launcher_env, "PYTHONPATH": str(proj)}
    out = subprocess.run([sys.executable, "-c", CHECK_OWN, str(tmp_path / "cache")], cwd=proj, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert Path(got["file"]).resolve() == (proj / "launcher" / "__init__.py").resolve()
    assert "launcher/snapshot.py" in got["names"] and "train.py" in got["names"]
    assert not [n for n in got["names"] if n.startswith(AGENT)]


# --- upload and fetch through a file:// store

def test_upload_to_a_file_store_then_fetch(tmp_path):
    snap = build(write_tree(tmp_path / "proj", SMALL), cache_dir=tmp_path / "cache")
    pool = tmp_path / "pool"
    url = pool.as_uri()
    assert upload(snap, url) == snap.size
    stored = pool / "code" / f"{snap.sha256}.tar.gz"
    assert stored.read_bytes() == snap.path.read_bytes()
    assert not (pool / "experiments").exists()
    assert upload(snap, url) == 0

    out = fetch(url, snap.sha256, tmp_path / "node")
    assert out == tmp_path / "node" / snap.sha256
    assert (out / "pkg" / "model.py").read_text() == "X = 1\n"
    assert (out / ".launcher-agent" / "launcher" / "snapshot.py").is_file()
    assert sorted(p.name for p in (tmp_path / "node").iterdir()) == [snap.sha256]  # no temp left behind
    assert fetch(url, snap.sha256, tmp_path / "node") == out


def test_fetch_refuses_a_corrupt_object_and_unpacks_nothing(tmp_path):
    snap = build(write_tree(tmp_path / "proj", SMALL), cache_dir=tmp_path / "cache")
    url = (tmp_path / "pool").as_uri()
    upload(snap, url)
    stored = tmp_path / "pool" / "code" / f"{snap.sha256}.tar.gz"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    bad = hashlib.sha256(bytes(data)).hexdigest()
    node = tmp_path / "node"
    with pytest.raises(SnapshotError) as e:
        fetch(url, snap.sha256, node)
    assert snap.sha256 in str(e.value) and bad in str(e.value)
    assert not node.exists() or list(node.iterdir()) == []

    with pytest.raises(SnapshotError, match="is not in"):
        fetch(url, "0" * 64, node)
    with pytest.raises(UserError, match="64 hex digits"):
        fetch(url, "../../etc", node)


# --- unpacking is safe and atomic

def evil_tar(path: Path, name: str) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for n, data in (("ok.txt", b"fine"), (name, b"pwned")):
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/tmp/launcher-snapshot-test-evil"])
def test_unpack_refuses_members_escaping_the_destination(tmp_path, name):
    tar = tmp_path / "evil.tar.gz"
    sha = evil_tar(tar, name)
    node = tmp_path / "node"
    with pytest.raises(SnapshotError, match="unsafe member"):
        unpack(tar, sha, node)
    assert not (tmp_path / "evil").exists() and not Path("/tmp/launcher-snapshot-test-evil").exists()
    assert list(node.iterdir()) == []


def test_unpack_reuses_an_unpacked_snapshot(tmp_path):
    snap = build(write_tree(tmp_path / "proj", SMALL), cache_dir=tmp_path / "cache")
    out = unpack(snap.path, snap.sha256, tmp_path / "node")
    (out / "marker").write_text("still here")
    assert unpack(snap.path, snap.sha256, tmp_path / "node") == out
    assert (out / "marker").read_text() == "still here"


# --- the node's CLI

def run_cli(launcher_env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher.snapshot", *args], env=launcher_env,
                          capture_output=True, text=True, timeout=60)


def test_cli_unpack_and_fetch(tmp_path, launcher_env):
    snap = build(write_tree(tmp_path / "proj", SMALL), cache_dir=tmp_path / "cache")
    out = run_cli(launcher_env, "unpack", str(snap.path), snap.sha256, str(tmp_path / "a"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "a" / snap.sha256)

    wrong = "f" * 64
    out = run_cli(launcher_env, "unpack", str(snap.path), wrong, str(tmp_path / "b"))
    assert out.returncode == 1
    err = out.stderr.strip()
    assert "\n" not in err and wrong in err and snap.sha256 in err
    assert not (tmp_path / "b").exists()

    url = (tmp_path / "pool").as_uri()
    upload(snap, url)
    out = run_cli(launcher_env, "fetch", url, snap.sha256, str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip(), "train.py").read_text() == "print('hi')\n"


def test_import_is_light(launcher_env):
    code = ("import sys, launcher.snapshot; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('boto3', 'botocore', 'torch') or m.startswith('launcher.datapool')))")
    out = subprocess.run([sys.executable, "-c", code], env=launcher_env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# --- S3 on a real moto server (tests/motoserver.py)

BUCKET = "snap-bucket"
@pytest.fixture(scope="module")
def moto_server(tmp_path_factory):
    server = start_moto_with(tmp_path_factory.mktemp("moto"), log_name="access.log")
    yield server
    server.stop()


@pytest.fixture
def s3(moto_server, monkeypatch, tmp_path):
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                 "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                 "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}.items():
        monkeypatch.setenv(k, v)
    urllib.request.urlopen(urllib.request.Request(f"{moto_server.endpoint}/moto-api/reset", method="POST"),
                           timeout=10).read()
    moto_server.client().create_bucket(Bucket=BUCKET)
    moto_server.mark()
    return moto_server


def test_s3_upload_once_then_fetch_verified(tmp_path, s3):
    snap = build(write_tree(tmp_path / "proj", SMALL), cache_dir=tmp_path / "cache")
    url = f"s3://{BUCKET}/pool"
    assert upload(snap, url, endpoint_url=s3.endpoint) == snap.size
    head = s3.client().head_object(Bucket=BUCKET, Key=f"pool/{snap.key}")
    assert head["ContentLength"] == snap.size

    s3.mark()
    assert upload(snap, url, endpoint_url=s3.endpoint) == 0
    reqs = s3.requests()
    assert len(reqs) == 1 and reqs[0][0] == "GET" and "list-type=2" in reqs[0][1]  # one LIST, nothing sent

    out = fetch(url, snap.sha256, tmp_path / "node", endpoint_url=s3.endpoint)
    assert (out / "pkg" / "model.py").read_text() == "X = 1\n"

    s3.client().put_object(Bucket=BUCKET, Key=f"pool/{snap.key}", Body=b"not the snapshot")
    bad = hashlib.sha256(b"not the snapshot").hexdigest()
    with pytest.raises(SnapshotError) as e:
        fetch(url, snap.sha256, tmp_path / "node2", endpoint_url=s3.endpoint)
    assert snap.sha256 in str(e.value) and bad in str(e.value)
    assert list((tmp_path / "node2").iterdir()) == []


# --- chunks: a big tree is a run of gzip members whose edges depend on the paths alone

@pytest.fixture
def chunked(monkeypatch):
    """Chunks on a tree of a few hundred KB (every tree is "big"), the cache trusted 50 ms after a write, and no
    agent files (this checkout's own launcher/ changes under other work). Yields the files packed (not copied)."""
    import launcher.snapshot as snapshot

    monkeypatch.setattr(snapshot, "_SMALL_TREE", 0)
    monkeypatch.setattr(snapshot, "_RACY_S", 0.05)
    monkeypatch.setattr(snapshot, "_agent_items", lambda: [])
    packed: list[str] = []
    real = snapshot._pack_file

    def counting(gz, item):
        packed.append(item.arcname)
        return real(gz, item)

    monkeypatch.setattr(snapshot, "_pack_file", counting)
    return packed


def chunk_tree(tmp_path) -> tuple[Path, dict]:
    import random

    rng = random.Random(11)
    files = {f"pkg{i % 7}/mod{i:03d}.py": b"".join(b"v%d = %d\n" % (j, rng.randint(0, 99)) for j in range(200))
             for i in range(120)}
    files.update({"weights.bin": rng.randbytes(200_000), "data/big.txt": b"row\n" * 60_000})
    src = write_tree(tmp_path / "proj", files)
    time.sleep(0.1)  # settled: the cache may keep its chunks
    return src, files


def test_a_chunked_tarball_is_one_valid_tar_gz_and_its_chunk_list_covers_it(tmp_path, chunked):
    import gzip

    from launcher.snapshot import chunk_list

    src, files = chunk_tree(tmp_path)
    snap = build(src, cache_dir=tmp_path / "cache")
    data = snap.path.read_bytes()
    chunks = chunk_list(snap)
    assert len(chunks) == len(files) + 1  # a chunk a file, and the end
    assert [c[0] for c in chunks] == [0] + [o + n for o, n, _ in chunks[:-1]] and sum(n for _, n, _ in chunks) == len(data)
    for offset, length, sha in chunks:
        member = data[offset:offset + length]
        assert hashlib.sha256(member).hexdigest() == sha
        gzip.decompress(member)  # each chunk is a whole gzip member (its crc32 and length agree)
    assert len(gzip.decompress(data)) % (20 * 512) == 0
    with tarfile.open(snap.path) as tar:
        assert {n: tar.extractfile(n).read() for n in files} == files
    out = unpack(snap.path, snap.sha256, tmp_path / "node")
    assert (out / "weights.bin").read_bytes() == files["weights.bin"]


def test_an_edit_repacks_and_changes_one_chunk_and_the_bytes_are_a_fresh_packs(tmp_path, chunked):
    from launcher.snapshot import chunk_list, compose_plan

    src, files = chunk_tree(tmp_path)
    cache = tmp_path / "cache"
    old = build(src, cache_dir=cache)
    old_chunks, old_bytes = chunk_list(old), old.path.read_bytes()
    chunked.clear()
    (src / "pkg3/mod010.py").write_bytes(files["pkg3/mod010.py"] + b"edited = True\n")
    time.sleep(0.1)
    new = build(src, cache_dir=cache)
    assert new.sha256 != old.sha256
    assert chunked == ["pkg3/mod010.py"]  # only the edited file was read and packed; the rest was copied
    new_chunks = chunk_list(new)
    changed = [c for c in new_chunks[:-1] if c[2] not in {h for _, _, h in old_chunks}]
    assert len(changed) == 1  # plus, perhaps, the end member: its padding follows the total size
    # The same bytes as a pack from nothing (no chunk cache): what was copied is what would have been packed.
    assert build(src, cache_dir=tmp_path / "fresh").sha256 == new.sha256
    # The plan a box follows: the old tarball's ranges and the new chunks only.
    ops = compose_plan(new_chunks, old_chunks)
    new_bytes = new.path.read_bytes()
    made = b"".join((old_bytes if src_ == "old" else new_bytes)[at:at + n] for src_, at, n in ops)
    assert made == new_bytes
    sent = sum(n for src_, _, n in ops if src_ == "new")
    assert sent < len(files["pkg3/mod010.py"]), sent  # the edited file's chunk (compressed) and the end


def test_a_cached_chunk_whose_bytes_changed_is_packed_again(tmp_path, chunked):
    src, files = chunk_tree(tmp_path)
    cache = tmp_path / "cache"
    old = build(src, cache_dir=cache)
    damaged = bytearray(old.path.read_bytes())
    at = bytes(damaged).index(files["weights.bin"][5000:6000])  # stored verbatim
    damaged[at] ^= 0xFF
    old.path.write_bytes(bytes(damaged))
    (src / "pkg0/mod000.py").write_bytes(b"x = 1\n")
    time.sleep(0.1)
    chunked.clear()
    new = build(src, cache_dir=cache)
    assert sorted(chunked) == ["pkg0/mod000.py", "weights.bin"]  # the damaged chunk was packed again
    assert build(src, cache_dir=tmp_path / "fresh").sha256 == new.sha256
    with tarfile.open(new.path) as tar:
        assert tar.extractfile("weights.bin").read() == files["weights.bin"]


@pytest.mark.parametrize("ops", [
    [("old", 0, 30 * 2**20), ("new", 30 * 2**20, 1000), ("old", 30 * 2**20 + 1000, 40 * 2**20)],
    [("new", 0, 1000), ("old", 1000, 3 * 2**20), ("new", 3 * 2**20 + 1000, 10), ("old", 0, 7 * 2**20)],
    [("old", 0, 6 * 2**20), ("new", 6 * 2**20, 200 * 2**20)],
    [("new", 0, 2**20)],
    [("old", 0, 12 * 2**30)],
])
def test_store_parts_keep_s3s_rules_and_cover_the_tarball_in_order(ops):
    from launcher.snapshot import store_parts

    parts = store_parts(ops)
    assert all(p[2] >= 5 * 2**20 for p in parts[:-1])  # every part but the last: at least 5 MiB
    assert all(p[2] <= 64 * 2**20 for p in parts if p[0] == "put") and all(p[2] <= 5 * 2**30 for p in parts)
    new_at = 0
    for p in parts:  # the parts, in order, are the new tarball from byte 0 to its end
        assert (p[1] if p[0] == "put" else p[3]) == new_at
        new_at += p[2]
    assert new_at == sum(n for _, _, n in ops)
    # A copied range is the old object's bytes for that stretch of the new tarball, as compose_plan said.
    old_at, cursor = {}, 0
    for src, at, n in ops:
        if src == "old":
            old_at[cursor] = (at, n)
        cursor += n
    for p in (p for p in parts if p[0] == "copy"):
        start = max(k for k in old_at if k <= p[3])
        at, n = old_at[start]
        assert p[1] == at + (p[3] - start) and p[3] + p[2] <= start + n


def test_s3_a_changed_snapshot_sends_the_changed_parts_and_the_store_copies_the_rest(tmp_path, s3, chunked):
    import random

    rng = random.Random(2)
    files = {f"w{i:02d}.bin": rng.randbytes(1024 * 1024) for i in range(16)}  # stored: packs fast, 16 MiB
    files.update({f"src/m{i:02d}.py": f"X = {i}\n" for i in range(20)})
    src = write_tree(tmp_path / "proj", files)
    time.sleep(0.1)
    cache, url = tmp_path / "cache", f"s3://{BUCKET}/pool"
    first = build(src, cache_dir=cache)
    assert upload(first, url, endpoint_url=s3.endpoint) == first.size
    (src / "src/m07.py").write_text("X = 'edited'\n")
    time.sleep(0.1)
    second = build(src, cache_dir=cache)
    s3.mark()
    sent = upload(second, url, endpoint_url=s3.endpoint)
    # The edited file's chunk, made up to S3's 5 MiB part minimum with bytes around it; the other ~11 MiB are
    # copied by the store from the first tarball.
    assert 0 < sent <= 6 * 2**20 and second.size > 16 * 2**20, (sent, second.size)
    body = s3.client().get_object(Bucket=BUCKET, Key=f"pool/{second.key}")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == second.sha256  # the composed object is the new tarball
    out = fetch(url, second.sha256, tmp_path / "node", endpoint_url=s3.endpoint)
    assert (out / "src" / "m07.py").read_text() == "X = 'edited'\n"


def test_the_cache_keeps_the_newest_tarballs_and_any_used_in_the_last_hour(tmp_path, monkeypatch):
    import launcher.snapshot as snapshot

    monkeypatch.setattr(snapshot, "_agent_items", lambda: [])
    monkeypatch.setattr(snapshot, "_RACY_S", 0.05)
    cache, src = tmp_path / "cache", tmp_path / "proj"
    snaps = []
    for i in range(8):
        write_tree(src, {"main.py": f"print({i})\n"})
        time.sleep(0.1)
        snaps.append(build(src, cache_dir=cache))
    assert all(s.path.is_file() for s in snaps)  # all used in the last hour: none pruned
    for n, s in enumerate(snaps):  # all made two hours ago, the oldest first
        os.utime(s.path, (time.time() - 7200 + n, time.time() - 7200 + n))
    write_tree(src, {"main.py": "print(2)\n"})  # the third's content again: the same tarball, used now
    time.sleep(0.1)
    assert build(src, cache_dir=cache) == snaps[2]
    write_tree(src, {"main.py": "print('new')\n"})
    time.sleep(0.1)
    newest = build(src, cache_dir=cache)
    kept = {p.name for p in cache.glob("*.tar.gz")}
    # five: the new one, the one used now, and the three newest of the rest
    assert kept == {f"{s.sha256}.tar.gz" for s in [newest, snaps[2], *snaps[5:8]]}, kept
    assert not (cache / f"{snaps[4].sha256}.chunks").exists()
    write_tree(src, {"main.py": "print(0)\n"})  # a pruned one's index entry is a miss: packed again, same bytes
    time.sleep(0.1)
    again = build(src, cache_dir=cache)
    assert again.sha256 == snaps[0].sha256 and again.path.is_file()
