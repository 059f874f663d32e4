"""How long `launch` takes before it does anything: `launch --help` and `launch --dry-run` against `python -c pass`.

    python bench/cli_startup.py [--runs 10]

Prints the median wall time of each over N runs and its ratio to bare interpreter start-up.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def median_seconds(argv: list[str], runs: int, cwd: str, env: dict) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "train.py").write_text("print('hi')\n")
        env = {**os.environ, "LAUNCHER_HOME": str(Path(tmp, "home"))}
        py = sys.executable
        rows = [
            ("python -c pass", [py, "-c", "pass"]),
            ("launch --help", [py, "-m", "launcher", "--help"]),
            ("launch --dry-run --gpu A100 train.py", [py, "-m", "launcher", "--dry-run", "--gpu", "A100", "train.py"]),
        ]
        results = [(name, median_seconds(argv, ns.runs, tmp, env)) for name, argv in rows]
    base = results[0][1]
    print(f"median of {ns.runs} runs, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"| {'command':<40} | {'median s':>9} | {'x python -c pass':>16} |")
    print(f"| {'-' * 40} | {'-' * 9}:| {'-' * 16}:|")
    for name, seconds in results:
        print(f"| {name:<40} | {seconds:>9.3f} | {seconds / base:>16.1f} |")


if __name__ == "__main__":
    main()
