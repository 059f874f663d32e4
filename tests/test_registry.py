"""The job registry: ids are looked up literally (exact, or an unambiguous prefix of plain id characters), and a
registry that cannot be written is one `error:` line naming the file and the fix. Real `launch` subprocesses
against records written through launcher.registry.Registry."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.errors import UserError
from launcher.registry import ACTIVE_STATES, Registry
from . import unprivileged
from .user_errors import one_error_line as _one_error_line

NOBODY = unprivileged.NOBODY


@pytest.fixture
def registry(launcher_env) -> Registry:
    return Registry(Path(launcher_env["LAUNCHER_HOME"]))


def _states(registry) -> dict[str, str]:
    return {rec.id: rec.state for rec in registry.list(1000)}


def test_sql_wildcards_and_empty_ids_match_nothing(launch, registry):
    # One job only: `LIKE '%'` and `LIKE '' || '%'` used to match it, and `launch down %` cancelled it.
    registry.add("train-3fa9c1", "train", "local", None, {"pid": 2 ** 22 + 7}, state="running")
    for args in (["down", "%"], ["status", "%"], ["status", ""], ["status", "_rain-3fa9c1"], ["status", "train%"],
                 ["logs", "%"], ["status", "TRAIN-3FA9C1"], ["status", "train-3fa9c1 "]):
        _one_error_line(launch(*args), "bad job id", "launch jobs")
    _one_error_line(launch("down", ""))  # the CLI asks for a JOB id before the registry is asked
    assert _states(registry) == {"train-3fa9c1": "running"}
    with pytest.raises(UserError, match="bad job id"):
        registry.get("%")


def test_a_legacy_non_ascii_id_is_still_reachable_exactly(launch, registry):
    registry.add("my-script-ü-3fa9c1", "my-script-ü", "local", None, {}, state="running")
    registry.finish("my-script-ü-3fa9c1", "succeeded", 0)
    r = launch("status", "my-script-ü-3fa9c1")
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "succeeded (exit code 0)", r.stderr
    _one_error_line(launch("status", "my-script-ü"), "bad job id")  # as a prefix: not plain id characters


def test_exact_id_and_unambiguous_prefix(launch, registry):
    registry.add("eval-aaaaaa", "eval", "local", None, {}, state="running")
    registry.finish("eval-aaaaaa", "succeeded", 0)
    registry.add("eval-aaaaaa-2", "eval", "local", None, {}, state="running")
    registry.finish("eval-aaaaaa-2", "succeeded", None)
    r = launch("status", "eval-aaaaaa")  # exact beats being a prefix of eval-aaaaaa-2
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "succeeded (exit code 0)"
    r = launch("status", "eval-aaaaaa-")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "succeeded"
    assert registry.get("eval-aaaaaa-").id == "eval-aaaaaa-2"
    _one_error_line(launch("status", "nope"), "unknown job 'nope'")


def test_ambiguous_prefix_lists_up_to_five(launch, registry):
    ids = [f"sweep-{i:06x}" for i in range(7)]
    for jid in ids:
        registry.add(jid, "sweep", "local", None, {}, state="running")
        registry.finish(jid, "succeeded", 0)
    line = _one_error_line(launch("status", "sweep-"), "ambiguous", "7 job ids", "and 2 more", "give more")
    assert sum(jid in line for jid in ids) == 5
    _one_error_line(launch("down", "sweep-00000"), "ambiguous")
    assert _states(registry) == {jid: "succeeded" for jid in ids}  # down touched nothing
    assert registry.get("sweep-000003").id == "sweep-000003"


def test_submitting_is_active_and_a_final_state_sticks(registry):
    assert "submitting" in ACTIVE_STATES
    registry.add("a-000001", "a", "local", None, {}, state="submitting")
    assert [r.id for r in registry.active()] == ["a-000001"]
    registry.update("a-000001", state="running", handle={"pid": 1})
    rec = registry.get("a-000001")
    assert (rec.state, rec.handle) == ("running", {"pid": 1})

    # Cancelled while still submitting: the launch path's later update(state="running") must not revive it.
    registry.add("b-000002", "b", "local", None, {}, state="submitting")
    registry.finish("b-000002", "cancelled", None)
    registry.update("b-000002", state="running", handle={"pid": 2})
    rec = registry.get("b-000002")
    assert (rec.state, rec.handle) == ("cancelled", {"pid": 2})
    with pytest.raises(ValueError):
        registry.add("c-000003", "c", "local", None, {}, state="bogus")


def _garbage(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "jobs.db").write_bytes(b"not a database, just bytes\n" * 400)


def _a_directory(home: Path) -> None:
    (home / "jobs.db").mkdir(parents=True)


def _home_is_a_file(home: Path) -> None:
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("x")


@pytest.mark.parametrize("breakage,words", [
    (_garbage, ["not a valid database", "mv "]),
    (_a_directory, ["is a directory", "remove or rename"]),
    (_home_is_a_file, ["is a file", "LAUNCHER_HOME"]),
], ids=["garbage", "directory", "home-is-a-file"])
def test_unusable_registry_is_a_user_error(launch, launcher_env, breakage, words):
    home = Path(launcher_env["LAUNCHER_HOME"])
    breakage(home)
    reg = Registry(home)
    with pytest.raises(UserError) as info:
        reg.check_writable()
    assert str(home) in str(info.value) and all(w in str(info.value) for w in words), info.value
    with pytest.raises(UserError):
        reg.add("x-000001", "x", "local", None, {}, state="submitting")
    if breakage is not _home_is_a_file:  # no registry there means no jobs: `status` says "unknown job"
        _one_error_line(launch("status", "x-000001"), str(home / "jobs.db"), *words)


def test_a_healthy_registry_passes_the_check_and_keeps_nothing_of_it(registry):
    registry.check_writable()
    assert registry.list() == []
    registry.add("a-000001", "a", "local", None, {})
    registry.check_writable()
    assert [r.id for r in registry.list()] == ["a-000001"]


_CHECK = """
import sys
import time
from pathlib import Path
from launcher.errors import UserError
from launcher.registry import Registry
reg = Registry(Path(sys.argv[1]))
for call in (reg.check_writable, lambda: reg.add("x-000001", "x", "local", None, {}, state="submitting")):
    try:
        call()
        print("ok")
    except UserError as exc:
        print(f"error: {exc}")
