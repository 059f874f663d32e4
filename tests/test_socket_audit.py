"""The audit hook that fails a contract test whose processes connect a socket without a timeout
(tests/audit/sitecustomize.py): it must catch one, and let a socket with a timeout pass."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

AUDIT_HOOK = Path(__file__).resolve().parent / "audit"

CONNECT = """
import socket, sys
s = socket.socket()
if sys.argv[1] == "timed":
    s.settimeout(2)
try:
    s.connect(("127.0.0.1", 9))  # nothing listens: refused at once either way
except OSError:
    pass
"""


def _run(tmp_path: Path, how: str) -> list[Path]:
    audit = tmp_path / how
    audit.mkdir()
    env = {**os.environ, "LAUNCHER_SOCKET_AUDIT": str(audit), "PYTHONPATH": str(AUDIT_HOOK)}
    subprocess.run([sys.executable, "-c", CONNECT, how], env=env, check=True, timeout=60)
    return list(audit.glob("*.txt"))


def test_a_socket_without_a_timeout_is_written_down_with_where(tmp_path):
    (found,) = _run(tmp_path, "untimed")
    text = found.read_text()
    assert "connect ('127.0.0.1', 9) without a timeout" in text and 'File "<string>", line 7' in text


def test_a_socket_with_a_timeout_passes(tmp_path):
    assert _run(tmp_path, "timed") == []
