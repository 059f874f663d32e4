"""What a remote launch shows while it starts: its phases as they happen, each with the time since the launch began.

    snapshot -> request sent -> waiting for the machine -> node setup -> first log line

Anything on the launch path reports a phase with `report(PHASE, detail)`: the core (api.py), a backend's start (the
snapshot's upload), a backend's own view (its observation's reason: instance state, pod phase, Modal call state,
Slurm pending reason), the node (its setup.log lines, read from the job's store folder). Nothing is printed unless
a launch asked for it (`showing(True)`: the CLI does; the SDK only with `launch(job, progress=True)`). On a terminal:
rich status lines (each phase a line, a spinner on the current one, gone before the job's output starts); otherwise
one plain line per report on stderr:

    [launcher] +0.4s snapshot: 3f2a1b9c0d1e, 12 files, 45.2 KiB
    [launcher] +2.9s node setup: python

stdout is never written (it is the job id's, the JSON's and the job's own output). Stdlib only until a terminal
needs rich.
"""
from __future__ import annotations

import re
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

SNAPSHOT = "snapshot"
REQUEST_SENT = "request sent"
WAITING = "waiting for the machine"
NODE_SETUP = "node setup"
FIRST_LOG_LINE = "first log line"
PHASES = (SNAPSHOT, REQUEST_SENT, WAITING, NODE_SETUP, FIRST_LOG_LINE)

