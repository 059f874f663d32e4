"""Scale benchmark (issue 26 item 3): launcher at the issue's sizes, each row against its peer in the same run.

Rows (pick with --rows, comma-separated; default all):

  registry  a registry of --jobs records (100 active, the rest ended), populated through SQL in launcher.registry's
            schema under a temp LAUNCHER_HOME: `launch jobs` (default view) and `launch status ID` (an ended and an
            active job), each against the `sqlite3` CLI running the equivalent query on the same file (the least a
            command that reads that file can cost). Then 1,000 expired local jobs are added and `launch down
            --expired` runs: 100 of them and the 100 active unexpired ones are real sleeping processes; the row
            checks every expired job ended, every expired process died and every unexpired one lives. Its peer:
            `kill` of 100 other sleepers plus one `sqlite3` UPDATE on a copy of the file.
  sync      --objects small objects on one moto server: the cold upload (launcher, to fill the bucket), then a
            no-op re-sync, launcher against `s5cmd sync` on the same prefix; peak RSS of each client (wait4) and
            the LIST pages launcher asked for (the server's access log).
  logs      `launch logs -f` on a --log-mb log, from a local job's file and from an S3 store (moto): time to the
            first byte, to the whole log, and peak RSS (VmHWM) against `tail -c +1 -f` (the file) and `s5cmd cat`
            (the store); `launch logs -f -n 10` against `tail -f` (its last 10 lines, then what follows).
  snapshot  a --files / --size-mb tree (mixed text and binary, committed to git; bench/scale_snapshot.py): the
            first snapshot against `git archive --format=tar.gz HEAD`, an unchanged re-launch, and the bytes one
            changed file re-sends against that file's size

    python bench/scale.py                          # every row at the issue's sizes
    python bench/scale.py --rows registry,logs     # some rows
    python bench/scale.py --objects 10000          # a smaller sync row

Targets (from the issue): jobs/status <= 0.5 s; down --expired finishes and kills nothing unexpired; no-op
re-sync / s5cmd <= 1.0, client peak RSS <= 300 MB, listing paginated; logs -f first byte <= 1 s, memory flat.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PY = sys.executable
S5CMD = shutil.which("s5cmd", path=str(Path(PY).parent)) or "s5cmd"
BUCKET = "scale"
MOTO_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true"}


class Table:
    """Rows of (row, measure, launcher, peer name, peer, target, ok), printed as markdown."""

    def __init__(self):
        self.lines: list[tuple] = []

    def add(self, row, measure, ours, peer_name, peer, target, ok):
        self.lines.append((row, measure, ours, peer_name, peer, target, "yes" if ok else "**no**"))
        print(f"  {row} | {measure}: {ours} (peer {peer_name}: {peer}) target {target}: {'ok' if ok else 'MISSED'}",
              file=sys.stderr, flush=True)

    def markdown(self) -> str:
        head = "| row | measure | launcher | peer | peer's figure | target | met |\n|---|---|---:|---|---:|---|---|"
        return head + "\n" + "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in self.lines)


def env_for(home: Path | None = None) -> dict:
    env = {**os.environ, **MOTO_ENV, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p), "COLUMNS": "200"}
    env.pop("AWS_ENDPOINT_URL", None)
    if home is not None:
        env["LAUNCHER_HOME"] = str(home)
    return env


def run_measured(cmd: list[str], env: dict, timeout: float = 3600) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB of that process, stdout); wait4 gives the child's own rusage."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [threading.Thread(target=lambda s=s, b=b: b.append(s.read()), daemon=True)
               for s, b in ((proc.stdout, out), (proc.stderr, err))]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({proc.returncode}): "
                         f"{b''.join(err).decode(errors='replace')[-2000:]}")
    return dt, usage.ru_maxrss / 1024, b"".join(out).decode(errors="replace")


def median_of(n: int, cmd: list[str], env: dict) -> tuple[float, float, str]:
    runs = [run_measured(cmd, env) for _ in range(n)]
    return (statistics.median(r[0] for r in runs), max(r[1] for r in runs), runs[-1][2])


def sleeper() -> subprocess.Popen:
    # Its own session, like a local agent; a cheap stand-in for a running job.
    return subprocess.Popen(["sleep", "36000"], start_new_session=True, stdin=subprocess.DEVNULL)


def reap(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


# ------------------------------------------------------------------------------------------------------ registry
def local_handle(home: Path, datapool: Path, job_id: str, with_state: bool = True) -> str:
    h = {"store": {"local_root": str(datapool), "experiment": "default"}, "grace_period": 0.0}
    if with_state:
        h["state_dir"] = str(home / "jobs" / job_id)
    return json.dumps(h)


def give_agent(home: Path, job_id: str, proc: subprocess.Popen) -> None:
    from launcher.proc import ProcRef, write_ref

    state = home / "jobs" / job_id
    state.mkdir(parents=True, exist_ok=True)
    write_ref(state / "agent.pid", ProcRef.of(proc.pid))


def row_registry(args, work: Path, table: Table) -> None:
    from launcher.registry import Registry

    home, datapool = work / "home", work / "datapool"
    datapool.mkdir(parents=True)
    Registry(home).check_writable()  # the schema, as launcher makes it
    db = home / "jobs.db"
    now = time.time()
    n, n_active = args.jobs, 100
    ended_states = ("succeeded", "failed", "cancelled", "timeout")
    t = time.perf_counter()
    rows = []
    for i in range(n - n_active - 1):
        jid = f"train-{i:08x}"
        created = now - 86400 * 30 + i * 20  # one every 20 s over the past weeks
        rows.append((jid, "train", "local", ended_states[i % 4], created, created + 10, created + 3600,
                     0 if i % 4 == 0 else 1, local_handle(home, datapool, jid, with_state=False)))
    # One more ended job with an id no other starts like: `launch status PREFIX` finds it by its start.
    rows.append(("sft-7f3a9c01", "sft", "local", "succeeded", now - 3600, now - 3000, now, 0,
                 local_handle(home, datapool, "sft-7f3a9c01", with_state=False)))
    active_ids = [f"live-{i:04x}" for i in range(n_active)]
    for i, jid in enumerate(active_ids):
        rows.append((jid, "live", "local", "running", now - 600 + i, None, now + 86400, None,
                     local_handle(home, datapool, jid)))
    with sqlite3.connect(db) as c:
        c.executemany("INSERT INTO jobs (id, name, backend, state, created, ended, deadline, exit_code, handle) "
                      "VALUES (?,?,?,?,?,?,?,?,?)", rows)
    procs = []
    try:
        for jid in active_ids:
            procs.append(sleeper())
            give_agent(home, jid, procs[-1])
        print(f"registry: {n} records ({n_active} active, real sleepers) in {time.perf_counter() - t:.1f}s",
              file=sys.stderr, flush=True)
        env = env_for(home)
        sq = shutil.which("sqlite3")
        ours, rss, out = median_of(3, [PY, "-m", "launcher", "jobs"], env)
        shown = out.count("\n") - 1
        peer = median_of(3, [sq, str(db), "SELECT id, name, backend, state, exit_code, created, ended, deadline "
                                          "FROM jobs ORDER BY created DESC LIMIT 50"], env)[0] if sq else float("nan")
        table.add("registry", f"`launch jobs` ({n:,} records, {shown} shown)", f"{ours:.2f} s", "sqlite3 CLI",
                  f"{peer:.3f} s", "<= 0.5 s", ours <= 0.5)
        ended_id = f"train-{(n - n_active) // 2:08x}"
        for label, jid in (("an ended job", ended_id), ("an active job", active_ids[7])):
            ours, rss, out = median_of(3, [PY, "-m", "launcher", "status", jid], env)
            peer = median_of(3, [sq, str(db), f"SELECT * FROM jobs WHERE id = '{jid}'"], env)[0] if sq else float("nan")
            table.add("registry", f"`launch status ID`, {label}", f"{ours:.2f} s", "sqlite3 CLI", f"{peer:.3f} s",
                      "<= 0.5 s", ours <= 0.5)
        ours, rss, out = median_of(3, [PY, "-m", "launcher", "status", "sft-7f3a"], env)
        table.add("registry", "`launch status PREFIX` (an id's start)", f"{ours:.2f} s", "sqlite3 CLI", f"{peer:.3f} s",
                  "<= 0.5 s", ours <= 0.5)

        # --- down --expired over 1,000 expired local jobs
        n_exp, n_exp_live = 1000, 100
        exp_ids = [f"old-{i:04x}" for i in range(n_exp)]
        rows = [(jid, "old", "local", "running", now - 7200 + i, None, now - 60, None,
                 local_handle(home, datapool, jid)) for i, jid in enumerate(exp_ids)]
        with sqlite3.connect(db) as c:
            c.executemany("INSERT INTO jobs (id, name, backend, state, created, ended, deadline, exit_code, handle) "
                          "VALUES (?,?,?,?,?,?,?,?,?)", rows)
        exp_procs = []
        for jid in exp_ids[:n_exp_live]:  # the rest: a state dir with no agent (a job whose agent died: lost)
            exp_procs.append(sleeper())
            give_agent(home, jid, exp_procs[-1])
        procs += exp_procs
        dt, rss, out = run_measured([PY, "-m", "launcher", "down", "--expired"], env)
        ended = set(out.split())
        time.sleep(0.2)
        exp_dead = sum(p.poll() is not None for p in exp_procs)
        live_alive = sum(p.poll() is None for p in procs[:n_active])
        with sqlite3.connect(db) as c:
            still = c.execute("SELECT count(*) FROM jobs WHERE id LIKE 'old-%' AND state IN "
                              "('submitting','pending','running')").fetchone()[0]
            unexpired = c.execute("SELECT count(*) FROM jobs WHERE id LIKE 'live-%' "
                                  "AND state = 'running'").fetchone()[0]
        ok = (ended == set(exp_ids) and exp_dead == n_exp_live and live_alive == n_active and still == 0
              and unexpired == n_active)
        # The peer: the least that ends them: kill 100 other sleepers, one UPDATE on a copy of the file.
        others = [sleeper() for _ in range(n_exp_live)]
        procs += others
        copy = work / "peer.db"
        shutil.copy(db, copy)
        pids = " ".join(str(p.pid) for p in others)
        peer = run_measured(["sh", "-c", f"kill {pids}; {sq} {copy} \"UPDATE jobs SET state='cancelled', "
                                         f"ended={now} WHERE deadline < {now} AND state='running'\""], env)[0]
        table.add("registry", f"`launch down --expired` ({n_exp:,} expired, {n_exp_live} of them live processes; "
                  f"{n_active} unexpired live)", f"{dt:.2f} s", "kill + sqlite3 UPDATE", f"{peer:.2f} s",
                  "finishes, ends all expired, kills nothing else",
                  ok)
        if not ok:
            print(f"  down --expired: ended {len(ended & set(exp_ids))}/{n_exp} (+{len(ended - set(exp_ids))} others), "
                  f"expired processes dead {exp_dead}/{n_exp_live}, unexpired alive {live_alive}/{n_active}, "
                  f"still active expired {still}, unexpired running {unexpired}", file=sys.stderr)
    finally:
        reap(procs)


# ------------------------------------------------------------------------------------------------------ sync
def row_sync(args, work: Path, table: Table) -> None:
    from tests.motoserver import start_moto

    server = start_moto(work)
    try:
        server.client().create_bucket(Bucket=BUCKET)
        src = work / "tree"
        t = time.perf_counter()
        for i in range(args.objects):
            d = src / "data" / f"shard{i % 100:03d}"
            if i < 100:
                d.mkdir(parents=True)
            (d / f"f{i:07d}.txt").write_bytes(b"%07d " % i + os.urandom(64).hex().encode())
        print(f"sync: {args.objects} files in {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)
        env = env_for(work / "home")
        url = f"s3://{BUCKET}/tree"
        up = [PY, "-m", "launcher", "sync", "up", "--root", str(src), "--datapool", url, "--endpoint-url",
              server.endpoint]
        cold, cold_rss, _ = run_measured(up, env)
        print(f"sync: cold upload {cold:.1f}s, peak RSS {cold_rss:.0f} MB", file=sys.stderr, flush=True)
        server.mark()
        ours, rss, _ = run_measured(up, env)
        pages = sum(1 for m, path, _ in server.requests() if m == "GET" and "list-type=2" in path)
        s5 = [S5CMD, "--endpoint-url", server.endpoint, "sync", f"{src}/", f"{url}/"]
        peer, peer_rss, _ = run_measured(s5, env)
        # A second launcher run: the first one after a cold upload may still fill the hash cache.
        ours2, rss2, _ = run_measured(up, env)
        ours, rss = min(ours, ours2), max(rss, rss2)
        table.add("sync", f"no-op re-sync, {args.objects:,} objects (cold upload {cold:.0f} s)", f"{ours:.2f} s",
                  "s5cmd sync", f"{peer:.2f} s", "ratio <= 1.0", ours <= peer)
        table.add("sync", "no-op re-sync: client peak RSS", f"{rss:.0f} MB", "s5cmd sync", f"{peer_rss:.0f} MB",
                  "<= 300 MB", rss <= 300)
        want = -(-args.objects // 1000)
        table.add("sync", "no-op re-sync: LIST pages (1,000 keys each)", str(pages), "(expected)", str(want),
                  "paginated", pages == want)
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------------ logs
def vm_hwm(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def follow_measure(cmd: list[str], env: dict, want: int | None, limit: float = 120.0):
    """Start a follower; (first byte s, all `want` bytes s or None, peak RSS MB). The job never ends, so the follower
    is stopped once it printed `want` bytes (or, without `want`, a second after its first byte)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    fd = proc.stdout.fileno()
    first = done = None
    got = 0
    hwm = 0.0
    try:
        while time.perf_counter() - t < limit:
            if want is None and first is not None and time.perf_counter() - t > first + 1.0:
                break
            if not select.select([fd], [], [], 0.2)[0]:
                hwm = max(hwm, vm_hwm(proc.pid))
                continue
            data = os.read(fd, 1 << 20)
            if not data:
                break
            got += len(data)
            if first is None:
                first = time.perf_counter() - t
            hwm = max(hwm, vm_hwm(proc.pid))
            if want is not None and got >= want:
                done = time.perf_counter() - t
                break
        hwm = max(hwm, vm_hwm(proc.pid))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    return first, done, hwm


