"""A command run with a terminal for stdin and stdout, answering its [Y/n]; and the CLI with a priced local backend,
so the confirmation shows without a cloud."""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time

# The local backend with a price, so a launch on it is "priced": the rest is the real CLI.
PRICED = ("import sys\n"
          "from launcher.backends.local.backend import LocalBackend\n"
          "LocalBackend.price = lambda self, job: {'usd_per_hour': 1.25, 'note': 'a test price'}\n"
          "from launcher.cli import main\n"
          "main(sys.argv[1:])\n")


def in_pty(args, env, cwd, answer: bytes | None, timeout=60.0) -> tuple[int, str]:
    """Run the priced CLI with a terminal for stdin and stdout; type `answer` once the prompt shows."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-c", PRICED, *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    out, sent, end = b"", False, time.time() + timeout
    try:
        while time.time() < end:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if answer is not None and not sent and b"[Y/n]" in out:
                os.write(master, answer)
                sent = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=30), out.decode(errors="replace").replace("\r\n", "\n")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
