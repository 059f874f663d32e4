"""Start the fake Modal server (tests/modal/fakemodal.py) in its own process and read what it captured."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class FakeModalServer:
    url: str
    workdir: Path
    proc: subprocess.Popen

    @property
    def env(self) -> dict[str, str]:
        """What points the real client here: the server URL and a fake token."""
        return {"MODAL_SERVER_URL": self.url, "MODAL_TOKEN_ID": "ak-fake-token", "MODAL_TOKEN_SECRET": "as-fake-secret"}

    def rows(self, method: str | None = None) -> list[dict]:
        """Every recorded RPC: method, request (as JSON), time, and for some the response."""
        path = self.workdir / "captured.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [r for r in rows if method is None or r["method"] == method]

    def captured(self, method: str | None = None) -> list[dict]:
        return [r["request"] for r in self.rows(method)]

    def methods(self) -> list[str]:
        path = self.workdir / "captured.jsonl"
        return [json.loads(line)["method"] for line in path.read_text().splitlines()] if path.exists() else []

    def volume(self, name: str) -> Path:
        return self.workdir / "volumes" / name

    def add_secret(self, name: str, values: dict[str, str]) -> None:
        path = self.workdir / "secrets.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        known[name] = values
        path.write_text(json.dumps(known))

    def stop(self) -> None:
        forget_process_client()  # it points here: the next server's tests make their own
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def forget_process_client() -> None:
    """The client is one per process, made on first use from MODAL_SERVER_URL and kept: a test module that points
    MODAL_SERVER_URL at a new server must not get the last module's client (connected to a server now gone)."""
    from launcher.backends.modal import private

    private.forget_env_client()


@contextmanager
def client_pointed_at(server: FakeModalServer, url: str | None = None):
    """For a module-scoped fixture: this process's Modal client talks to `server` (or to `url`, a proxy in front of
    it) inside the block: its MODAL_* variables in os.environ, restored after, and a fresh client on either side."""
    env = {**server.env, **({"MODAL_SERVER_URL": url} if url else {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    forget_process_client()
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        forget_process_client()


def start_fake_modal(workdir: Path) -> FakeModalServer:
    """A fresh fake server; the process's client is forgotten, so the first call after the caller sets `env`
    connects here."""
    forget_process_client()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    log = open(workdir / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "tests.modal.fakemodal", str(workdir)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    end = time.time() + 60
    while not (workdir / "ports").exists():
        if proc.poll() is not None or time.time() > end:
            proc.kill()
            raise RuntimeError(f"fake Modal server did not start: {(workdir / 'server.log').read_text()[-2000:]}")
        time.sleep(0.1)
    port = (workdir / "ports").read_text().split()[0]
    return FakeModalServer(f"http://127.0.0.1:{port}", workdir, proc)
