"""A real two-node Slurm cluster on 127.0.0.1 for tests: its own munged, slurmctld and two slurmd in one temp dir.

`start_cluster(dir)` writes a munge key, slurm.conf and gres.conf under `dir`, starts munged, slurmctld and the
slurmd of nodes n1 and n2 (all on this machine, each on a private free port, in its own process group) and returns
once `sinfo` shows both nodes idle. Merge `cluster.env` (SLURM_CONF) into the env of any Slurm client (sbatch,
squeue, ...) or of code that runs one; `cluster.stop()` cancels what still runs, shuts the daemons down and kills
whatever is left of this cluster (by pid, never by name: another cluster may run beside it).

The cluster: partitions `debug` (default, no time limit) and `short` (MaxTime `max_time_short` s), both over n1 and
n2; each node has all of this machine's CPUs and two fake GPUs (`--gres=gpu:a100:2`, CUDA_VISIBLE_DEVICES=0,1;
the device files are links to /dev/null). Daemon logs are in `dir` (slurmctld.log, slurmd-n1.log, munged.out).
Quicker than a stock Slurm: KillWait `kill_wait` s, a requeued job may start again after `requeue_delay` s (stock:
121), the scheduler passes every 2 s. Slurm's limits as stock (EnforcePartLimits=NO): `-N3` is accepted and stays
PENDING (reason PartitionNodeLimit), as does `-p short -t 11` (PartitionTimeLimit); `--gres=gpu:a100:3` is refused
at submit ("Requested node configuration is not available").

By hand, for development: `python tests/slurm/cluster.py DIR` starts one, prints `export SLURM_CONF=...` and keeps
it up until Ctrl-C. Needs root and Debian's slurm-wlm + munge (scripts/setup.sh installs them).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

NODES = ("n1", "n2")
PARTITION = "debug"  # the default partition, MaxTime=INFINITE
SHORT_PARTITION = "short"
MAX_TIME_SHORT = 10 * 60  # the short partition's MaxTime, s
KILL_WAIT = 5  # s between a job's SIGTERM and SIGKILL (Slurm's default is 30)
# AuthInfo cred_expire (default 120): also how long a requeued job waits (PENDING, reason BeginTime) before it may
# run again: EligibleTime = requeue time + cred_expire + 1.
CRED_EXPIRE = 10
SCHED_INTERVAL = 2  # s between the scheduler's periodic passes (default 60): a requeued job starts soon after
GPU_TYPE = "a100"
GPUS_PER_NODE = 2
REAL_MEMORY_MB = 1024  # per node; far below what this machine has, so a node never drains for "Low RealMemory"
MARKER = "LAUNCHER_TEST_SLURM_CLUSTER"  # in every daemon's env (and so slurmstepd's): how stop() finds strays
SBIN = "/usr/sbin"


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1: free now, not reserved (a lost race shows up as a failed start)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _kill_group(proc: subprocess.Popen, grace: float = 5) -> None:
    """SIGTERM the process group `proc` leads (each daemon is started in its own session), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group may outlive its leader
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=grace)


