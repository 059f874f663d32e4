"""A job's output, as `launch logs` and the SDK read it: the backend's live stream followed through drops (from the
byte offset already printed), the store's copy of log.txt (read a piece at a time, so a 1 GB log starts printing at
once and never sits in memory whole), text lines and `-n`'s start found from the end, and the node's setup logs.

The job's record, its status and its store folder come from launcher/api.py, imported when a function runs: api
re-exports `logs`, `log_lines`, `setup_logs` and `tail_store_log`, so either module may be imported first.
"""
from __future__ import annotations

import sys
import time
from typing import Iterator

from .backends.base import ACTIVE, Handle, JobState, relaunch_due


def logs(job_id: str, follow: bool = False, offset: int = 0):
    """The job's output (from byte `offset` on). Followed (`follow` while the job is active): the backend's live
    stream, reconnected after every drop from the byte offset already printed, with the store's copy read
    meanwhile where it holds the same bytes; it ends once the job has ended and its last bytes are out."""
    from .api import _handle

    rec, backend, handle = _handle(job_id)
    if follow and rec.state in ACTIVE:
        yield from _follow(job_id, backend, handle, offset)
        return
    try:
        stream = backend.logs(handle, follow=False, offset=offset) if offset else backend.logs(handle, follow=False)
    except Exception:  # noqa: BLE001 - the backend is unreachable: the store's copy answers
        stream = None
    if stream is None:
        stream = tail_store_log(handle, follow=False, offset=offset)
    yield from stream


def _follow(job_id: str, backend, handle: Handle, offset: int = 0):
    from . import netpolicy
    from .api import status

    drops, said = 0, False
    while True:
        try:
            stream = backend.logs(handle, follow=True, offset=offset)
            if stream is None:  # no live stream here (local, a node without ssh): the store's copy, followed
                yield from tail_store_log(handle, follow=True, offset=offset)
                return
            for chunk in stream:
                if said:
                    sys.stderr.write("[launcher] log stream reconnected\n")
                    said = False
                offset += len(chunk)
                drops = 0
                yield chunk
            lost = None
        except Exception as exc:  # noqa: BLE001 - a dropped connection, a timeout: reconnect below
            lost = exc
        try:
            state = status(job_id)[0]
        except Exception:  # noqa: BLE001 - a look that failed: the job is taken to go on
            state = JobState.UNREACHABLE
        if state not in ACTIVE and not relaunch_due(job_id, state):
            if backend.stream_is_store_log:  # whatever the stream did not get to: the store has all of it now
                yield from tail_store_log(handle, follow=False, offset=offset)
            return
        if lost is not None and not said:
            why = str(lost).splitlines()[0] if str(lost) else type(lost).__name__
            sys.stderr.write(f"[launcher] log stream lost ({why}); reconnecting (the job goes on)\n")
            said = True
        if backend.stream_is_store_log:  # meanwhile, what the agent pushed (the same bytes)
            for chunk in tail_store_log(handle, follow=False, offset=offset):
                offset += len(chunk)
                yield chunk
        time.sleep(netpolicy.backoff(drops, netpolicy.LOG_RECONNECT))
        drops += 1


LOG_PIECE = 1 << 20  # bytes of log.txt read and printed at a time (from one open file, or one GET on S3)


def tail_store_log(handle: Handle, follow: bool, poll: float = 1.0, offset: int = 0):
    """The store's copy of log.txt from byte `offset`; with follow, new bytes as the agent pushes them, until the
    result is there (then the rest)."""
    from .api import _jobstore, status

    js = _jobstore(handle)
    if js is None:
        return
    try:
        while True:
            state = status(handle.job_id)[0]  # reads the store's result first; relaunches nothing
            done = not follow or (state not in ACTIVE and not relaunch_due(handle.job_id, state))
            try:  # a piece at a time: a 1 GB log starts printing at once and never sits in memory whole
                for data in js.pieces("log.txt", offset, LOG_PIECE):
                    offset += len(data)
                    yield data
            except Exception:  # noqa: BLE001 - the store does not answer now: later, or (not following) nothing
                pass
            if done:
                return
            time.sleep(poll)
    finally:
        js.close()


