"""A relay stack file: one run, its commander, its workers and the backends they may run on.

    launch relay up configs/relay/mock-local.yaml      # commander (started if asked), run registered, workers
    launch relay status --commander-url URL [--json]
    launch relay down configs/relay/mock-local.yaml    # workers ended; the commander too if `up` started it

The commander's keeper launches the workers (also the first ones), so the same code replaces them later; `up`
waits until they are launched, copies their job records into this machine's registry (so `launch jobs`, `logs`
and `down` find them) and prints one JSON summary.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import UserError
from ..registry import launcher_home
from .auth import SECRET_ENV
from .config import COMMAND_SCRIPT, DEFAULT_TTL, MODE_SCRIPTS, SEED_COMMAND_ENV


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocalCommander(_Strict):
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8765, ge=1, le=65535)
    state_path: str | None = Field(None, description="state file (default ~/.launcher/relay/<run>.db)")
    tls_cert: str | None = None
    tls_key: str | None = None


class SshCommander(_Strict):
    host: str = Field(description="the always-on box, as for --backend ssh --host")
    listen_host: str = "0.0.0.0"
    port: int = Field(8765, ge=1, le=65535, description="port the commander listens on there")
    state_path: str = Field("~/.launcher/relay/state.db", description="state file on the box")
    identity: str | None = None
    known_hosts: str | None = None
    python: str | None = Field(None, description="the box's Python, as for --backend ssh")
    remote_dir: str | None = None
    env: dict[str, str] = Field(default_factory=dict, description="environment of the commander process there")
    max_runtime: str = Field("30d", description="how long the commander job may live")


class Commander(_Strict):
    local: LocalCommander | None = None
    ssh: SshCommander | None = None
    url: str | None = Field(None, description="a commander that already runs")
    public_url: str | None = Field(None, description="the address workers reach (default: the local one, or url)")
    shared_secret_file: str | None = None
    shared_secret_env: str = SECRET_ENV

    @model_validator(mode="after")
    def _one(self) -> "Commander":
        given = [k for k in ("local", "ssh", "url") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("commander: give exactly one of local:, ssh: or url: "
                             f"(got {', '.join(given) or 'none'})")
        if self.ssh is not None and not self.public_url:
            raise ValueError("commander.ssh needs commander.public_url: the address workers reach it at")
        return self

    @property
    def address(self) -> str:
        """Where `launch relay` commands on this machine reach it."""
        if self.url:
            return self.url.rstrip("/")
        if self.local:
            scheme = "https" if self.local.tls_cert else "http"
            host = "127.0.0.1" if self.local.host in ("0.0.0.0", "") else self.local.host
            return f"{scheme}://{host}:{self.local.port}"
        return self.public_url.rstrip("/")

    @property
    def worker_url(self) -> str:
        return (self.public_url or self.address).rstrip("/")


class Worker(_Strict):
    count: int = Field(1, ge=1, le=16, description="workers kept alive; more than 1 are paid hot standbys")
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    command: str | None = Field(None, description="any command instead of the mode's trainer")
    args: list[str] = Field(default_factory=list, description="extra arguments for the trainer")
    max_runtime: str | None = None
    push_interval: str = "30s"
    grace_period: str | None = None
    gpu: str | None = None


class Mock(_Strict):
    steps: int = Field(100, ge=1)
    checkpoint_every: int = Field(10, ge=1)
    step_seconds: float = Field(0.5, ge=0)


class Stack(_Strict):
    run: str = Field(description="the run id")
    mode: Literal["mock", "sft", "rl"] = "mock"
    config: str | None = Field(None, description="the trainer's config (mode sft / rl)")
    task: str | None = None
    mock: Mock = Field(default_factory=Mock)
    experiment: str = "default"
    datapool: str | None = None
    endpoint_url: str | None = None
    ttl: float = Field(DEFAULT_TTL, gt=0, description="lease TTL, seconds")
    commander: Commander
    worker: Worker = Field(default_factory=Worker)
    workers: dict[str, int] | None = Field(None, description="the seed's workers: {count: N}")
    lium: dict[str, Any] | None = Field(None, description="the seed's lium: {ttl: 2h} = worker.max_runtime")
    backends: list[dict[str, Any]] = Field(default_factory=lambda: [{"backend": "local"}])
    max_launches_per_hour: int = Field(6, ge=1)
    backoff_s: float = Field(60, gt=0)
    backoff_cap_s: float = Field(1800, gt=0)
    hf_repo: str | None = None
    hf_sync: Literal["checkpoints", "final"] = "checkpoints"
    hf_dry_run: bool = False
    workdir: str = "."

    @field_validator("backends")
    @classmethod
    def _backends(cls, v: list[dict]) -> list[dict]:
        if not v:
            raise ValueError("backends: list at least one, e.g. - backend: local")
        for i, entry in enumerate(v):
            if not isinstance(entry, dict) or "backend" not in entry:
                raise ValueError(f"backends[{i}]: each entry is a mapping with backend: NAME (and its fields)")
        return v

    @model_validator(mode="after")
    def _seed_aliases(self) -> "Stack":
        if self.workers:
            unknown = set(self.workers) - {"count"}
            if unknown:
                raise ValueError(f"workers: unknown field '{sorted(unknown)[0]}'; valid fields: count")
            self.worker.count = int(self.workers.get("count", self.worker.count))
        if self.lium and self.lium.get("ttl") is not None:
            self.worker.max_runtime = str(self.lium["ttl"])
        if self.mode in ("sft", "rl") and not self.config and not self.worker.command \
                and not self.worker.env.get(SEED_COMMAND_ENV[self.mode]):
            raise ValueError(f"mode {self.mode} needs config: PATH (the runner's YAML), or worker.command")
        return self

    # -- what the commander launches -----------------------------------------------------------------------------

    def job_template(self) -> dict[str, Any]:
        """The worker's Job fields, less the backend (each backends entry adds its own)."""
        command = self.worker.command or self.worker.env.get(SEED_COMMAND_ENV.get(self.mode, ""), "")
        if command:
            script, args = COMMAND_SCRIPT, [command]
        elif self.mode == "mock":
            m = self.mock
            script = MODE_SCRIPTS["mock"]
            args = ["--steps", str(m.steps), "--checkpoint-every", str(m.checkpoint_every),
                    "--step-seconds", str(m.step_seconds), "--run-name", self.run, *self.worker.args]
        else:
            script = MODE_SCRIPTS[self.mode]
            args = ["--config", str(self.config), *(["--task", self.task] if self.task else []), *self.worker.args]
        relay = {"url": self.commander.worker_url, "run_id": self.run, "ttl": self.ttl,
                 "secret_env": self.commander.shared_secret_env, "hf_repo": self.hf_repo, "hf_sync": self.hf_sync,
                 "hf_dry_run": self.hf_dry_run}
        fields: dict[str, Any] = {
            "script": script, "args": args, "name": self.run, "experiment": self.experiment,
            "env": dict(self.worker.env), "secrets": list(self.worker.secrets), "push_interval": self.worker.push_interval,
            # The commander launches from its own working directory: this project here (local:), the project's
            # snapshot on the box (ssh:).
            "relay": {k: v for k, v in relay.items() if v is not None}, "workdir": ".",
        }
        for key, value in (("datapool", self.datapool), ("endpoint_url", self.endpoint_url),
                           ("max_runtime", self.worker.max_runtime), ("grace_period", self.worker.grace_period),
                           ("gpu", self.worker.gpu)):
            if value is not None:
                fields[key] = value
        return fields

    def run_config(self) -> dict[str, Any]:
        """What the commander keeps for the run (no secret: the secret's env name only)."""
        return {"job": self.job_template(), "backends": self.backends, "workers": self.worker.count,
                "max_launches_per_hour": self.max_launches_per_hour, "backoff_s": self.backoff_s,
                "backoff_cap_s": self.backoff_cap_s}

    def plan_backends(self) -> list:
        """Every entry planned (offline): its backend exists, takes these fields and reaches the datapool's store.
        The first refusal is a UserError naming the entry; nothing has started yet."""
        from ..job import build_job
        from ..planner import make_plan
        from .keeper import merged_job

        plans = []
        for i, entry in enumerate(self.backends):
            where = f"backends[{i}] ({entry.get('backend')})"
            try:
                job = build_job(f"stack {where}", **{**merged_job(self.job_template(), entry), "workdir": self.workdir})
                plans.append(make_plan(job))
            except UserError as exc:
                msg = str(exc.args[0])
                raise UserError(msg if msg.startswith("stack ") else f"stack {where}: {msg}") from None
        return plans


