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
import json, os, sys, tarfile
from pathlib import Path
import launcher, launcher.snapshot as s
src, cache, old = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
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