def setup_logs(job_id: str) -> list[tuple[str, bytes | None]]:
    """A remote job's node logs from its store folder, where the agent copies them (they outlive the node):
    [("setup.log", bytes), ("agent.log", bytes)], None for one the store does not hold (yet). `logs --setup`."""
    from .api import _handle, _jobstore
    from .node.layout import NODE_LOGS

    js = _jobstore(_handle(job_id)[2])
    if js is None:
        return [(name, None) for name in NODE_LOGS]
    try:
        return [(name, js.read(name)) for name in NODE_LOGS]
    finally:
        js.close()


def log_lines(job_id: str, follow: bool = False, tail: int | None = None) -> Iterator[str]:
    """The job's output as text lines, without their newline (bytes that are not UTF-8 are replaced). `tail`: only
    the last N lines of what is there now (then, following, what comes after)."""
    import codecs
    from collections import deque

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def lines(chunks) -> Iterator[str]:
        rest = ""
        for chunk in chunks:
            rest += decoder.decode(chunk)
            *done, rest = rest.split("\n")
            for line in done:
                yield line.removesuffix("\r")
        rest += decoder.decode(b"", final=True)
        if rest:
            yield rest.removesuffix("\r")

    if tail is None:
        yield from lines(logs(job_id, follow=follow))
        return
    seen = 0

    def counted(chunks):
        nonlocal seen
        for chunk in chunks:
            seen += len(chunk)
            yield chunk

    # What is there now (read once, not followed): its last `tail` lines, read from where they start when the
    # log is the store's copy (`tail -f` on a 1 GB log prints at once), else from the beginning.
    start = _tail_start(job_id, max(tail, 0))
    yield from deque(lines(counted(logs(job_id, follow=False, offset=start))), maxlen=max(tail, 0))
    if not follow:
        return
    skip = seen

    def after(chunks):  # the followed stream from the start: the bytes already accounted for are dropped
        nonlocal skip
        for chunk in chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            yield chunk[skip:]
            skip = 0

    decoder.reset()
    yield from lines(after(logs(job_id, follow=True, offset=start)))


def _tail_start(job_id: str, tail: int) -> int:
    """The byte offset where the last `tail` lines of the job's log start, found by reading back from its end in
    the store's copy; 0 (read it all) when the log comes from the backend's own stream or the store cannot say its
    size."""
    from .api import _handle, _jobstore

    _, backend, handle = _handle(job_id)
    if backend.capabilities.remote and not backend.stream_is_store_log:
        return 0  # its live stream is the platform's own output: its bytes are not counted as log.txt's are
    try:
        stream = backend.logs(handle, follow=False)
    except Exception:  # noqa: BLE001 - unreachable: `logs` reads the store's copy, like here
        stream = None
    if stream is not None:
        if hasattr(stream, "close"):
            stream.close()
        return 0
    js = _jobstore(handle)
    if js is None:
        return 0
    try:
        size = js.size("log.txt")
        if not size:
            return 0
        if tail == 0:
            return size
        window = 64 << 10
        while True:
            start = max(0, size - window)
            data = js.read("log.txt", start, size - start) or b""
            end = len(data) - 1 if data.endswith(b"\n") else len(data)  # a last line without its newline counts
            for _ in range(tail):  # the newline before the tail's first line
                end = data.rfind(b"\n", 0, end)
                if end < 0:
                    break
            if end >= 0:
                return start + end + 1
            if start == 0:
                return 0
            window *= 4
    except Exception:  # noqa: BLE001 - the store did not answer: read from the start, as before
        return 0
    finally:
        js.close()
