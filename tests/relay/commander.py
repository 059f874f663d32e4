"""A real relay commander (`python -m launcher relay serve`) in its own process on 127.0.0.1, for tests.

`kill()` is a `kill -9`; `start()` again reuses the same port and state file, as a restart after a crash would.
Its stderr (one line per refused request) is `log_path`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from launcher.relay.client import RelayClient, RelayError

from ..motoserver import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Commander:
    state_path: Path
    log_path: Path
    secret: str
    env: dict
    cwd: Path
    port: int = field(default_factory=free_port)
    keep_every: float = 1.0
    proc: subprocess.Popen | None = None
    extra: tuple = ()
    ca_file: str | None = None  # a TLS commander's certificate, for its clients

    @property
    def url(self) -> str:
        scheme = "https" if "--tls-cert" in self.extra else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def client(self, secret: str | None = None, **kw) -> RelayClient:
        kw.setdefault("ca_file", self.ca_file)
        return RelayClient(self.url, self.secret if secret is None else secret, **kw)

    def start(self, timeout: float = 30) -> "Commander":
        env = {**self.env, "RELAY_SHARED_SECRET": self.secret}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "launcher", "relay", "serve", "--port", str(self.port), "--state-path",
                 str(self.state_path), "--keep-every", str(self.keep_every), *self.extra],
                cwd=self.cwd, env=env, stdout=log, stderr=log, start_new_session=True)
        end = time.time() + timeout
        while True:
            try:
                self.client().health()
                return self
            except RelayError:
                if self.proc.poll() is not None or time.time() > end:
                    raise RuntimeError(f"commander did not start: {self.log_path.read_text()[-2000:]}")
                time.sleep(0.1)

    def kill(self) -> None:
        """kill -9: no cleanup of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