def write_log(path: Path, mb: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = b"step 000000 loss 1.2345 lr 3e-4 tokens/s 123456 " + b"x" * 60 + b"\n"
    block = line * ((1 << 20) // len(line))
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(block)
    return path.stat().st_size


def row_logs(args, work: Path, table: Table) -> None:
    from launcher.registry import Registry

    home, datapool = work / "home", work / "datapool"
    Registry(home).check_writable()
    now = time.time()
    procs = [sleeper(), sleeper()]
    server = None
    try:
        jid = "logfile-0001"
        log = datapool / "experiments" / "default" / "reports" / "jobs" / jid / "log.txt"
        size = write_log(log, args.log_mb)
        rows = [(jid, "logs", "local", "running", now, None, now + 86400, None, local_handle(home, datapool, jid))]
        give_agent(home, jid, procs[0])
        with sqlite3.connect(home / "jobs.db") as c:
            c.executemany("INSERT INTO jobs (id, name, backend, state, created, ended, deadline, exit_code, handle) "
                          "VALUES (?,?,?,?,?,?,?,?,?)", rows)
        env = env_for(home)
        mb = size / 2**20
        first, done, hwm = follow_measure([PY, "-m", "launcher", "logs", "-f", jid], env, size)
        pfirst, pdone, phwm = follow_measure(["tail", "-c", "+1", "-f", str(log)], env, size)
        fmt = (lambda s: "-" if s is None else f"{s:.2f} s")
        table.add("logs", f"`logs -f`, local file ({mb:,.0f} MB): first byte", fmt(first), "tail -c +1 -f", fmt(pfirst),
                  "<= 1 s", first is not None and first <= 1.0)
        table.add("logs", "`logs -f`, local file: whole log out", fmt(done), "tail -c +1 -f", fmt(pdone), "-", True)
        table.add("logs", "`logs -f`, local file: peak RSS", f"{hwm:.0f} MB", "tail -c +1 -f", f"{phwm:.0f} MB",
                  "flat (< 100 MB)", hwm < 100)
        first, _, hwm = follow_measure([PY, "-m", "launcher", "logs", "-f", "-n", "10", jid], env, None)
        pfirst, _, phwm = follow_measure(["tail", "-f", str(log)], env, None)
        table.add("logs", "`logs -f -n 10`, local file: first byte", fmt(first), "tail -f", fmt(pfirst), "<= 1 s",
                  first is not None and first <= 1.0)
        table.add("logs", "`logs -f -n 10`, local file: peak RSS", f"{hwm:.0f} MB", "tail -f", f"{phwm:.0f} MB",
                  "flat (< 100 MB)", hwm < 100)

        # --- the same log from an S3 store (a local job whose datapool is s3://; the store's copy is what -f reads)
        from launcher.datapool.base import Entry
        from launcher.datapool.s3 import S3Store
        from tests.motoserver import start_moto

        server = start_moto(work)
        server.client().create_bucket(Bucket=BUCKET)
        jid2 = "logstore-0001"
        rel = f"experiments/default/reports/jobs/{jid2}/log.txt"
        os.environ.update(MOTO_ENV)
        store = S3Store(BUCKET, "pool", endpoint_url=server.endpoint, part_size=64 << 20, threshold=64 << 20)
        t = time.perf_counter()
        store.put_file(log, rel, Entry(rel, size, 0.0))
        store.close()
        print(f"logs: {mb:,.0f} MB into moto in {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)
        give_agent(home, jid2, procs[1])
        h = {"store": {"store_url": f"s3://{BUCKET}/pool", "experiment": "default", "endpoint_url": server.endpoint},
             "grace_period": 0.0, "state_dir": str(home / "jobs" / jid2)}
        with sqlite3.connect(home / "jobs.db") as c:
            c.execute("INSERT INTO jobs (id, name, backend, state, created, ended, deadline, exit_code, handle) "
                      "VALUES (?,?,?,?,?,?,?,?,?)", (jid2, "logs", "local", "running", now, None, now + 86400, None,
                                                     json.dumps(h)))
        first, done, hwm = follow_measure([PY, "-m", "launcher", "logs", "-f", jid2], env, size, limit=300)
        s5 = [S5CMD, "--endpoint-url", server.endpoint, "cat", f"s3://{BUCKET}/pool/{rel}"]
        pfirst, pdone, phwm = follow_measure(s5, env, size, limit=300)
        table.add("logs", f"`logs -f`, S3 store ({mb:,.0f} MB): first byte", fmt(first), "s5cmd cat", fmt(pfirst),
                  "<= 1 s", first is not None and first <= 1.0)
        table.add("logs", "`logs -f`, S3 store: whole log out", fmt(done), "s5cmd cat", fmt(pdone), "-", True)
        table.add("logs", "`logs -f`, S3 store: peak RSS", f"{hwm:.0f} MB", "s5cmd cat", f"{phwm:.0f} MB",
                  "flat (< 100 MB)", hwm < 100)
    finally:
        reap(procs)
        if server is not None:
            server.stop()


# ------------------------------------------------------------------------------------------------------ snapshot
def row_snapshot(args, work: Path, table: Table) -> None:
    """bench/scale_snapshot.py's rows (it measures in a child process on a frozen copy of launcher)."""
    sys.path.insert(0, str(REPO / "bench"))
    import scale_snapshot

    for r in scale_snapshot.rows(args.files, args.size_mb, work):
        if r["ratio"] is None:  # the tree's build: not a measure
            continue
        if r["row"] == "first snapshot":
            table.add("snapshot", f"first snapshot ({r['detail']})", f"{r['launcher_s']:.1f} s", r["peer"],
                      f"{r['peer_s']:.1f} s", "ratio <= 1.0", r["ratio"] <= 1.0)
        elif r["row"] == "unchanged re-launch":
            table.add("snapshot", "unchanged re-launch", f"{r['launcher_s']:.2f} s", "-", "-", "<= 1 s",
                      r["launcher_s"] <= 1.0)
        else:
            table.add("snapshot", f"one changed file ({r['detail']})", f"{r['ratio']:,.1f}x the file", r["peer"],
                      "1x", "<= 1x the file", r["ratio"] <= 1.0)


ROWS = {"registry": row_registry, "sync": row_sync, "logs": row_logs, "snapshot": row_snapshot}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    ap.add_argument("--jobs", type=int, default=100_000, help="registry records (registry row)")
    ap.add_argument("--objects", type=int, default=100_000, help="small objects (sync row)")
    ap.add_argument("--log-mb", type=int, default=1024, help="log size in MB (logs row)")
    ap.add_argument("--files", type=int, default=50_000, help="files in the tree (snapshot row)")
    ap.add_argument("--size-mb", type=int, default=1024, help="the tree's size in MB (snapshot row)")
    args = ap.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    table = Table()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "launcher"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for name in rows:
        work = Path(tempfile.mkdtemp(prefix=f"scale-{name}-"))
        try:
            ROWS[name](args, work, table)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{started}; commit {commit}{' + uncommitted changes' if dirty else ''}; nproc={os.cpu_count()}, "
          f"Python {platform.python_version()}, {platform.system()} {platform.machine()}; load average at start "
          f"{load}, at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(table.markdown())


if __name__ == "__main__":
    main()
