"""What `launch` adds to a script: a no-op (`pass`) through `launch` against running it without launcher.

    python bench/launch_overhead.py [--runs 7] [--markdown] [--skip-ssh]

Two pairs, each measured in the same run, round-robin (every round runs each command once, so load drifting on a
shared machine hits both sides of a pair alike):

  local  `launch --datapool file://TMP/datapool noop.py` (foreground, local backend)  vs  `python noop.py`
  ssh    `launch --profile ssh.yaml --datapool s3://... noop.py` (foreground, ssh backend)
         vs  `ssh -i KEY -p PORT root@127.0.0.1 python noop.py`

Everything private to a temp dir: LAUNCHER_HOME, the local datapool, a real OpenSSH sshd on 127.0.0.1
(tests/sshd.py) and the S3 store the ssh backend needs (a moto server, tests/motoserver.py), set up like the
contract tests' ssh target (tests/backends/conftest.py). `python` is this interpreter (sys.executable) on both
sides of both pairs: the ssh profile names it as the node's python, and the agent runs the script with it.
The bare ssh peer uses the system `ssh` client against the same sshd.

One unmeasured warm-up round first: it creates the job registry and, for ssh, uploads the code snapshot once (a
later job with the same tree reuses it), so the table is the steady state of a user's second launch.
Prints the median wall time of each command over N runs, the overhead (median minus the peer's median), the
ratio to the peer, and the median CPU time (user + system) of the processes this machine waited for: on a shared
machine wall time swings with the load, CPU time much less. For the ssh rows that CPU is this side only (the
node's processes run under sshd, not under us). Then the SSH logins each ssh run made (counted in the sshd's log):
one for the bare ssh, and one for a launch (preflight, upload, start and log follow share its connection).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUCKET = "contract"


def _load(name: str):
    """A test helper by path (tests/ is not an installed package, and a site-packages `tests` could shadow it)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "tests" / f"{name}.py")
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def base_env(tmp: Path) -> dict[str, str]:
    """Like the contract tests: nothing from this shell that would redirect the datapool or the store."""
    # PYTHONDONTWRITEBYTECODE goes too: with it set, every launch would compile launcher's modules afresh
    # (an installed launcher has its bytecode cached; the warm-up round writes it here).
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATAPOOL_ROOT", "EXPERIMENT", "CHECKPOINT_DIR", "LAUNCH_DATAPOOL", "LAUNCHER_DATAPOOL",
                        "AWS_PROFILE",
                        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "PYTHONDONTWRITEBYTECODE")}
    env.update(LAUNCHER_HOME=str(tmp / "home"),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p))
    return env


class Case:
    def __init__(self, name: str, argv: list[str], cwd: Path, env: dict[str, str], peer: str | None = None,
                 logins=None):
        self.name, self.argv, self.cwd, self.env, self.peer = name, argv, cwd, env, peer
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.logins = logins  # ssh cases: () -> SSH logins the sshd has accepted so far (its log)
        self.login_counts: list[int] = []

    def once(self) -> tuple[float, float]:
        """(wall s, CPU s): CPU is user + system of the processes this one waited for, down the tree (for local:
        client, agent and script; for ssh: only this machine's client side, the node's work runs under sshd)."""
        logins0 = self.logins() if self.logins else 0
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        elapsed = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 0:
            sys.exit(f"{self.name} failed (exit {p.returncode}):\n$ {shlex.join(self.argv)}\n"
                     f"{p.stdout.decode(errors='replace')}{p.stderr.decode(errors='replace')}")
        if self.logins:
            self.login_counts.append(self.logins() - logins0)
        return elapsed, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


def local_cases(tmp: Path) -> list[Case]:
    project = tmp / "local-project"
    project.mkdir()
    (project / "noop.py").write_text("pass\n")
    env = base_env(tmp / "local")
    py = sys.executable
    launch = [py, "-m", "launcher", "--datapool", f"file://{tmp / 'local' / 'datapool'}", "noop.py"]
    return [Case("python noop.py", [py, "noop.py"], project, env),
            Case("launch noop.py (local)", launch, project, env, peer="python noop.py")]


