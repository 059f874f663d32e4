"""A datapool root that cannot be written (read-only, or a path through a file) is one `error:` line, exit 2,
before anything moves: `launch sync` as a real subprocess.

Root ignores permission bits, so where the tests run as root the `launch sync` process runs as `nobody`
(setpriv / runuser) against a root owned by root with mode 0555: read-only for real. It runs from a copy of the
launcher and its packages (tests/unprivileged.py), so this passes from any checkout, a root user's 0700 home too.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import BUCKET, REPO, bucket_tree, read_tree, write_tree
from ..unprivileged import nobody_tmp  # noqa: F401 - a fixture

URL = f"s3://{BUCKET}/pool"
NOBODY = 65534
TREE = {"experiments/demo/data/a.txt": b"a", "experiments/demo/model/base/w.bin": os.urandom(3000)}


def _env(aws_env: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATAPOOL_ROOT", "LAUNCH_DATAPOOL")}
    env.update(aws_env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["HOME"] = "/nonexistent"
    return env


@pytest.fixture
def tmp_path(nobody_tmp):
    """Every test here works in a folder nobody reaches (tests/unprivileged.py: pytest's own is 0700)."""
    return nobody_tmp


@pytest.fixture
def unprivileged(tmp_path):
    """A runner of `launch sync` as an unprivileged user, with tmp_path traversable by that user."""
    # From a copy of the launcher and its packages that nobody can read (tests/unprivileged.py): the checkout and
    # this interpreter's packages may sit where nobody cannot (a root user's 0700 home).
    from .. import unprivileged as nobody

    if nobody.prefix():
        for p in (tmp_path, *tmp_path.parents):
            if p == Path(os.path.realpath("/tmp")) or p == Path("/"):
                break
            p.chmod(0o755)
    nobody.runtime()

    def run(args, env):
        return nobody.run(["-m", "launcher", "sync", *args], env, tmp_path)

    return run


def _read_only(path: Path) -> None:
    """Owned by root (or by us), mode 0555, all the way down: nobody else can create anything in it."""
    for d, dirs, _ in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(d, name), 0o555)
    path.chmod(0o555)


def _writable_by_the_runner(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)


def _listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _assert_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture
def restore_modes(tmp_path):
    """pytest must be able to clean tmp_path up afterwards."""
    yield
    for d, dirs, _ in os.walk(tmp_path):
        for name in dirs:
            os.chmod(os.path.join(d, name), 0o755)


def test_sync_up_from_read_only_root(s3, aws_env, tmp_path, unprivileged, restore_modes):
    root = tmp_path / "pool"
    write_tree(root, TREE)
    _read_only(root)
    before = _listing(root)
    env = _env(aws_env)
    r = unprivileged(["up", "--datapool", URL, "--endpoint-url", s3.endpoint, "--root", str(root)], env)
    _assert_error(r, str(root), "not writable", "--root")
    assert bucket_tree(s3) == {} and _listing(root) == before

    store = tmp_path / "store"
    _writable_by_the_runner(store)
    r = unprivileged(["up", "--datapool", store.as_uri(), "--root", str(root), "--experiment", "demo"], env)
    _assert_error(r, "not writable")
    assert _listing(store) == [] and _listing(root) == before

    # A dry run writes nothing, so it works on a read-only root.
    r = unprivileged(["up", "--datapool", URL, "--endpoint-url", s3.endpoint, "--root", str(root), "--dry-run"],
                     env)
    assert r.returncode == 0, r.stderr
    assert "would copy" in r.stdout


def test_sync_down_into_read_only_root(s3, aws_env, tmp_path, unprivileged, restore_modes):
    src = tmp_path / "src"
    write_tree(src, TREE)
    env = _env(aws_env)
    r = subprocess.run([sys.executable, "-m", "launcher", "sync", "up", "--datapool", URL, "--endpoint-url",
                        s3.endpoint, "--root", str(src)], env=env, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    for name, setup in [("empty", lambda p: None), ("has-files", lambda p: write_tree(p, {"other.txt": b"x"}))]:
        root = tmp_path / name
        root.mkdir()
        setup(root)
        _read_only(root)
        before = _listing(root)
        r = unprivileged(["down", "--datapool", URL, "--endpoint-url", s3.endpoint, "--root", str(root)], env)
        _assert_error(r, str(root), "not writable")
        assert _listing(root) == before
        # The experiment folder is what is written when --experiment is given: still refused up front.
        r = unprivileged(["down", "--datapool", URL, "--endpoint-url", s3.endpoint, "--root", str(root),
                          "--experiment", "demo"], env)
        _assert_error(r, "not writable")
        assert _listing(root) == before

    # A new root under a read-only folder cannot be created either.
    parent = tmp_path / "ro-parent"
    parent.mkdir()
    _read_only(parent)
    r = unprivileged(["down", "--datapool", URL, "--endpoint-url", s3.endpoint, "--root", str(parent / "pool")],
                     env)
    _assert_error(r, "not writable")
    assert _listing(parent) == []

    # The same root made writable by its owner syncs.
    ok = tmp_path / "ok"
    _writable_by_the_runner(ok)
    r = unprivileged(["down", "--datapool", URL, "--endpoint-url", s3.endpoint, "--root", str(ok)], env)
    assert r.returncode == 0, r.stderr
    assert read_tree(ok) == TREE


def test_read_only_file_store_as_destination(tmp_path, aws_env, unprivileged, restore_modes):
    root = tmp_path / "pool"
    write_tree(root, TREE)
    _writable_by_the_runner(root)
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            if os.geteuid() == 0:
                os.chown(os.path.join(d, name), NOBODY, NOBODY)
    store = tmp_path / "store"
    store.mkdir()
    _read_only(store)
    r = unprivileged(["up", "--datapool", store.as_uri(), "--root", str(root)], _env(aws_env))
    _assert_error(r, str(store), "not writable")
    assert _listing(store) == [] and not (root / ".launcher").exists()


def test_root_through_a_regular_file(s3, aws_env, tmp_path):
    """`--root /x/afile/pool`: neither exists nor is a directory; it used to be a NotADirectoryError traceback."""
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    src = tmp_path / "src"
    write_tree(src, TREE)
    env = _env(aws_env)

    def launch_sync(args):
        return subprocess.run([sys.executable, "-m", "launcher", "sync", *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    r = launch_sync(["up", "--datapool", URL, "--endpoint-url", s3.endpoint, "--root", str(src)])
    assert r.returncode == 0, r.stderr
    s3.mark()
    for direction in ("down", "up"):
        r = launch_sync([direction, "--datapool", URL, "--endpoint-url", s3.endpoint, "--root",
                         str(a_file / "pool")])
        _assert_error(r, str(a_file), "not a directory")
    # As a file:// store, in either direction.
    for direction in ("up", "down"):
        r = launch_sync([direction, "--datapool", (a_file / "store").as_uri(), "--root", str(src)])
        _assert_error(r, str(a_file), "not a directory")
    assert [m for m, _, _ in s3.requests() if m != "GET"] == []  # nothing was written to the bucket
    assert a_file.read_text() == "x" and read_tree(src) == TREE