def load_stack(path: str | Path) -> Stack:
    from ..profile import read_mapping

    path = Path(path)
    if not path.is_file():
        raise UserError(f"stack file not found: {path}; give a YAML stack, e.g. configs/relay/mock-local.yaml")
    data = read_mapping(path, "stack", "run: ..., commander: ..., backends: [...]")
    try:
        stack = Stack(**data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "stack"
        if err["type"] == "extra_forbidden":
            raise UserError(f"stack {path}: unknown field '{loc}'; see docs/relay.md for the fields") from None
        if err["type"] == "missing":
            raise UserError(f"stack {path}: field '{loc}' is missing; see docs/relay.md") from None
        msg = err["msg"].removeprefix("Value error, ")
        raise UserError(f"stack {path}: {loc}: {msg}") from None
    if stack.workdir == ".":
        stack.workdir = str(Path.cwd())
    return stack


# -- where `relay up` writes what it started ---------------------------------------------------------------------

def _record_path(run_id: str) -> Path:
    return launcher_home() / "relay" / f"{run_id}.json"


def save_record(run_id: str, record: dict) -> None:
    path = _record_path(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def read_record(run_id: str) -> dict | None:
    try:
        return json.loads(_record_path(run_id).read_text())
    except (OSError, ValueError):
        return None


def all_records() -> list[dict]:
    folder = launcher_home() / "relay"
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return out


def client_for(url: str, secret: str, timeout: float | None = None):
    from .. import netpolicy
    from .client import RelayClient

    try:
        return RelayClient(url, secret, timeout=netpolicy.RELAY_REQUEST_S if timeout is None else timeout)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def check_answers(client, what: str = "the commander") -> dict:
    """One signed call; a commander that does not answer or refuses the secret is one UserError line."""
    from .client import RelayAuthError, RelayCertificateError, RelayUnreachable

    try:
        return client.health()
    except RelayAuthError as exc:
        raise UserError(f"{exc}; use the same shared secret as the commander") from None
    except RelayCertificateError as exc:
        raise UserError(str(exc)) from None
    except RelayUnreachable as exc:
        raise UserError(f"{exc}; check {what}'s URL (launch relay serve prints it) and that it runs") from None


# -- commander start / stop --------------------------------------------------------------------------------------

def ensure_commander(stack: Stack, secret: str, client, say) -> dict:
    """A commander answering at the stack's address: one already there is used (`{"kind": "url"}`: `relay down`
    leaves it alone); else `local:` starts one on this machine and `ssh:` one on the box, and the record says so."""
    try:
        check_answers(client)
        return {"kind": "url"}
    except UserError:
        if stack.commander.url is not None:
            raise
    if stack.commander.local is not None:
        started = start_local_commander(stack, secret)
        say(f"commander started on {stack.commander.address} (log: {started['log']})")
    else:
        started = start_ssh_commander(stack, secret)
        say(f"commander job {started['job_id']} on {started['host']}, answering at {stack.commander.address}")
    return started


def start_local_commander(stack: Stack, secret: str, wait_s: float = 30.0) -> dict:
    c = stack.commander.local
    home = launcher_home() / "relay"
    home.mkdir(parents=True, exist_ok=True)
    state_path = c.state_path or str(home / f"{stack.run}.db")
    log_path = home / f"{stack.run}.commander.log"
    cmd = [sys.executable, "-m", "launcher", "relay", "serve", "--host", c.host, "--port", str(c.port),
           "--state-path", state_path]
    if c.tls_cert:
        cmd += ["--tls-cert", c.tls_cert, "--tls-key", c.tls_key or c.tls_cert]
    env = {**os.environ, SECRET_ENV: secret}  # the secret by environment, never in argv
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=stack.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    client = client_for(stack.commander.address, secret)
    deadline = time.time() + wait_s
    while True:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise UserError(f"the commander exited at start (code {proc.returncode}): {tail[0]}; log: {log_path}")
        try:
            check_answers(client)
            break
        except UserError:
            if time.time() > deadline:
                proc.terminate()
                raise UserError(f"the commander did not answer on {stack.commander.address} within {wait_s:.0f} s; "
                                f"log: {log_path}") from None
            time.sleep(0.2)
    from ..proc import ProcRef

    ref = ProcRef.of(proc.pid)
    return {"kind": "local", "pid": proc.pid, "start": ref.start if ref else None, "state_path": state_path,
            "log": str(log_path)}


def start_ssh_commander(stack: Stack, secret: str) -> dict:
    """The commander as a detached job on the ssh box: the snapshot brings this project there, the secret goes as
    a job secret (a 0600 file, never argv), and `launch down` of that job stops it."""
    from .. import api
    from ..job import build_job

    c = stack.commander.ssh
    if not stack.datapool:
        raise UserError("commander.ssh runs as a job on the box and needs the stack's datapool: set datapool:")
    os.environ[stack.commander.shared_secret_env] = secret
    serve = (f"python -m launcher relay serve --host {c.listen_host} --port {c.port} --state-path {c.state_path}"
             + (f" --secret-env {stack.commander.shared_secret_env}"
                if stack.commander.shared_secret_env != SECRET_ENV else ""))
    ssh = {k: v for k, v in (("host", c.host), ("identity", c.identity), ("known_hosts", c.known_hosts),
                             ("python", c.python), ("remote_dir", c.remote_dir)) if v is not None}
    job = build_job("stack commander.ssh", script=COMMAND_SCRIPT, args=[serve], backend="ssh", ssh=ssh,
                    name=f"relay-commander-{stack.run}", experiment=stack.experiment, datapool=stack.datapool,
                    endpoint_url=stack.endpoint_url, secrets=[stack.commander.shared_secret_env, *stack.worker.secrets],
                    env=dict(c.env),
                    max_runtime=c.max_runtime, workdir=stack.workdir)
    run = api.launch(job, detach=True)
    client = client_for(stack.commander.address, secret)
    deadline = time.time() + 120
    while True:
        try:
            check_answers(client)
            break
        except UserError as exc:
            if time.time() > deadline:
                api.down(run.job_id)
                raise UserError(f"the commander job {run.job_id} on {c.host} did not answer at "
                                f"{stack.commander.address} within 120 s ({exc}); stopped it") from None
            time.sleep(1)
    return {"kind": "ssh", "job_id": run.job_id, "host": c.host}


def stop_commander(record: dict) -> str:
    kind = (record.get("commander") or {}).get("kind")
    c = record["commander"]
    if kind == "local":
        from ..proc import ProcRef
        import signal

        ref = ProcRef(c["pid"], c["start"]) if c.get("start") is not None else None
        if ref is not None and ref.alive():
            ref.signal(signal.SIGTERM)
            return f"stopped the commander (pid {c['pid']})"
        return "the commander was not running"
    if kind == "ssh":
        from .. import api

        return f"commander job {c['job_id']}: {api.down(c['job_id'])}"
    return "the commander was already running before `relay up`: left alone"