def ssh_cases(tmp: Path, sshd, moto) -> list[Case]:
    import yaml

    project = tmp / "ssh-project"
    project.mkdir()
    (project / "noop.py").write_text("pass\n")
    node = tmp / "node"
    node.mkdir()
    ssh = {"host": sshd.target, "identity": str(sshd.identity), "known_hosts": str(sshd.known_hosts),
           "python": sys.executable, "remote_dir": str(node)}
    profile = tmp / "ssh.yaml"
    profile.write_text(yaml.safe_dump({"backend": "ssh", "ssh": ssh}))
    env = {**base_env(tmp / "ssh"), **_load("motoserver").MOTO_ENV}
    launch = [sys.executable, "-m", "launcher", "--profile", str(profile), "--datapool", f"s3://{BUCKET}/bench",
              "--endpoint-url", moto.endpoint, "--secret", "AWS_ACCESS_KEY_ID", "--secret", "AWS_SECRET_ACCESS_KEY",
              "noop.py"]
    plain = ["ssh", "-i", str(sshd.identity), "-p", str(sshd.port), "-o", f"UserKnownHostsFile={sshd.known_hosts}",
             "-o", "BatchMode=yes", f"{sshd.user}@{sshd.host}", sys.executable, str(project / "noop.py")]
    def logins() -> int:  # sshd logs each accepted login once
        return sshd.log.read_text(errors="replace").count("Accepted publickey")

    return [Case("ssh root@127.0.0.1 python noop.py", plain, project, env, logins=logins),
            Case("launch --backend ssh noop.py", launch, project, env, peer="ssh root@127.0.0.1 python noop.py",
                 logins=logins)]


def table(cases: list[Case], markdown: bool) -> str:
    by_name = {c.name: c for c in cases}
    rows = []
    for c in cases:
        if c.peer is None:
            rows.append((c.name, f"{c.median:.3f}", "-", "1.00 (peer)", f"{c.median_cpu:.3f}"))
        else:
            peer = by_name[c.peer]
            rows.append((c.name, f"{c.median:.3f}", f"+{c.median - peer.median:.3f}", f"{c.median / peer.median:.2f}",
                         f"{c.median_cpu:.3f}"))
    head = ("case", "median s", "overhead s", "x peer", "median CPU s (this side)")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    w = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(r[i].ljust(w[i]) if i == 0 else r[i].rjust(w[i]) for i in range(len(r))).rstrip()

    return "\n".join([fmt(head), fmt(tuple("-" * n for n in w)), *map(fmt, rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="measured runs of each command (default 7)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--skip-ssh", action="store_true", help="only the local pair (no sshd, no moto)")
    ns = parser.parse_args()
    started = time.perf_counter()
    # The 1-minute load average before and after: on a shared machine a busy neighbour shows here (issue 26 asks
    # for the quiet machine's numbers, and says which load they came with).
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    sshd = moto = None
    with tempfile.TemporaryDirectory(prefix="launch-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            cases = local_cases(tmp)
            if not ns.skip_ssh:
                sshd = _load("sshd").start_sshd(tmp / "sshd")
                moto = _load("motoserver").start_moto(tmp)
                urllib.request.urlopen(urllib.request.Request(f"{moto.endpoint}/{BUCKET}", method="PUT"),
                                       timeout=30).read()
                cases += ssh_cases(tmp, sshd, moto)
            for case in cases:  # warm-up: registry created, snapshot uploaded, page cache warm
                case.once()
            for _ in range(ns.runs):
                for case in cases:
                    wall, cpu = case.once()
                    case.times.append(wall)
                    case.cpu.append(cpu)
        finally:
            if moto is not None:
                moto.stop()
            if sshd is not None:
                sshd.stop()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"median of {ns.runs} runs; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, load average {load_before:.2f} before, "
          f"{load:.2f} after; bench took {time.perf_counter() - started:.0f} s")
    print(table(cases, ns.markdown))
    for c in cases:
        if c.login_counts:  # the warm-up's too: every run of a case should make the same number
            print(f"SSH logins per run of `{c.name}`: {', '.join(map(str, c.login_counts))}")


if __name__ == "__main__":
    main()
