"""`launch sync` shows a live bar (files, bytes, rate) on a terminal and plain lines in a pipe or log."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path, n: int = 40) -> None:
    for i in range(n):
        p = root / "experiments" / "demo" / "data" / "raw" / "sft" / f"part-{i:03d}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(64 * 1024))


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATAPOOL_ROOT", "LAUNCH_DATAPOOL")}
    env["LAUNCHER_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["COLUMNS"] = "120"
    return env


def test_terminal_gets_a_progress_bar(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    _tree(root)
    store.mkdir()
    argv = [sys.executable, "-m", "launcher", "sync", "up", "--root", str(root), "--datapool", f"file://{store}"]
    pid, fd = pty.fork()
    if pid == 0:  # child: stdin/stdout/stderr are the pty, as in a real terminal
        os.chdir(tmp_path)
        os.execve(sys.executable, argv, _env(tmp_path))
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "/40 files" in text, text  # the live bar's description
    assert "copied 40 files" in text
    assert "copy  experiments/" not in text  # per-file lines are for logs, not terminals
    assert len(list((store / "experiments" / "demo" / "data" / "raw" / "sft").iterdir())) == 40


def test_pipe_gets_plain_lines(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    _tree(root, 5)
    store.mkdir()
    out = subprocess.run([sys.executable, "-m", "launcher", "sync", "up", "--root", str(root),
                          "--datapool", f"file://{store}"], cwd=tmp_path, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum(line.startswith("copy  experiments/demo/data/raw/sft/part-") for line in lines) == 5
    assert "copied 5 files" in lines[-1]
    assert "\x1b[" not in out.stdout + out.stderr  # no terminal escapes in logs