# A plain line: `[launcher] +12.3s PHASE[: detail]` (tests and scripts may parse it).
PLAIN_LINE = re.compile(r"^\[launcher\] \+(\d+\.\d)s (" + "|".join(PHASES) + r")(?:: (.*))?$")
# The node's own step lines (launcher/node/bootstrap.py's `log`, the agent's `_node_step`): the prefix goes.
_NODE_PREFIX = re.compile(r"^\[(?:bootstrap|agent) \d\d:\d\d:\d\d\] ")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class Reporter:
    """Prints phases to `stream` (stderr): rich on a terminal, plain lines otherwise. After FIRST_LOG_LINE it says
    nothing more (the job's output has the screen)."""

    def __init__(self, stream=None, *, rich: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        self.rich = bool(getattr(self.stream, "isatty", lambda: False)()) if rich is None else rich
        self.clock = clock
        self.started = clock()
        self.seen: list[tuple[str, str]] = []  # (phase, detail) in the order reported
        self.done = False
        self.job_id: str | None = None  # the job whose backend observations count (set by the foreground wait)
        self._lock = threading.Lock()
        self._status = None  # rich's live status line, on a terminal
        self._console = None
        self._pending: tuple[str, float] | None = None  # the phase the status line shows: (text, when it began)
        self._read_setup: Callable[[int], bytes | None] | None = None
        self._node_lock = threading.Lock()
        self._setup_offset = 0
        self._setup_partial = b""

    def report(self, phase: str, detail: str = "") -> None:
        detail = " ".join(str(detail).split())
        with self._lock:
            if self.done or (self.seen and self.seen[-1] == (phase, detail)):
                return
            self.seen.append((phase, detail))
            elapsed = self.clock() - self.started
            text = f"{phase}: {detail}" if detail else phase
            if self.rich:
                self._show_rich(text, elapsed, last=phase == FIRST_LOG_LINE)
            else:
                self.stream.write(f"[launcher] +{elapsed:.1f}s {text}\n")
                self.stream.flush()
            if phase == FIRST_LOG_LINE:
                self.done = True

    def _show_rich(self, text: str, elapsed: float, last: bool) -> None:
        """The phase before this one is done: its line stays (✓, when it began); this one spins, its time running."""
        from rich.console import Console

        if self._console is None:
            self._console = Console(file=self.stream, highlight=False)
        self._print_done()
        if last:
            self._pending = (text, elapsed)
            self._print_done()
            self._stop_status()
            return
        self._pending = (text, elapsed)
        self._start_status()

    def _start_status(self) -> None:
        from rich.live import Live
        from rich.markup import escape
        from rich.spinner import Spinner

        if self._status is None:
            spinner = Spinner("dots")
            reporter = self

            class Running:  # rendered at each refresh: the current phase and how long it has run
                def __rich__(self):
                    now = reporter.clock() - reporter.started
                    shown, since = reporter._pending or ("", now)
                    spinner.update(text=f"{escape(shown)} [dim]{now - since:.0f}s[/]")
                    return spinner

            # stdout goes around the status line only when it is this terminal too: piped, it stays the job id's
            # and the JSON's, untouched (`JOB=$(launch --detach ...)`).
            self._status = Live(Running(), console=self._console, transient=True, refresh_per_second=8,
                                redirect_stdout=sys.stdout.isatty(), redirect_stderr=True)
            self._status.start()

    def _print_done(self) -> None:
        from rich.markup import escape

        if self._pending is not None:
            text, elapsed = self._pending
            self._console.print(f"[green]✓[/] {escape(text)} [dim]+{elapsed:.1f}s[/]")
            self._pending = None

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    @contextmanager
    def transfer(self, label: str, total: int):
        """A transfer bar on a terminal while bytes move (`advance(n)` for each n sent); nothing otherwise."""
        if not self.rich or self.done:
            yield lambda n: None
            return
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        with self._lock:
            self._stop_status()  # one live display at a time: the bar, then the status line again
            self._console = self._console or Console(file=self.stream, highlight=False)
        bar = Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                       console=self._console, transient=True)
        try:
            with bar:
                task = bar.add_task(label, total=max(1, total))
                yield lambda n: bar.advance(task, n)
        finally:
            with self._lock:
                if self._pending is not None and not self.done:
                    self._start_status()

    def close(self) -> None:
        with self._lock:
            self.done = True
            if self._console is not None:
                self._stop_status()
                self._print_done()

    # -- what the foreground wait feeds it -------------------------------------------------------------------------

    def observed(self, job_id: str, state: str, reason: str | None) -> None:
        """A backend's view of the job while it starts: its reason, in the backend's own words, is the wait. Once
        the node has said something (node setup), the machine is there: no more waiting."""
        if (job_id == self.job_id and state in ("pending", "running") and reason
                and all(phase != NODE_SETUP for phase, _ in self.seen)):
            self.report(WAITING, reason)

    def follow_node(self, read: Callable[[int], bytes | None]) -> None:
        """Where the node's setup.log is: `read(offset)` gives its bytes from `offset` (the job's store folder)."""
        self._read_setup = read

    def node_lines(self) -> None:
        """Report the node's setup.log lines that are new since the last look (each a node setup phase)."""
        with self._node_lock:  # the foreground's looks and the output's first bytes both look
            if self.done or self._read_setup is None:
                return
            try:
                data = self._read_setup(self._setup_offset)
            except Exception:  # noqa: BLE001 - the store did not answer this time: the next look reads on
                return
            if not data:
                return
            self._setup_offset += len(data)
            *whole, self._setup_partial = (self._setup_partial + data).split(b"\n")
            for raw in whole:
                line = _NODE_PREFIX.sub("", raw.decode(errors="replace")).strip()
                if line:
                    self.report(NODE_SETUP, line)

    def until_first_output(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The job's output, unchanged; its first bytes end the phases, after the setup lines not yet shown (the
        node pushed them before its script started), and the status line goes before they print."""
        for chunk in chunks:
            if chunk and not self.done:
                self.node_lines()
                self.report(FIRST_LOG_LINE)
            yield chunk


_current: Reporter | None = None


def current() -> Reporter | None:
    """The reporter of the launch under way in this process, or None (nothing asked for progress)."""
    return _current


def report(phase: str, detail: str = "") -> None:
    """Report a phase of the launch under way; nothing when no launch asked for progress."""
    reporter = _current
    if reporter is not None:
        reporter.report(phase, detail)


@contextmanager
def showing(progress: bool | Reporter):
    """Phases reported inside go to `progress` (True: a Reporter on stderr; False: nowhere)."""
    global _current
    reporter = Reporter() if progress is True else progress or None
    previous, _current = _current, reporter
    try:
        yield reporter
    finally:
        _current = previous
        if reporter is not None:
            reporter.close()


@contextmanager
def transfer(label: str, total: int):
    """`with transfer("snapshot", size) as advance:` a bar on a terminal for the launch under way; else nothing."""
    reporter = _current
    if reporter is None:
        yield lambda n: None
        return
    with reporter.transfer(label, total) as advance:
        yield advance


def without_phases(lines: str) -> str:
    """Plain progress output (stderr) less its phase lines: the rest (notes, an error's one line) as it was."""
    return "".join(line for line in lines.splitlines(keepends=True) if not PLAIN_LINE.match(line.rstrip("\n")))


def phase_names(lines: str) -> list[str]:
    """The phases in plain progress output (stderr), in order, a phase repeated in a row counted once."""
    names: list[str] = []
    for line in lines.splitlines():
        m = PLAIN_LINE.match(line)
        if m and (not names or names[-1] != m[2]):
            names.append(m[2])
    return names
