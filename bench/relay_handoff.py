"""Relay hand-off after a lost worker, against a spot relaunch by `launch watch --max-restarts` (ec2, simulated).

    python bench/relay_handoff.py [--quick] [--kills 3] [--ttl 15] [--seed 1]

Both sides run the same mock trainer (runners/mock_run.py: 0.5 s a step, a checkpoint every 10 steps = every 5 s),
push to the same S3 store (one moto server on 127.0.0.1, behind tests/ec2/ice_server.py) every 5 s, grace 3 s.

relay  a real commander (`python -m launcher relay serve --keep-every 1`, secret by RELAY_SHARED_SECRET), the run
       registered by `launch relay up STACK` (`commander: url:`) with a TTL of 15 s; its keeper launches every worker
       on the local backend. N times: once the current worker has committed a checkpoint C of its own, wait until it
       reaches step C + k (k drawn from 3..8: a random moment inside the checkpoint interval, not right after a
       commit), then `kill -9` the agent's process group (tests/relay/workers.py kill9: the machine is gone). The
       lease cannot be released, so the successor waits for the TTL. Then, for reference, the same number of
       SIGTERM hand-offs (the agent is asked to stop: it checkpoints, commits, releases).
peer   the same job as `launch --backend ec2 --spot --max-restarts N --detach` (the watcher `launch watch` looks
       every 1 s), its instances played by tests/ec2/nodesim.py. N times, at the same C + k moment: a spot
       interruption as the ec2 tests inject it (NodeSimulator.preempt: the OS shutdown's SIGTERM to the agent, which
       checkpoints and pushes; the instance terminates; the watcher relaunches; the new attempt resumes from the
       newest *pushed* checkpoint). A hard loss (the host gone, nothing pushed at the end) is not relaunched by
       `launch watch` (the job is `lost`, not `preempted`), so there is no kill -9 peer on ec2.

Measured per hand-off / relaunch:
  seconds   from the kill (or interruption) to the successor's first new step (the `time` of its first
            metrics.jsonl line), split into `detected` (the keeper launched the successor / the registry shows
            the new attempt) and `start` (from then to the first new step);
  redone    the last step the lost worker reached (its own log, every step printed as `mock: step N`, and its
            metrics lines) minus the step the successor resumed from (`resumed_from` in its metrics lines).
Targets (the relay issue): hand-off <= TTL + worker start + 5 s; steps redone <= one checkpoint interval (10).

Everything is private to a temp dir (LAUNCHER_HOME, projects, state, node dirs); every process the bench starts
carries a marker in its environment, and any still alive at exit is ended by pid (the bench says how many).
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bench"
MARK = "LAUNCHER_RELAY_BENCH"
CKPT_EVERY = 10
STEP_S = 0.5
PUSH = "5s"
_STEP_LINE = re.compile(r"^mock: step (\d+)", re.M)


# -- the test helpers (tests/ is not an installed package and uses relative imports: load it as one) --------------

def _helpers():
    name = "_bench_tests"
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(REPO / "tests")]  # its sub-folders load as namespace packages, as under pytest
        sys.modules[name] = pkg
    mods = {m: importlib.import_module(f"{name}.{m}") for m in
            ("motoserver", "relay.commander", "relay.workers", "ec2.ec2moto", "ec2.nodesim")}
    return types.SimpleNamespace(**{k.split(".")[-1]: v for k, v in mods.items()})


T = None  # the helpers, loaded in main()


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def base_env(tmp: Path) -> dict[str, str]:
    """Like the tests' launcher_env: nothing from this shell that would redirect the datapool or reach real AWS."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATAPOOL_ROOT", "EXPERIMENT", "EXPERIMENT_DIR", "CHECKPOINT_DIR", "LAUNCH_DATAPOOL",
                        "LAUNCHER_DATAPOOL",
                        "LAUNCHER_WATCH", "LAUNCHER_WATCH_EVERY") and not k.startswith("AWS_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p))
    return env


def read_lines(path: Path) -> list[dict]:
    """metrics.jsonl as it is now (a line being written, or a file being replaced by a pull, is skipped)."""
    out = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def steps_printed(log: Path) -> int:
    try:
        found = _STEP_LINE.findall(log.read_text(errors="replace"))
    except OSError:
        return 0
    return max(map(int, found), default=0)


def wait(what: str, predicate, timeout: float, poll: float = 0.1, diag=None):
    """predicate() until truthy; its value. A timeout ends the bench with what it was waiting for."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{diag()}" if diag else ""))
        time.sleep(poll)


class BenchError(Exception):
    pass


@dataclass
class Handoff:
    kind: str  # "kill -9", "SIGTERM", "spot (SIGTERM)"
    k: int  # the kill came k steps past the worker's own checkpoint C
    seconds: float  # kill -> successor's first new step
    detected: float  # kill -> successor launched (relay) / new attempt recorded (peer)
    start: float  # successor launched -> its first new step
    last_step: int  # the lost worker's last step
    resumed_from: int
    extra: dict = field(default_factory=dict)

    @property
    def redone(self) -> int:
        return self.last_step - self.resumed_from


# -- relay ------------------------------------------------------------------------------------------------------

class RelaySide:
    RUN = "bench-relay"
    EXP = "relay-bench"

    def __init__(self, tmp: Path, env: dict, store: str, endpoint: str, ttl: float, grace: float, steps: int):
        self.tmp, self.ttl, self.grace = tmp / "relay", ttl, grace
        self.tmp.mkdir()
        self.project = T.workers.mock_project(self.tmp / "project")
        self.secret = secrets.token_hex(16)
        self.env = {**env, "LAUNCHER_HOME": str(self.tmp / "home"), "RELAY_SHARED_SECRET": self.secret}
        self.commander = T.commander.Commander(state_path=self.tmp / "state" / "state.db",
                                               log_path=self.tmp / "commander.log", secret=self.secret,
                                               env=self.env, cwd=self.project, keep_every=1.0)
        self.commander.state_path.parent.mkdir(parents=True)
        self.w = T.workers.Workers(self.project, self.env, "", self.RUN)  # cli(), kill9(), record()
        self.stack = {
            "run": self.RUN, "mode": "mock", "experiment": self.EXP, "ttl": ttl,
            "mock": {"steps": steps, "checkpoint_every": CKPT_EVERY, "step_seconds": STEP_S},
            "commander": {"url": self.commander.url},
            "worker": {"count": 1, "push_interval": PUSH, "grace_period": f"{grace:g}s", "max_runtime": "1h",
                       "secrets": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]},
            "datapool": store, "endpoint_url": endpoint,
            "backends": [{"backend": "local"}], "max_launches_per_hour": 60, "backoff_s": 5,
        }
        self.stack_path = self.project / "stack.yaml"
        self.up_done = False
        self.client = None

    # where the local workers leave things (the local backend's root for an s3 datapool: <workdir>/datapool)
    @property
    def exp_dir(self) -> Path:
        return self.project / "datapool" / "experiments" / self.EXP

    def metrics(self) -> list[dict]:
        return read_lines(self.exp_dir / "reports" / self.RUN / "metrics.jsonl")

    def job_log(self, job: str) -> Path:
        return self.exp_dir / "reports" / "jobs" / job / "log.txt"

    def diag(self) -> str:
        view = self.client.run(self.RUN, events=15) if self.client else {}
        tail = self.commander.log()[-1500:]
        return f"run: {json.dumps({k: view.get(k) for k in ('epoch', 'holder', 'checkpoint', 'workers')})}\n" \
               f"events: {json.dumps(view.get('events'))}\ncommander log tail:\n{tail}"

    def start(self) -> None:
        import yaml

        self.commander.start()
        self.client = self.commander.client()
        self.stack_path.write_text(yaml.safe_dump(self.stack, sort_keys=False))
        up = self.w.cli("relay", "up", str(self.stack_path), timeout=180)
        if up.returncode != 0:
            raise BenchError(f"launch relay up failed:\n{up.stderr}\n{self.diag()}")
        self.up_done = True
        say(f"relay: commander {self.commander.url}, run {self.RUN} up (TTL {self.ttl:g} s), worker "
            f"{json.loads(up.stdout)['workers'][0]['job_id']}")

    def handoff(self, kind: str, k: int) -> Handoff:
        def held():
            v = self.client.run(self.RUN)
            return v if v["holder"] else None

        view = wait("a worker holding the run", held, 90, 0.2, self.diag)
        job, epoch = view["holder"], view["epoch"]
        # the worker's own checkpoint C, committed (pushed to the store, then the pointer moved)
        def own_commit():
            p = self.client.run(self.RUN)["checkpoint"]
            return p if p and p["epoch"] == epoch else None

        ptr = wait(f"a commit by epoch {epoch}", own_commit, 90, 0.2, self.diag)
        target = ptr["step"] + k

        def reached():
            mine = [m["step"] for m in self.metrics() if m.get("relay_epoch") == str(epoch)]
            return max(mine, default=0) >= target

        wait(f"epoch {epoch} at step {target}", reached, 60, 0.05, self.diag)
        handle = self.w.record(job).handle
        script = Path(handle["state_dir"]) / "script.pid"
        script_pid = int(script.read_text().split()[0]) if script.exists() else None
        t0 = time.time()
        if kind == "kill -9":
            self.w.kill9(job)
        else:
            os.kill(handle["pid"], signal.SIGTERM)  # the agent only, as a spot shutdown reaches the node's agent
        if script_pid is not None:  # the lost worker's trainer is gone (kill -9: its watchdog; SIGTERM: it saved)
            wait("the trainer to end", lambda: not _alive(script_pid), 60, 0.05)
        last = max([m["step"] for m in self.metrics() if m.get("relay_epoch") == str(epoch)]
                   + [steps_printed(self.job_log(job))])

        def first_new():
            new = [m for m in self.metrics() if m.get("relay_epoch") == str(epoch + 1)]
            return min(new, key=lambda m: m["time"]) if new else None

        first = wait(f"epoch {epoch + 1}'s first step", first_new, 4 * self.ttl + 120, 0.05, self.diag)
        events = self.client.run(self.RUN, events=100)["events"]
        successor = next(e for e in reversed(events) if e["kind"] == "acquired" and e["epoch"] == epoch + 1)
        launched = next(e for e in reversed(events) if e["kind"] == "worker_launched"
                        and e["job_id"] == successor["worker"])
        h = Handoff(kind, k, first["time"] - t0, launched["at"] - t0, first["time"] - launched["at"], last,
                    int(first["resumed_from"]),
                    {"acquired_s": successor["at"] - t0, "released": successor["previous"] is None,
                     "committed_step": ptr["step"]})
        say(f"relay {kind} #{epoch}: killed at step {last} (C={ptr['step']}, k={k}); successor launched after "
            f"{h.detected:.1f} s, acquired after {h.extra['acquired_s']:.1f} s, first step after {h.seconds:.1f} s, "
            f"resumed from {h.resumed_from}: {h.redone} steps redone")
        return h

    def stop(self) -> None:
        if self.up_done:
            down = self.w.cli("relay", "down", str(self.stack_path), timeout=120)
            if down.returncode != 0:
                say(f"launch relay down failed: {down.stderr.strip()[-500:]}")
        self.commander.stop()


# -- peer: ec2 spot + launch watch ------------------------------------------------------------------------------

class SpotPeer:
    RUN = "bench-peer"
    EXP = "peer-bench"

    def __init__(self, tmp: Path, env: dict, moto, store: str, grace: float, steps: int, restarts: int):
        self.tmp, self.moto = tmp / "peer", moto
        self.tmp.mkdir()
        self.project = T.workers.mock_project(self.tmp / "project")
        self.env = {**env, "LAUNCHER_HOME": str(self.tmp / "home"), "LAUNCHER_WATCH_EVERY": "1"}
        self.store, self.grace, self.steps, self.restarts = store, grace, steps, restarts
        self.sim = None
        self.job: str | None = None

    def registry(self):
        from launcher.registry import Registry

        return Registry(Path(self.env["LAUNCHER_HOME"]))

    def node_file(self, instance: str, rel: str) -> Path | None:
        found = sorted(self.sim.node_dir(instance).glob(f"base/**/experiments/{self.EXP}/{rel}"))
        return found[0] if found else None

    def metrics(self, instance: str) -> list[dict]:
        path = self.node_file(instance, f"reports/{self.RUN}/metrics.jsonl")
        return read_lines(path) if path else []

    def diag(self) -> str:
        rec = self.registry().get(self.job) if self.job else None
        watch = Path(self.env["LAUNCHER_HOME"]) / "jobs" / (self.job or "-") / "watch.log"
        text = watch.read_text()[-1500:] if watch.exists() else "(no watch.log)"
        consoles = ""
        if rec is not None and rec.handle.get("instance"):
            console = self.sim.node_dir(rec.handle["instance"]) / "console.log"
            consoles = console.read_text(errors="replace")[-1500:] if console.exists() else ""
        return f"record: {rec}\nwatch.log:\n{text}\nconsole:\n{consoles}"

    def start(self) -> None:
        import yaml

        ec2, ssm = self.moto.client("ec2"), self.moto.client("ssm")
        T.ec2moto.seed_ami_parameter(ec2, ssm)
        hosts = self.tmp / "hosts"
        hosts.mkdir()
        self.sim = T.nodesim.NodeSimulator(self.moto.endpoint, self.moto.region, hosts, self.env).__enter__()
        profile = self.tmp / "ec2.yaml"
        profile.write_text(yaml.safe_dump({"backend": "ec2", "ec2": {
            "region": self.moto.region, "ami": T.ec2moto.GPU_AMI_PARAM, "python": sys.executable}}))
        argv = [sys.executable, "-m", "launcher", "--profile", str(profile), "--gpu", "A10G", "--datapool", self.store,
                "--endpoint-url", self.moto.endpoint, "--push-interval", PUSH, "--grace-period", f"{self.grace:g}s",
                "--experiment", self.EXP, "--name", self.RUN, "--max-runtime", "1h",
                "--detach", "--spot", "--max-restarts", str(self.restarts),
                "runners/mock_run.py", "--steps", str(self.steps), "--checkpoint-every", str(CKPT_EVERY),
                "--step-seconds", str(STEP_S), "--run-name", self.RUN]
        out = subprocess.run(argv, cwd=self.project, env=self.env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise BenchError(f"the ec2 launch failed:\n{out.stderr}")
        self.job = out.stdout.strip().split()[0]
        say(f"peer: ec2 spot job {self.job} (max restarts {self.restarts}), instance "
            f"{self.registry().get(self.job).handle.get('instance')}")

    def relaunch(self, k: int) -> Handoff:
        handle = self.registry().get(self.job).handle
        iid, attempt = handle["instance"], handle.get("attempt", 1)
        lines = wait(f"attempt {attempt}'s first step", lambda: self.metrics(iid), 180, 0.2, self.diag)
        resumed = int(lines[-1]["resumed_from"])

        def own_checkpoint():
            steps = [m["step"] for m in self.metrics(iid) if m["step"] > resumed and m["step"] % CKPT_EVERY == 0]
            return max(steps, default=0)

        c = wait(f"attempt {attempt}'s own checkpoint", own_checkpoint, 90, 0.05, self.diag)
        wait(f"attempt {attempt} at step {c + k}",
             lambda: max((m["step"] for m in self.metrics(iid)), default=0) >= c + k, 60, 0.05, self.diag)
        t0 = time.time()
        self.sim.preempt(iid)  # the spot interruption, as tests/ec2 inject it

        def relaunched():
            h = self.registry().get(self.job).handle
            return h if h.get("attempt", 1) > attempt and h.get("instance") not in (None, iid) else None

        new = wait(f"attempt {attempt + 1}", relaunched, 180, 0.05, self.diag)
        t_relaunch = time.time()
        new_iid = new["instance"]

        def first_new():
            fresh = [m for m in self.metrics(new_iid) if m["time"] > t0]
            return min(fresh, key=lambda m: m["time"]) if fresh else None

        first = wait(f"attempt {attempt + 1}'s first step", first_new, 240, 0.05, self.diag)
        log = self.node_file(iid, f"reports/jobs/{self.job}/log.txt")
        last = max([m["step"] for m in self.metrics(iid)] + [steps_printed(log) if log else 0])
        h = Handoff("spot (SIGTERM)", k, first["time"] - t0, t_relaunch - t0, first["time"] - t_relaunch, last,
                    int(first["resumed_from"]), {"checkpoint": c})
        say(f"peer relaunch #{attempt}: interrupted at step {last} (C={c}, k={k}); attempt {attempt + 1} launched "
            f"after {h.detected:.1f} s, first step after {h.seconds:.1f} s, resumed from {h.resumed_from}: "
            f"{h.redone} steps redone")
        return h

    def stop(self) -> None:
        if self.job:
            out = subprocess.run([sys.executable, "-m", "launcher", "down", self.job], cwd=self.project,
                                 env=self.env, capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                say(f"launch down {self.job}: {out.stderr.strip()[-500:]}")
            instances = [i for r in self.moto.client("ec2").describe_instances(
                Filters=[{"Name": "tag:launcher:job", "Values": [self.job]}])["Reservations"] for i in r["Instances"]]
            ec2 = self.moto.client("ec2")
            try:
                wait("the job's instances to terminate", lambda: all(
                    i["State"]["Name"] == "terminated" for r in ec2.describe_instances(
                        InstanceIds=[i["InstanceId"] for i in instances])["Reservations"] for i in r["Instances"]),
                    60, 0.3)
            except BenchError as exc:
                say(str(exc))
            watch_pid = _watcher_pid(self.job, self.env["LAUNCHER_HOME"])
            if watch_pid:
                try:
                    wait("`launch watch` to exit", lambda: not _alive(watch_pid), 30, 0.2)
                except BenchError as exc:
                    say(str(exc))
        if self.sim is not None:
            self.sim.__exit__(None, None, None)


# -- processes ---------------------------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _ours(tag: str) -> list[int]:
    """Every live process started under this bench (its marker in the environment), this one excepted."""
    me = os.getpid()
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != me and _alive(int(d.name)) and _environ(int(d.name)).get(MARK) == tag:
            out.append(int(d.name))
    return out


def _watcher_pid(job: str, home: str) -> int | None:
    for pid in _ours(os.environ[MARK]):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"watch" in argv and job.encode() in argv and _environ(pid).get("LAUNCHER_HOME") == home:
            return pid
    return None


def end_leftovers(tag: str) -> list[str]:
    """SIGTERM, then SIGKILL, each leftover by pid; returns what they were."""
    left = _ours(tag)
    names = []
    for pid in left:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            names.append(f"{pid} {cmdline[:100]}")
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    end = time.time() + 5
    while time.time() < end and any(_alive(p) for p in left):
        time.sleep(0.1)
    for pid in left:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return names


# -- the table ---------------------------------------------------------------------------------------------------

def _mean(xs):
    return statistics.mean(xs) if xs else float("nan")


def table(ttl: float, kills: list[Handoff], terms: list[Handoff], peer: list[Handoff]) -> str:
    rows = ["| # | relay kill -9: s (detected + start) | redone | relay SIGTERM: s (detected + start) | redone "
            "| ec2 spot relaunch: s (detected + start) | redone |", "|---|---|---:|---|---:|---|---:|"]

    def cell(h: Handoff | None) -> tuple[str, str]:
        if h is None:
            return "-", "-"
        return f"{h.seconds:.1f} ({h.detected:.1f} + {h.start:.1f})", str(h.redone)

    for i in range(max(len(kills), len(terms), len(peer))):
        cells = [cell(xs[i] if i < len(xs) else None) for xs in (kills, terms, peer)]
        rows.append(f"| {i + 1} | " + " | ".join(f"{a} | {b}" for a, b in cells) + " |")

    def avg(xs):
        if not xs:
            return "-", "-"
        return (f"{_mean([h.seconds for h in xs]):.1f} ({_mean([h.detected for h in xs]):.1f} + "
                f"{_mean([h.start for h in xs]):.1f})", f"{_mean([h.redone for h in xs]):.1f}")

    rows.append("| mean | " + " | ".join(f"**{a}** | **{b}**" for a, b in map(avg, (kills, terms, peer))) + " |")
    return "\n".join(rows)


def ratios(kills, terms, peer) -> list[str]:
    out = []
    p_s, p_r = _mean([h.seconds for h in peer]), _mean([h.redone for h in peer])
    for name, xs in (("relay kill -9", kills), ("relay SIGTERM", terms)):
        if not xs or not peer:
            continue
        s, r = _mean([h.seconds for h in xs]), _mean([h.redone for h in xs])
        steps = f"{r / p_r:.2f}x" if p_r else f"{r:.1f} vs {p_r:.1f} (the peer redid none: no ratio)"
        out.append(f"{name} / ec2 spot relaunch: seconds {s / p_s:.2f}x, steps redone {steps}")
    return out


def targets(ttl: float, kills: list[Handoff]) -> list[str]:
    out = []
    for i, h in enumerate(kills, 1):
        bound = ttl + h.start + 5
        out.append(f"kill -9 #{i}: hand-off {h.seconds:.1f} s <= TTL {ttl:g} + start {h.start:.1f} + 5 = "
                   f"{bound:.1f} s: {'met' if h.seconds <= bound else 'MISSED'}; redone {h.redone} <= {CKPT_EVERY}: "
                   f"{'met' if 0 <= h.redone <= CKPT_EVERY else 'MISSED'}")
    return out


# -- main --------------------------------------------------------------------------------------------------------

def main() -> int:
    global T
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: TTL 6 s (grace 2 s), one hand-off of each kind")
    parser.add_argument("--kills", type=int, help="hand-offs of each kind (default 3; --quick 1)")
    parser.add_argument("--ttl", type=float, help="the relay lease, seconds (default 15; --quick 6)")
    parser.add_argument("--seed", type=int, default=1, help="for the kill moments k (3..8 steps past a checkpoint)")
    parser.add_argument("--skip-peer", action="store_true", help="relay only")
    parser.add_argument("--skip-sigterm", action="store_true", help="no SIGTERM hand-offs on the relay side")
    ns = parser.parse_args()
    kills = ns.kills or (1 if ns.quick else 3)
    ttl = ns.ttl or (6.0 if ns.quick else 15.0)
    grace = min(3.0, ttl / 3)  # a relay worker's grace must fit a third of the lease
    rng = random.Random(ns.seed)
    ks = [rng.randint(3, 8) for _ in range(kills)]
    hand_offs = kills * (1 if ns.skip_sigterm else 2)
    steps = 60 + hand_offs * 40  # never finishes before the last measured hand-off; `relay down` ends it
    load0, started = os.getloadavg(), time.time()

    tag = uuid.uuid4().hex
    os.environ[MARK] = tag  # every child inherits it: how the exit sweep knows ours
    T = _helpers()
    tmp = Path(tempfile.mkdtemp(prefix="relay-handoff-"))
    env = base_env(tmp)
    moto = relay = peer = None
    k_res: list[Handoff] = []
    t_res: list[Handoff] = []
    p_res: list[Handoff] = []
    failed = None
    try:
        moto = T.ec2moto.start_ec2_moto(tmp)
        moto.client("s3").create_bucket(Bucket=BUCKET)
        env.update(moto.aws_env(tmp))
        relay = RelaySide(tmp, env, f"s3://{BUCKET}/relay", moto.endpoint, ttl, grace, steps)
        relay.start()
        for k in ks:
            k_res.append(relay.handoff("kill -9", k))
        if not ns.skip_sigterm:
            for k in ks:
                t_res.append(relay.handoff("SIGTERM", k))
        relay.stop()
        relay = None
        if not ns.skip_peer:
            peer = SpotPeer(tmp, env, moto, f"s3://{BUCKET}/peer", grace, 60 + kills * 40, kills)
            peer.start()
            for k in ks:
                p_res.append(peer.relaunch(k))
    except BenchError as exc:
        failed = str(exc)
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        for side in (relay, peer):
            if side is not None:
                try:
                    side.stop()
                except Exception as exc:  # noqa: BLE001 - the sweep below still ends what is left
                    say(f"stopping {type(side).__name__}: {exc}")
        if moto is not None:
            moto.stop()
        leftovers = end_leftovers(tag)
        shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        print(f"relay_handoff: {failed}", file=sys.stderr)
        return 1

    load1 = os.getloadavg()
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end "
          f"(1/5/15 min now: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}); bench took {time.time() - started:.0f} s")
    print(f"mock trainer: {STEP_S} s a step, checkpoint every {CKPT_EVERY} steps; push interval {PUSH}; grace "
          f"{grace:g} s; relay TTL {ttl:g} s, keeper every 1 s; launch watch every 1 s; kills at k = {ks} steps past "
          f"the worker's own checkpoint (seed {ns.seed})")
    print("peer: ec2 spot (moto + tests/ec2/nodesim.py), interrupted as tests/ec2 do it: SIGTERM to the node's agent")
    print()
    print(table(ttl, k_res, t_res, p_res))
    print()
    for line in ratios(k_res, t_res, p_res) + targets(ttl, k_res):
        print(line)
    if leftovers:
        print(f"note: {len(leftovers)} process(es) were still alive at the end and were ended by the sweep:")
        for name in leftovers:
            print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
