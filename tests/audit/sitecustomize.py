"""Test-only, loaded by every Python process a test starts with this folder on PYTHONPATH (tests/backends/conftest.py
`base_env`): records each network socket connected without a timeout, where it came from, into
$LAUNCHER_SOCKET_AUDIT/<pid>.txt. The contract suite fails a test that leaves such a file (issue 23: nothing waits
for ever). An audit hook sees every connect, in the client, the forked local agent and the libraries they call."""
import os
import sys

_DIR = os.environ.get("LAUNCHER_SOCKET_AUDIT")

if _DIR:
    import socket

    def _audit(event, args):
        if event != "socket.connect":
            return
        sock, address = args
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.gettimeout() is not None:
                return
        except Exception:  # noqa: BLE001 - a socket object we cannot ask is not ours to judge
            return
        import traceback

        try:
            with open(os.path.join(_DIR, f"{os.getpid()}.txt"), "a") as f:
                f.write(f"{' '.join(sys.argv)}\nconnect {address} without a timeout:\n"
                        f"{''.join(traceback.format_stack(limit=14)[:-1])}\n")
        except OSError:
            pass

    sys.addaudithook(_audit)
