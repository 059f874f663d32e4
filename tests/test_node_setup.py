"""Node setup's fast paths (launcher/node/venvsetup.py, launcher/nodesetup.py), run for real: the bootstrap script by
bash in a temp dir, the real uv binary from a wheel offered as the client offers it (by sha256), pip and uv
installing from a find-links folder made from this venv's own installed packages (tests/wheelhouse.py: no index, no
network), and the packed venv going through a small HTTP store on 127.0.0.1 (GET and PUT, as presigned URLs do).

The node's PATH holds only a bare Python 3.11 (a venv with nothing installed, as `python3` and `python3.11`), so the
bootstrap has to build the venv; `uv` is not on it unless offered.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import nodesetup
from launcher.node import venvsetup
from .test_bootstrap import HELLO, node  # noqa: F401 - the fixture
from .httpstore import start_http_store
from .wheelhouse import agent_wheelhouse, uv_wheel


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """The wheelhouse, the test lock, the uv wheel and a bare Python 3.11 (once per module)."""
    root = tmp_path_factory.mktemp("node-setup-parts")
    wheels, lock = agent_wheelhouse(root / "wheels")
    uv = uv_wheel(root / "uvwheel")
    bare = root / "bare"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    nodebin = root / "nodebin"
    nodebin.mkdir()
    for name in ("python3", "python3.11"):
        # A script, not a symlink: through a symlink in another folder Python would not find the venv's
        # pyvenv.cfg, and would be the base interpreter with whatever it has installed.
        (nodebin / name).write_text(f'#!/bin/sh\nexec {bare / "bin" / "python3"} "$@"\n')
        (nodebin / name).chmod(0o755)
    return {"wheels": wheels, "lock": lock, "uv": uv, "uv_sha": nodesetup.sha256_file(uv), "nodebin": nodebin}


def _env(parts) -> dict:
    """Where uv and pip find packages: the wheelhouse only (uv reads no UV_NO_INDEX: offline, with a closed port
    as its index, so a wheel missing here fails the test instead of coming from PyPI). No managed Python
    downloads, no user config."""
    return {"UV_OFFLINE": "1",
            "UV_DEFAULT_INDEX": "http://127.0.0.1:9/simple", "UV_FIND_LINKS": str(parts["wheels"]), "UV_NO_CONFIG": "1",
            "UV_PYTHON_DOWNLOADS": "never", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(parts["wheels"]),
            "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "XDG_CONFIG_HOME": "/nonexistent"}


def _path(parts) -> str:
    return f"{parts['nodebin']}:/usr/bin:/bin"


def _node(node, tmp_path, parts):
    ran = tmp_path / "ran.txt"
    n = node("hello.py", HELLO, env={"RAN": str(ran)}, files={"images/requirements.lock": parts["lock"]})
    n.place_snapshot()
    n.ran = ran
    return n


def _offer_uv(n, parts) -> str:
    """The ssh client's way: the wheel under the node's base dir, named by its sha256."""
    tools = n.base / "tools"
    tools.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(parts["uv"], tools / nodesetup.uv_name(parts["uv_sha"]))
    return parts["uv_sha"]


def _venv(n) -> Path:
    return n.base / "venvs" / venvsetup.lock_hash([str(n.project / "images" / "requirements.lock")])


def _run_ok(n, **kw) -> None:
    n.start(python="", **kw)
    rc, out = n.finish(timeout=300)
    assert rc == 0, out + n.setup_log() + _step_err(n)
    assert n.ran.read_text() == "ran"
    assert json.loads(n.store_result().read_text())["reason"] == "exited"


def _step_err(n) -> str:
    try:
        return (n.state / "step.err").read_text()
    except OSError:
        return ""


def test_uv_builds_the_venv_on_the_nodes_python_and_the_next_job_reuses_it(node, tmp_path, parts):
    n = _node(node, tmp_path, parts)
    sha = _offer_uv(n, parts)
    _run_ok(n, path=_path(parts), env=_env(parts), uv_sha=sha)
    log = n.setup_log()
    assert "venv with uv on" in log and "built with uv" in log, log
    venv = _venv(n)
    assert (venv / ".ready").read_text().strip() == "uv"
    # The node's own Python of the lock's minor, not a managed one; uv's cache under the base dir.
    assert "python3.11" in log.split("venv with uv on", 1)[1].splitlines()[0]
    assert (n.base / "cache" / "uv").is_dir() and not (n.base / "python").exists()
    assert (n.base / "tools" / f"uv-{sha}" / "uv").is_file()

    n.ran.unlink()
    n.store_result().unlink()
    _run_ok(n, path=_path(parts), env=_env(parts), uv_sha=sha)
    assert n.setup_log().count("built with") == 1 and "already built" in n.setup_log()


def test_pip_builds_it_when_no_uv_is_offered_or_the_offered_wheel_is_not_its_sha256(node, tmp_path, parts):
    n = _node(node, tmp_path, parts)
    _offer_uv(n, parts)
    wrong = "0" * 64
    (n.base / "tools" / nodesetup.uv_name(parts["uv_sha"])).rename(n.base / "tools" / nodesetup.uv_name(wrong))
    _run_ok(n, path=_path(parts), env=_env(parts), uv_sha=wrong)
    log = n.setup_log()
    assert "uv offered but not usable here" in log and "venv with pip on" in log, log
    assert (_venv(n) / ".ready").read_text().strip() == "pip"
    assert not (n.base / "tools" / f"uv-{wrong}").exists()  # nothing unpacked from a wheel that failed its check


@pytest.fixture
def http_store(tmp_path):
    server = start_http_store(tmp_path / "http-store")
    yield server
    server.shutdown()


def test_the_first_node_pushes_its_venv_and_a_fresh_node_unpacks_it_instead_of_installing(node, tmp_path, parts,
                                                                                           http_store):
    n = _node(node, tmp_path, parts)
    pack = f"{_venv(n).name}-{venvsetup.node_platform()}"
    url = f"{http_store.url}/{pack}.tar"
    kw = dict(path=_path(parts), env=_env(parts), uv_sha=parts["uv_sha"], uv_url=f"{http_store.url}/uv.whl",
              venv_pack=pack, venv_get_url=url, venv_put_url=url)
    shutil.copyfile(parts["uv"], http_store.root / "uv.whl")  # the store's tools/uv-<sha>.whl, fetched by URL
    _run_ok(n, **kw)
    log = n.setup_log()
    assert "no packed venv" in log and "built with uv" in log and "packed and pushed to the store" in log, log
    assert http_store.puts == [f"/{pack}.tar"]
    assert log.index("agent exited") < log.index("packed and pushed")  # after the job: it never waits for this

    # A fresh machine with the same base dir: nothing installed, no uv offered, no index it could install from.
    shutil.rmtree(n.base)
    n.place_snapshot()
    n.ran.unlink()
    n.store_result().unlink()
    fresh_env = {**_env(parts), "UV_FIND_LINKS": "/nonexistent", "PIP_FIND_LINKS": "/nonexistent"}
    _run_ok(n, **{**kw, "uv_sha": "", "uv_url": "", "env": fresh_env})
    log = n.setup_log()
    assert f"venv {pack} unpacked from the store" in log and "built with" not in log, log
    assert http_store.puts == [f"/{pack}.tar"]  # a node that did not build it does not push it


def test_a_pack_for_another_lock_or_platform_is_not_used(node, tmp_path, parts, http_store):
    n = _node(node, tmp_path, parts)
    other = f"{'f' * 16}-{venvsetup.node_platform()}"
    (http_store.root / "other.tar").write_bytes(b"not even a tar")
    _run_ok(n, path=_path(parts), env=_env(parts), venv_pack=other, venv_get_url=f"{http_store.url}/other.tar",
            venv_put_url=f"{http_store.url}/other.tar")
    log = n.setup_log()
    assert f"the store's venv is for {other}" in log and "built with" in log, log
    assert http_store.puts == []  # nor pushed under a name that is not its own


def test_a_pack_that_does_not_unpack_is_dropped_and_the_venv_built(node, tmp_path, parts, http_store):
    n = _node(node, tmp_path, parts)
    pack = f"{_venv(n).name}-{venvsetup.node_platform()}"
    (http_store.root / "pack.tar").write_bytes(b"\x28\xb5\x2f\xfd" + b"cut short" * 100)  # zstd's magic, then junk
    _run_ok(n, path=_path(parts), env=_env(parts), uv_sha=_offer_uv(n, parts), venv_pack=pack,
            venv_get_url=f"{http_store.url}/pack.tar")
    log = n.setup_log()
    assert f"packed venv {pack} did not unpack" in log and "built with uv" in log, log
    assert (_venv(n) / ".ready").read_text().strip() == "uv"


def test_an_interpreter_checked_for_this_lock_is_not_checked_again(node, tmp_path, parts):
    """A python3 that records each run: the first job runs the import check, the second finds the marker."""
    calls = tmp_path / "calls.txt"
    wrapper = tmp_path / "checked-bin" / "python3"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    n = node("hello.py", HELLO, env={"RAN": str(tmp_path / "ran.txt")})
    n.place_snapshot()
    lock = nodesetup.lock_hash(n.project)
    for _ in range(2):
        n.start(python=str(wrapper), lock_hash=lock)
        rc, out = n.finish()
        assert rc == 0, out + n.setup_log()
    checks = [c for c in calls.read_text().splitlines() if c.startswith("-c import")]
    assert checks == ["-c import pydantic, yaml"], calls.read_text()
    assert len(list((n.base / "checked").iterdir())) == 1
    # Another lock hash is another check.
    n.start(python=str(wrapper), lock_hash="0" * 16)
    assert n.finish()[0] == 0
    assert sum(c.startswith("-c import") for c in calls.read_text().splitlines()) == 2


def test_a_node_without_the_locks_python_minor_asks_uv_for_a_managed_one(node, tmp_path, parts):
    """Here the managed download is off (no network in tests), so the step fails, saying so."""
    found = subprocess.run([nodesetup.which_uv() or "uv", "python", "find", "--no-managed-python", "3.12"],
                           capture_output=True, text=True, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
    other = found.stdout.strip() if found.returncode == 0 else ""
    if not other:  # pyenv's shims hide the others from uv: an install beside this Python's own, or in pyenv's root
        # (CI's venv is made from the system's python3, not pyenv's, and its PATH has no shims)
        roots = [Path(sys._base_executable).resolve().parents[2],
                 Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"]
        near = sorted(p for root in roots for p in root.glob("3.1[02]*/bin/python3"))
        near += sorted(Path("/usr/bin").glob("python3.1[02]"))
        other = str(near[0]) if near else ""
    if not other:
        pytest.skip("no Python 3.12 here to play a node without 3.11")
    nodebin = tmp_path / "nodebin312"
    nodebin.mkdir()
    (nodebin / "python3").symlink_to(other)
    # This machine's own /usr/bin/python3.11 is hidden behind one that does not run (as a pyenv shim would not).
    (nodebin / "python3.11").write_text("#!/bin/sh\necho 'python3.11: command not found' >&2\nexit 127\n")
    (nodebin / "python3.11").chmod(0o755)
    n = _node(node, tmp_path, parts)
    sha = _offer_uv(n, parts)
    n.start(python="", path=f"{nodebin}:/usr/bin:/bin", env=_env(parts), uv_sha=sha)
    rc, out = n.finish(timeout=300)
    assert rc == 1, out
    assert "uv-managed Python 3.11 (the node has none)" in n.setup_log(), n.setup_log()
    result = json.loads(n.store_result().read_text()) if n.store_result().exists() else \
        json.loads((n.state / "result.json").read_text())
    assert result["reason"] == "setup_failed" and "step 'python'" in result["error"], result
    assert "3.11" in result["error"], result["error"]


def test_the_ssh_client_offers_uv_under_remote_dir_once(tmp_path, parts, monkeypatch):
    """Over a real sshd: the wheel lands at <remote_dir>/tools/uv-<sha256>.whl, and a second launch uploads nothing
    (same name and size); the bootstrap the box gets names that sha256 (its slot filled at start)."""
    from launcher.backends.ssh.backend import _offer_uv
    from launcher.sshclient import SshClient

    from .sshd import start_sshd

    monkeypatch.setenv("LAUNCHER_UV_WHEEL", str(parts["uv"]))
    sshd = start_sshd(tmp_path / "sshd")
    try:
        client = SshClient(sshd.target, identity=str(sshd.identity), known_hosts=str(sshd.known_hosts)).connect()
        box = tmp_path / "box"
        try:
            assert _offer_uv(client, str(box)) == parts["uv_sha"]
            placed = box / "tools" / nodesetup.uv_name(parts["uv_sha"])
            assert nodesetup.sha256_file(placed) == parts["uv_sha"]
            before = placed.stat().st_mtime_ns
            assert _offer_uv(client, str(box)) == parts["uv_sha"]
            assert placed.stat().st_mtime_ns == before
        finally:
            client.close()
    finally:
        sshd.stop()


def test_the_ssh_bootstrap_asks_for_uv_only_where_no_interpreter_is_named(tmp_path):
    from launcher.backends.slots import slots_in
    from launcher.job import Job
    from launcher.planner import make_plan

    (tmp_path / "train.py").write_text("print('hi')\n")
    for python, slots in (("", {"uv_sha"}), (sys.executable, set())):
        job = Job(script="train.py", workdir=str(tmp_path), backend="ssh", datapool="s3://b/p",
                  ssh={"host": "box", "python": python})
        plan = make_plan(job)
        assert slots_in(plan.request) == slots
        assert f"LOCK_HASH={nodesetup.lock_hash(tmp_path)}" in plan.request["bootstrap"]


def test_a_client_that_cannot_get_uv_offers_none_and_says_so(tmp_path, monkeypatch, capsys):
    """No index reachable from the client (a closed port on 127.0.0.1 here) and nothing cached: the node is offered
    no uv (it builds with pip), with a note; a $LAUNCHER_UV_WHEEL that is not a uv wheel stays an error."""
    from launcher.errors import UserError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LAUNCHER_UV_WHEEL", raising=False)
    for var, value in {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2",
                       "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_NO_INDEX": ""}.items():
        monkeypatch.setenv(var, value)
    assert nodesetup.offered_uv_wheel() is None
    err = capsys.readouterr().err
    assert err.startswith("[launcher] note: the node builds its venv with pip, not uv: cannot get uv") and \
        err.count("\n") == 1, err
    assert nodesetup.put_uv(f"file://{tmp_path / 'pool'}") == ("", "")
    assert not (tmp_path / "pool" / "tools").exists()  # nothing uploaded
    bad = tmp_path / "not-uv.whl"
    bad.write_bytes(b"x")
    monkeypatch.setenv("LAUNCHER_UV_WHEEL", str(bad))
    with pytest.raises(UserError, match="not a uv wheel file"):
        nodesetup.offered_uv_wheel()