def _pids_with_env(needle: bytes) -> list[int]:
    """Processes whose environment holds the exact entry `needle` ("NAME=value"), this process excluded."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            pids.append(int(d.name))
    return pids


@dataclass
class SlurmCluster:
    dir: Path
    conf: Path  # slurm.conf
    env: dict[str, str]  # merge into a Slurm client's env: SLURM_CONF
    nodes: list[str]
    partition: str  # the default partition (no time limit)
    short_partition: str  # MaxTime = max_time_short
    partitions: list[str]
    kill_wait: int  # s between SIGTERM and SIGKILL when a job is cancelled or runs out of time
    max_time_short: int  # s
    requeue_delay: int  # s a requeued job stays PENDING (reason BeginTime) before it may start again
    gpus_per_node: int
    gpu_type: str
    ctld_port: int
    node_ports: dict[str, int]
    munge_socket: Path
    sockets: Path  # where the Unix sockets live (munged's; slurmd's spool dirs): `dir`, or a short dir under /tmp
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)  # "munged", "slurmctld", "slurmd-n1", ...

    # ---- use ----
    def run(self, *argv: str, timeout: float = 60, check: bool = False, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a Slurm command (`run("squeue", "-h")`) against this cluster: text output captured. It runs in the
        cluster's folder, so an `sbatch --wrap` writes its slurm-<id>.out there, not into the caller's cwd."""
        return subprocess.run(list(argv), env={**self.client_env(), **(env or {})}, cwd=self.dir,
                              capture_output=True, text=True, timeout=timeout, check=check, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def client_env(self) -> dict[str, str]:
        """os.environ without any SLURM_* of an enclosing job, plus `env`: a whole env for a client subprocess."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        return {**base, **self.env}

    def node_states(self) -> dict[str, str]:
        """{"n1": "idle", ...}: sinfo's long state per node ("" for a node sinfo did not list)."""
        r = self.run("sinfo", "-h", "-N", "-o", "%N %T", timeout=15)
        states = dict.fromkeys(self.nodes, "")
        if r.returncode == 0:
            for line in r.stdout.splitlines():
                name, _, state = line.partition(" ")
                if name in states:
                    states[name] = state.strip()
        return states

    def job_ids(self) -> list[str]:
        r = self.run("squeue", "-h", "-o", "%i", timeout=15)
        return r.stdout.split() if r.returncode == 0 else []

    def job(self, job_id: str | int) -> dict[str, str]:
        """`scontrol show job ID` as {"JobState": "PENDING", "Reason": "BeginTime", "Restarts": "1", ...}; {} once
        Slurm has forgotten the job (MinJobAge, 300 s after it ended)."""
        r = self.run("scontrol", "-o", "show", "job", str(job_id), timeout=15)
        if r.returncode != 0:
            return {}
        # One line of Key=Value pairs; a value may hold spaces (Command=...), so split only before a `Key=`.
        return dict(kv.split("=", 1) for kv in re.split(r"\s+(?=[A-Za-z][\w:/]*=)", r.stdout.strip()) if "=" in kv)

    def wait_idle(self, timeout: float = 60) -> None:
        """Until every node is idle (no job holds any of it); a drained or down node is resumed first."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.node_states()
            if all(s == "idle" for s in states.values()):
                return
            # sinfo's flags: `*` not responding, `~` powered off, ...; a drained/down node that answers is resumed.
            bad = [n for n, s in states.items() if s.startswith(("drain", "down", "fail")) and not s.endswith("*")]
            if bad:
                self.run("scontrol", "update", f"NodeName={','.join(bad)}", "State=RESUME", timeout=15)
            time.sleep(0.2)
        raise RuntimeError(f"Slurm nodes not idle after {timeout:.0f} s: {states}\n{self.logs()}")

    def cancel_all(self, timeout: float = 60) -> None:
        """scancel every job and wait until the queue is empty and the nodes idle: a clean slate for the next test."""
        if self.job_ids():
            self.run("scancel", "--user", str(os.getuid()), timeout=15)
            deadline = time.monotonic() + timeout
            while self.job_ids() and time.monotonic() < deadline:
                time.sleep(0.2)
        self.wait_idle(timeout=timeout)

    def logs(self, n: int = 25) -> str:
        """The tails of the daemon logs, for an error message."""
        parts = []
        for name in ("slurmctld", *(f"slurmd-{node}" for node in self.nodes), "munged"):
            # <name>.log is the daemon's LogFile; <name>.out its stdout/stderr (the same lines, or why it never began)
            for p in (self.dir / f"{name}.log", self.dir / f"{name}.out"):
                if p.exists() and p.stat().st_size:
                    parts.append(f"--- {p} ---\n{_tail(p, n)}")
                    break
        return "\n".join(parts)

    # ---- teardown ----
    def stop(self) -> None:
        """Cancel the jobs, shut the daemons down and kill what is left of this cluster (its daemons, their
        slurmstepd, its jobs' processes), by pid. Safe to call twice."""
        self._stop_slurm()
        if "munged" in self.procs:
            _kill_group(self.procs.pop("munged"))
        if self.sockets != self.dir:
            shutil.rmtree(self.sockets, ignore_errors=True)

    def _stop_slurm(self) -> None:
        """stop() but for munged (which a retried start keeps)."""
        daemons = ["slurmctld", *(f"slurmd-{n}" for n in self.nodes)]
        ctld = self.procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            try:
                if self.job_ids():
                    self.run("scancel", "--user", str(os.getuid()), timeout=10)
                    deadline = time.monotonic() + self.kill_wait + 5
                    while self.job_ids() and time.monotonic() < deadline:
                        time.sleep(0.2)
                self.run("scontrol", "shutdown", timeout=10)
                for name in daemons:
                    if name in self.procs:
                        self.procs[name].wait(timeout=10)
            except (OSError, subprocess.SubprocessError):
                pass
        for name in daemons:
            if name in self.procs:
                _kill_group(self.procs.pop(name))
        # slurmstepd daemonizes out of slurmd's process group; it carries the daemons' marker, a job's processes
        # this cluster's SLURM_CONF and a SLURM_JOB_ID.
        for pid in _pids_with_env(f"{MARKER}={self.dir}".encode()):
            _kill(pid)
        for pid in _pids_with_env(f"SLURM_CONF={self.conf}".encode()):
            if _is_job_process(pid):  # not a client (say a test's own shell) that merely points at this cluster
                _kill(pid)

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _is_job_process(pid: int) -> bool:
    try:
        return any(e.startswith(b"SLURM_JOB_ID=") for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return False


def _slurm_conf(d: Path, sockets: Path, host: str, ctld_port: int, node_ports: dict[str, int],
                munge_socket: Path) -> str:
    cpus = os.cpu_count() or 1
    nodes = "\n".join(
        f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={p} CPUs={cpus} RealMemory={REAL_MEMORY_MB} "
        f"Gres=gpu:{GPU_TYPE}:{GPUS_PER_NODE} State=UNKNOWN"
        for n, p in node_ports.items())
    names = ",".join(node_ports)
    return f"""\
# Written by tests/slurm/cluster.py: a private two-node test cluster on 127.0.0.1.
ClusterName=launchtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
AuthType=auth/munge
AuthInfo=socket={munge_socket},cred_expire={CRED_EXPIRE}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={sockets}/spool-%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval={SCHED_INTERVAL},bf_interval={SCHED_INTERVAL}
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
KillWait={KILL_WAIT}
SlurmdParameters=config_overrides
GresTypes=gpu
{nodes}
PartitionName={PARTITION} Nodes={names} Default=YES MaxTime=INFINITE State=UP
PartitionName={SHORT_PARTITION} Nodes={names} MaxTime={MAX_TIME_SHORT // 60} State=UP
"""


def _gres_conf(d: Path, nodes) -> str:
    lines = ["AutoDetect=off"]
    for n in nodes:
        lines.append(f"NodeName={n} Name=gpu Type={GPU_TYPE} File={d}/dev/gpu[0-{GPUS_PER_NODE - 1}]")
    return "\n".join(lines) + "\n"


def _popen(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env,
                                cwd="/", start_new_session=True)


def _sockets_dir(d: Path) -> Path:
    """A Unix socket path must fit in 108 bytes, and slurmd puts one per job step (`n1_12345.4294967292`) in its
    spool dir: a deep `d` gets a short private dir under /tmp for them instead (removed by stop())."""
    return d if len(str(d)) <= 60 else Path(tempfile.mkdtemp(prefix="slurm-"))


def _start_munged(d: Path, sockets: Path, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    key = d / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = sockets / "munge.socket"
    proc = _popen([f"{SBIN}/munged", "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
                   f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log", f"--seed-file={d}/munged.seed",
                   "--num-threads=4"], d / "munged.out", env)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        if sock.exists():
            r = subprocess.run(["munge", "-n", f"--socket={sock}"], capture_output=True)
            if r.returncode == 0:
                return proc, sock
        time.sleep(0.05)
    _kill_group(proc)
    raise RuntimeError(f"munged did not start in {d}:\n{_tail(d / 'munged.out')}\n{_tail(d / 'munged.log')}")


def start_cluster(tmpdir: Path, *, ready_timeout: float = 30, attempts: int = 3) -> SlurmCluster:
    """Start munged, slurmctld and slurmd n1, n2 with everything under `tmpdir`; return once both nodes are idle.

    Raises RuntimeError with the daemons' log tails if they do not come up in `ready_timeout` s. A daemon that
    lost its port (found free, then taken by someone else before it bound it) is retried on fresh ports, up to
    `attempts` times."""
    for tool in ("munged", "slurmctld", "slurmd"):
        if not os.access(f"{SBIN}/{tool}", os.X_OK):
            raise RuntimeError(f"{SBIN}/{tool} is missing: run scripts/setup.sh (apt-get install slurm-wlm munge)")
    d = Path(tmpdir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    (d / "state").mkdir(exist_ok=True)
    (d / "dev").mkdir(exist_ok=True)
    for i in range(GPUS_PER_NODE):
        link = d / "dev" / f"gpu{i}"
        if not link.is_symlink():
            link.symlink_to("/dev/null")
    (d / "gres.conf").write_text(_gres_conf(d, NODES))
    host = socket.gethostname().split(".")[0]  # slurmctld insists on running on SlurmctldHost (`hostname -s`)
    conf = d / "slurm.conf"
    sockets = _sockets_dir(d)
    for n in NODES:
        (sockets / f"spool-{n}").mkdir(exist_ok=True)
    daemon_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    daemon_env["SLURM_CONF"] = str(conf)
    cluster = None
    try:
        # munged outlives a failed attempt below, so it does not carry the marker _stop_slurm() kills by.
        munged, sock = _start_munged(d, sockets, daemon_env)
        daemon_env[MARKER] = str(d)
        last = ""
        for _ in range(attempts):
            ctld_port, *ports = _free_ports(1 + len(NODES))
            node_ports = dict(zip(NODES, ports))
            conf.write_text(_slurm_conf(d, sockets, host, ctld_port, node_ports, sock))
            for name in ("slurmctld", *(f"slurmd-{n}" for n in NODES)):
                for suffix in (".log", ".out"):
                    (d / f"{name}{suffix}").unlink(missing_ok=True)
            cluster = SlurmCluster(
                dir=d, conf=conf, env={"SLURM_CONF": str(conf)}, nodes=list(NODES), partition=PARTITION,
                short_partition=SHORT_PARTITION, partitions=[PARTITION, SHORT_PARTITION], kill_wait=KILL_WAIT,
                max_time_short=MAX_TIME_SHORT, requeue_delay=CRED_EXPIRE + 1, gpus_per_node=GPUS_PER_NODE,
                gpu_type=GPU_TYPE, ctld_port=ctld_port, node_ports=node_ports, munge_socket=sock, sockets=sockets,
                procs={"munged": munged})
            # -D: in the foreground, so the Popen is the daemon; -c -i: a fresh state, whatever an earlier run left.
            cluster.procs["slurmctld"] = _popen([f"{SBIN}/slurmctld", "-D", "-c", "-i", "-f", str(conf)],
                                                d / "slurmctld.out", daemon_env)
            for n in NODES:
                cluster.procs[f"slurmd-{n}"] = _popen([f"{SBIN}/slurmd", "-D", "-f", str(conf), "-N", n],
                                                      d / f"slurmd-{n}.out", daemon_env)
            deadline = time.monotonic() + ready_timeout
            dead: list[str] = []
            while time.monotonic() < deadline:
                dead = [name for name, p in cluster.procs.items() if p.poll() is not None]
                if dead:
                    break
                if all(s == "idle" for s in cluster.node_states().values()):
                    return cluster
                time.sleep(0.1)
            last = f"exited: {', '.join(dead)}" if dead else f"node states: {cluster.node_states()}"
            last += "\n" + cluster.logs()
            cluster._stop_slurm()
            if "already in use" not in last:  # only a lost race for a port is worth another try
                break
        raise RuntimeError(f"Slurm cluster in {d} did not come up (within {ready_timeout:.0f} s): {last}")
    except BaseException:
        if cluster is not None:
            cluster.stop()
        elif sockets != d:
            shutil.rmtree(sockets, ignore_errors=True)
        raise


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1].startswith("-"):
        print(f"usage: python {argv[0]} DIR   (starts a two-node test Slurm cluster in DIR, until Ctrl-C)",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's `cmd &` starts it with SIGINT ignored
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    t0 = time.monotonic()
    cluster = start_cluster(Path(argv[1]))
    try:
        print(f"# Slurm test cluster up in {time.monotonic() - t0:.1f} s: nodes {', '.join(cluster.nodes)}, "
              f"partitions {', '.join(cluster.partitions)} ({cluster.partition} is the default), daemon logs in "
              f"{cluster.dir}. Ctrl-C stops it.", file=sys.stderr)
        print(f"export SLURM_CONF={cluster.conf}", flush=True)
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.stop()
        print("# Slurm test cluster stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
