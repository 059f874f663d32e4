"""The Modal function's body: runs in the container, before the job's code is there, so stdlib only.

It is sent by value (cloudpickle), not imported: the container has the image's packages but not launcher, which
arrives with the code snapshot the bootstrap unpacks. It runs the node bootstrap (snapshot, Python check, agent),
copies the agent's output to the container's stdout (so Modal's app logs, and `launch logs -f`, show the job), turns
a termination into a stop request to the agent (its grace period, then its result), lets a preemption notice pass
(Modal restarts the input; the job resumes from the volume), and returns the agent's exit code. Modal's own
`timeout` is the dead-man switch behind it.
"""
from __future__ import annotations


def run_node(spec: dict, bootstrap: str, base: str) -> int:
    import codecs
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    state = os.path.join(base, spec["state_dir"])
    os.makedirs(state, exist_ok=True)
    proc = subprocess.Popen(["bash", "-c", bootstrap], stdin=subprocess.DEVNULL, start_new_session=True)
    done = threading.Event()

    def forward(signum, _frame):
        # Termination (a cancelled call, a stopped app): the agent stops the script (SIGTERM, grace, SIGKILL) and
        # reports. The marker (launcher.spec.CANCEL_MARKER) makes that a cancel, not a spot job's preemption.
        try:
            open(os.path.join(state, "cancel-requested"), "w").close()
        except OSError:
            pass
        try:
            with open(os.path.join(state, "agent.pid")) as f:
                os.kill(int(f.read().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            os.killpg(proc.pid, signal.SIGTERM)

    def preempted(signum, _frame):
        # Modal's preemption notice: Modal restarts this same input on another machine, where the agent goes on
        # from the volume's last commit. A final result here would end the job for `launch status`: none is written.
        sys.stderr.write("[launcher] preempted: Modal restarts this input; the job resumes from its last commit\n")

    for sig, handler in ((signal.SIGTERM, forward), (signal.SIGINT, preempted)):
        try:
            signal.signal(sig, handler)
        except ValueError:
            pass  # not the main thread: Modal's own termination still applies

    def copy(name: str, out) -> None:
        path, offset = os.path.join(state, name), 0
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
        while True:
            finished = done.is_set()
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                offset += len(chunk)
                out.write(text.decode(chunk))
                out.flush()
            elif finished:
                return
            else:
                time.sleep(0.2)

    copiers = [threading.Thread(target=copy, args=(name, out), daemon=True)
               for name, out in (("agent.log", sys.stdout), ("setup.log", sys.stderr))]
    for t in copiers:
        t.start()
    while True:
        try:
            rc = proc.wait()
            break
        except InterruptedError:
            continue
    done.set()
    for t in copiers:
        t.join(timeout=10)
    return rc