"""


@pytest.mark.parametrize("case", ["home-read-only", "db-read-only", "parent-read-only"])
def test_read_only_registry_is_a_user_error(tmp_path, launcher_env, case):
    """Root ignores permission bits: the check runs as nobody against directories owned by root."""
    prefix = unprivileged.prefix()
    for p in (tmp_path, *tmp_path.parents):
        if p in (Path("/tmp"), Path("/")):
            break
        if prefix:
            p.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    if case == "db-read-only":
        Registry(home).check_writable()  # a registry owned by someone else, read-only to us
        if prefix:
            os.chown(home, NOBODY, NOBODY)
        (home / "jobs.db").chmod(0o444)
        want = [str(home / "jobs.db"), "writable"]
    elif case == "home-read-only":
        home.chmod(0o555)
        want = [str(home), "writable", "LAUNCHER_HOME"]
    else:
        home.rmdir()
        tmp_path.chmod(0o555)
        want = [str(tmp_path), "writable", "LAUNCHER_HOME"]
    try:
        r = subprocess.run([*prefix, sys.executable, "-c", _CHECK, str(home)], env=launcher_env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    finally:
        tmp_path.chmod(0o755)
        if home.exists():
            home.chmod(0o755)
    if r.returncode != 0 and "ModuleNotFoundError" in r.stderr:
        pytest.skip(f"cannot run the launcher as an unprivileged user here: {r.stderr.strip()[-200:]}")
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and r.returncode == 0, (r.stdout, r.stderr)
    for line in lines:
        assert line.startswith("error: job registry ") and all(w in line for w in want), line
    assert not (home / "jobs.db").exists() or case == "db-read-only"
    if case == "db-read-only":
        db = sqlite3.connect(home / "jobs.db")
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
        db.close()


@pytest.mark.parametrize("breakage", [_garbage, _a_directory], ids=["garbage", "directory"])
def test_launch_with_an_unusable_registry_starts_nothing(launch, launcher_env, project, breakage):
    """The one launch path checks the registry before the backend starts anything."""
    home = Path(launcher_env["LAUNCHER_HOME"])
    breakage(home)
    marker = project / "ran.txt"
    (project / "touch.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    for args in ([], ["--detach"]):
        r = launch(*args, "touch.py")
        _one_error_line(r, str(home / "jobs.db"))
    time.sleep(1)  # a detached agent, had one started, would have run by now
    assert not marker.exists() and not (project / "datapool").exists()
