"""What the outage tests run on a node (tests/*/test_*_outage.py, tests/backends/test_contract_network.py).

ticks.py COUNT DELAY [UNTIL]: COUNT numbered lines DELAY seconds apart, then (with UNTIL) ticks on until the file
UNTIL exists (the simulated nodes run on this machine), two minutes at most. A line printed twice or lost after a
reconnect shows in the numbers.
"""

# push.py GO [EXIT]: writes a checkpoint, waits (two minutes at most) for the file GO, writes its final model, then
# exits EXIT (0 by default): what a store outage during the run or at the final push must not lose.
CHECKPOINT_THEN_WAIT = """
import os, sys, time
from pathlib import Path
exp = Path(os.environ["EXPERIMENT_DIR"])
ckpt = Path(os.environ["CHECKPOINT_DIR"]) / "checkpoint-1"
ckpt.mkdir(parents=True)
(ckpt / "weights.bin").write_bytes(b"w" * 1000)
print("started", flush=True)
go = Path(sys.argv[1])
for _ in range(2400):
    if go.exists():
        break
    time.sleep(0.05)
(exp / "model/hf/final").mkdir(parents=True)
(exp / "model/hf/final/model.bin").write_bytes(b"final")
print("done", flush=True)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""

def numbered(lines: int) -> str:
    """numbered.py: LINES numbered lines (`line 00`...), one every 0.4 s: a line printed twice or lost shows."""
    return f"""
import time
for i in range({lines}):
    print(f"line {{i:02d}}", flush=True)
    time.sleep(0.4)
"""


def until_sigterm(seconds: int) -> str:
    """slow.py: prints `started`, then waits up to SECONDS for a SIGTERM, which it exits with (143)."""
    return f"""
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
print("started", flush=True)
for i in range({seconds * 10}):
    time.sleep(0.1)
"""


def finish(proc, timeout: float) -> tuple[int, str, str]:
    """A launch run in the background: (exit code, stdout, stderr) once it ends, killed past `timeout`."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


TICKS = """
import os, sys, time
i, end = 0, time.time() + 120
while i < int(sys.argv[1]) or (len(sys.argv) > 3 and not os.path.exists(sys.argv[3]) and time.time() < end):
    print(f"tick {i:03d} " + "x" * 60, flush=True)
    time.sleep(float(sys.argv[2]))
    i += 1
"""


def assert_status_running(out) -> None:
    """`launch status JOB` (a CompletedProcess) while the backend may not answer: exit 0, and the first line is
    `running`, or the CLI's `running (unreachable since HH:MM:SS: <why>)` (launcher/cli/jobs.py)."""
    import re

    assert out.returncode == 0, out.stdout + out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("running"), out.stdout
    if "unreachable" in first:
        assert re.match(r"running \(unreachable since \d\d:\d\d:\d\d: .+\)$", first), first


def follow_through_drops(backend, handle, drop, errors, *, marker: bytes = b"tick ", max_tries: int | None = 60,
                         give_up_s: float | None = None, on_chunk=None, ended=None) -> tuple[bytes, int]:
    """A followed log read as a client reconnecting from its byte offset would: `backend.logs(handle, follow=True,
    offset=len(got))` again after each error in `errors` (or while the stream is not there yet: None). After every
    ten more `marker`s, three times, `drop()` cuts the connection. `on_chunk(got, drops)` sees each chunk. Bounded by
    `max_tries` reconnects and/or `give_up_s` seconds. Returns (every byte read, drops).
    `ended(offset)`: for a node that powers off when its job ends, the rest of the log from the store once the job
    has ended (bytes), else None. The live stream can lose its last lines to the poweroff; `launch logs -f` then
    reads them from the store's copy (joblog._follow), and so does this, once the three drops are behind it."""
    import time

    got, drops, tries = bytearray(), 0, 0
    give_up = None if give_up_s is None else time.monotonic() + give_up_s
    while True:
        tries += 1
        assert (max_tries is None or tries < max_tries) and (give_up is None or time.monotonic() < give_up), \
            f"no end after {tries} reconnects: {bytes(got[-300:])!r}"
        # Before each try (a node that is gone answers no stream at all: None, or an error)
        rest = ended(len(got)) if ended is not None and drops == 3 else None
        if rest is not None:
            return bytes(got + rest), drops
        try:
            stream = backend.logs(handle, follow=True, offset=len(got))
            if stream is None:  # not answering yet (a reconnect inside the drop)
                time.sleep(0.3)
                continue
            for chunk in stream:
                got += chunk
                if drops < 3 and got.count(marker) >= 10 * (drops + 1):
                    drops += 1
                    drop()
                if on_chunk is not None:
                    on_chunk(got, drops)
            return bytes(got), drops  # the stream ended: the job is done
        except errors:
            time.sleep(0.3)
