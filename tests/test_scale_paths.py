"""The paths bench/scale.py measures (issue 26 item 3), kept right: a big registry read through SQL filters and the
primary key, the sweeper over expired local jobs with real processes, and logs read from the store a piece at a time
(and, with --tail, from where the last lines start). Real files, real processes, a real moto server; no timings."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from launcher import api, joblog
from launcher.proc import ProcRef, write_ref
from launcher.registry import Registry

from .motoserver import MOTO_ENV, moto_with_bucket

BUCKET = "scale-paths"
COLS = "id, name, backend, state, created, ended, deadline, exit_code, handle"


def _handle(home: Path, pool: Path, job_id: str, **store) -> str:
    return json.dumps({"store": store or {"local_root": str(pool), "experiment": "default"}, "grace_period": 0.0,
                       "state_dir": str(home / "jobs" / job_id)})


def _insert(home: Path, rows) -> None:
    Registry(home).check_writable()
    with sqlite3.connect(home / "jobs.db") as c:
        c.executemany(f"INSERT INTO jobs ({COLS}) VALUES (?,?,?,?,?,?,?,?,?)", rows)


def _sleeper(home: Path, job_id: str, procs: list) -> subprocess.Popen:
    """A real process recorded as the job's agent (the local backend's pid file)."""
    p = subprocess.Popen(["sleep", "600"], start_new_session=True)
    procs.append(p)
    (home / "jobs" / job_id).mkdir(parents=True, exist_ok=True)
    write_ref(home / "jobs" / job_id / "agent.pid", ProcRef.of(p.pid))
    return p


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.fixture
def home(launcher_env, monkeypatch) -> Path:
    monkeypatch.setenv("LAUNCHER_HOME", launcher_env["LAUNCHER_HOME"])
    return Path(launcher_env["LAUNCHER_HOME"])


# ---------------------------------------------------------------------------------------------------- registry
def test_filtered_lists_and_expired_come_from_sql_as_they_came_from_python(home, tmp_path):
    now = time.time()
    states = ("succeeded", "failed", "running", "lost", "cancelled", "pending")
    rows = [(f"j-{i:04d}", "j", ("local", "ssh")[i % 2], states[i % len(states)], now - 1000 + i, None,
             now + (-10 if i % 3 == 0 else 10) if i % 5 else None, None, "{}") for i in range(300)]
    _insert(home, rows)
    reg = Registry(home)
    everything = reg.list(None)
    assert [r.id for r in everything] == [f"j-{i:04d}" for i in reversed(range(300))]  # newest first
    assert [r.id for r in reg.list()] == [r.id for r in everything[:50]]  # the default view: the 50 newest
    for st, be, limit in (({"failed"}, None, 50), ({"running", "pending"}, "ssh", None), (None, "local", 7)):
        want = [r.id for r in everything if (st is None or r.state in st) and (be is None or r.backend == be)]
        assert [r.id for r in reg.list(limit, states=st, backend=be)] == (want if limit is None else want[:limit])
    want = [r.id for r in everything if r.deadline is not None and r.deadline < now
            and r.state in ("submitting", "pending", "running", "lost")]
    assert want and [r.id for r in reg.expired(now)] == want


def test_an_id_prefix_is_found_by_range_and_still_compared_literally(home):
    now = time.time()
    ids = ["abc-9z0", "abc-9z1", "abd-000", "abc-a00", "abc9", "ab-zzz", "abz-1"]
    _insert(home, [(i, "x", "local", "succeeded", now + n, now, None, 0, "{}") for n, i in enumerate(ids)])
    reg = Registry(home)
    assert reg.get("abc-9z0").id == "abc-9z0"
    assert reg.get("abd").id == "abd-000"
    assert reg.get("abc-a").id == "abc-a00"
    assert reg.get("abc9").id == "abc9"
    assert reg.get("ab-").id == "ab-zzz"
    assert reg.get("abz").id == "abz-1"  # the last character 'z': the range ends at '{'
    with pytest.raises(Exception, match="ambiguous: it starts 2 job ids"):
        reg.get("abc-9z")
    with pytest.raises(Exception, match="ambiguous: it starts 4 job ids"):
        reg.get("abc")
    with pytest.raises(Exception, match="unknown job"):
        reg.get("abc-9y")


def test_the_kept_connection_follows_the_file_and_is_not_used_after_fork(home):
    reg = Registry(home)
    reg.add("a-000001", "a", "local", None, {})
    assert [r.id for r in reg.list()] == ["a-000001"]
    for suffix in ("", "-wal", "-shm"):  # the registry removed: the next call opens a new, empty one
        Path(f"{reg.path}{suffix}").unlink(missing_ok=True)
    assert reg.list() == []
    Registry(home).add("b-000002", "b", "local", None, {})
    assert [r.id for r in Registry(home).list()] == ["b-000002"]
    pid = os.fork()
    if pid == 0:  # a forked child (the local backend forks its agent) records through its own connection
        try:
            Registry(home).finish("b-000002", "succeeded", 0)
            Registry(home).add("c-000003", "c", "local", None, {})
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert [(r.id, r.state) for r in Registry(home).list()] == [("c-000003", "running"), ("b-000002", "succeeded")]
    fresh = sqlite3.connect(reg.path)  # and the file itself holds it, as another process sees it
    assert fresh.execute("SELECT count(*) FROM jobs").fetchone() == (2,)
    fresh.close()


def test_jobs_default_view_and_filters_on_a_big_registry(launch, home, tmp_path, procs):
    """The default view still shows the newest 50 with the active ones refreshed; --state and --backend filter."""
    now = time.time()
    pool = tmp_path / "pool"
    rows = [(f"done-{i:05d}", "done", "local", ("succeeded", "failed")[i % 2], now - 5000 + i, now - 5000 + i + 1,
             None, i % 2, _handle(home, pool, f"done-{i:05d}")) for i in range(2000)]
    rows += [(f"live-{i}", "live", "local", "running", now - 100 + i, None, now + 3600, None,
              _handle(home, pool, f"live-{i}")) for i in range(3)]
    rows += [("gone-1", "gone", "local", "running", now - 50, None, now + 3600, None, _handle(home, pool, "gone-1"))]
    _insert(home, rows)
    for i in range(3):
        _sleeper(home, f"live-{i}", procs)
    out = json.loads(launch("jobs", "--json").stdout)
    want = ["gone-1", "live-2", "live-1", "live-0"] + [f"done-{i:05d}" for i in range(1999, 1953, -1)]
    assert [j["job_id"] for j in out] == want
    states = {j["job_id"]: j["state"] for j in out}
    assert states["gone-1"] == "lost" and states["live-0"] == "running"  # refreshed: its agent never ran
    table = launch("jobs").stdout.splitlines()
    assert table[0].split()[0] == "ID" and len(table) == 51  # the header, then the same 50 rows
    assert [line.split()[0] for line in table[1:]] == want
    failed = json.loads(launch("jobs", "--json", "--state", "failed", "--limit", "3").stdout)
    assert [j["job_id"] for j in failed] == ["done-01999", "done-01997", "done-01995"]
    assert json.loads(launch("jobs", "--json", "--backend", "ssh").stdout) == []
    assert launch("status", "done-00007").stdout.startswith("failed (exit code 1)")
    assert launch("status", "done-0000").returncode == 2  # ambiguous: ten ids start so


def test_down_expired_ends_every_expired_local_job_and_nothing_else(launch, home, tmp_path, procs):
    now = time.time()
    pool = tmp_path / "pool"
    rows = [(f"old-{i:03d}", "old", "local", "running", now - 500 + i, None, now - 60, None,
             _handle(home, pool, f"old-{i:03d}")) for i in range(40)]
    rows += [(f"new-{i}", "new", "local", "running", now - 10 + i, None, now + 3600, None,
              _handle(home, pool, f"new-{i}")) for i in range(3)]
    rows += [(f"fin-{i}", "fin", "local", "succeeded", now - 900, now - 800, now - 700, 0,
              _handle(home, pool, f"fin-{i}")) for i in range(5)]
    _insert(home, rows)
    expired = [_sleeper(home, f"old-{i:03d}", procs) for i in range(5)]  # the rest: agents long gone (lost)
    alive = [_sleeper(home, f"new-{i}", procs) for i in range(3)]
    dry = launch("down", "--expired", "--dry-run")
    assert sorted(dry.stdout.split()) == [f"old-{i:03d}" for i in range(40)]
    assert all(p.poll() is None for p in expired)
    out = launch("down", "--expired")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == [f"old-{i:03d}" for i in range(40)]
    for p in expired:
        p.wait(timeout=10)  # ended (the sweeper signalled it)
    assert all(p.poll() is None for p in alive)
    recs = {r.id: r.state for r in Registry(home).list(None)}
    assert {recs[f"old-{i:03d}"] for i in range(5)} == {"cancelled"}
    assert {recs[f"old-{i:03d}"] for i in range(5, 40)} == {"lost"}
    assert [recs[f"new-{i}"] for i in range(3)] == ["running"] * 3
    assert [recs[f"fin-{i}"] for i in range(5)] == ["succeeded"] * 5
    again = launch("down", "--expired")  # each lost job is reaped once
    assert again.stdout.strip() == "no expired jobs"


# ---------------------------------------------------------------------------------------------------- logs
@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from moto_with_bucket(tmp_path_factory, BUCKET)


def _log(n_lines: int) -> bytes:
    return b"".join(b"line %06d %s\n" % (i, b"x" * (i % 37)) for i in range(n_lines))


def _job_with_log(home, tmp_path, procs, data: bytes, store: str = "file", moto=None, job_id="logjob-1") -> str:
    pool = tmp_path / "pool"
    if store == "file":
        log = pool / "experiments" / "default" / "reports" / "jobs" / job_id / "log.txt"
        log.parent.mkdir(parents=True)
        log.write_bytes(data)
        handle = _handle(home, pool, job_id)
    else:
        rel = f"pool-{job_id}/experiments/default/reports/jobs/{job_id}/log.txt"
        moto.client().put_object(Bucket=BUCKET, Key=rel, Body=data)
        handle = _handle(home, pool, job_id, store_url=f"s3://{BUCKET}/pool-{job_id}", experiment="default",
                         endpoint_url=moto.endpoint)
    _insert(home, [(job_id, "log", "local", "running", time.time(), None, time.time() + 3600, None, handle)])
    _sleeper(home, job_id, procs)  # an active job: `logs -f` would follow it
    return job_id


@pytest.mark.parametrize("store", ["file", "s3"])
def test_the_store_log_is_read_a_piece_at_a_time(home, tmp_path, procs, monkeypatch, store, request):
    moto = request.getfixturevalue("moto") if store == "s3" else None
    for k, v in MOTO_ENV.items():
        monkeypatch.setenv(k, v)
    data = _log(5000)
    job_id = _job_with_log(home, tmp_path, procs, data, store, moto, job_id=f"piece-{store}")
    monkeypatch.setattr(joblog, "LOG_PIECE", 10_000)
    rec, _, handle = api._handle(job_id)
    pieces = list(joblog.tail_store_log(handle, follow=False, offset=1234))
    assert b"".join(pieces) == data[1234:]
    assert [len(p) for p in pieces[:-1]] == [10_000] * (len(pieces) - 1) and len(pieces) > 5
    follower = joblog.tail_store_log(handle, follow=False)
    assert next(follower) == data[:10_000]
    follower.close()  # left after one piece: what comes next is not disturbed by the half-read GET
    assert b"".join(joblog.tail_store_log(handle, follow=False, offset=len(data) - 5)) == data[-5:]
    js = api._jobstore(handle)
    try:
        assert list(js.pieces("log.txt", len(data))) == [] and list(js.pieces("nope.txt")) == []
        assert js.size("log.txt") == len(data) and js.size("nope.txt") is None
        assert js.read("log.txt", 100, 50) == data[100:150]
        assert js.read("log.txt", len(data) - 10, 50) == data[-10:]
        assert js.read("log.txt", len(data)) == b""
        assert js.read("log.txt") == data
    finally:
        js.close()


@pytest.mark.parametrize("store", ["file", "s3"])
def test_tail_reads_from_where_the_last_lines_start(home, tmp_path, procs, monkeypatch, store, request):
    moto = request.getfixturevalue("moto") if store == "s3" else None
    for k, v in MOTO_ENV.items():
        monkeypatch.setenv(k, v)
    data = _log(50_000)  # ~1.6 MB: the last lines are found in the first 64 KiB read back from the end
    job_id = _job_with_log(home, tmp_path, procs, data, store, moto, job_id=f"tail-{store}")
    lines = data.decode().splitlines()
    for n in (0, 1, 3, 200):
        start = joblog._tail_start(job_id, n)
        assert data[start:].decode().splitlines() == (lines[-n:] if n else [])
        assert list(api.log_lines(job_id, tail=n)) == (lines[-n:] if n else [])
    assert joblog._tail_start(job_id, 60_000) == 0  # more lines than it has: all of it
    assert list(api.log_lines(job_id, tail=60_000)) == lines


def test_tail_of_a_log_without_a_last_newline_and_of_no_log(home, tmp_path, procs):
    data = b"a\nb\r\nc"
    job_id = _job_with_log(home, tmp_path, procs, data)
    assert list(api.log_lines(job_id, tail=2)) == ["b", "c"]
    assert joblog._tail_start(job_id, 1) == len(data) - 1
    (tmp_path / "pool" / "experiments" / "default" / "reports" / "jobs" / job_id / "log.txt").unlink()
    assert joblog._tail_start(job_id, 5) == 0 and list(api.log_lines(job_id, tail=5)) == []


def test_the_kept_connection_serves_every_thread(home):
    import threading

    Registry(home).add("main-000001", "m", "local", None, {})
    errors = []

    def worker(n):
        try:
            for i in range(20):
                Registry(home).add(f"t{n}-{i:06d}", "t", "local", None, {})
                Registry(home).get(f"t{n}-{i:06d}")
        except Exception as exc:  # noqa: BLE001 - collected for the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(Registry(home).list(None)) == 81
