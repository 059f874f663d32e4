"""Progress for long data jobs: a rich bar with docs/s and tokens/s on a TTY, plain lines in logs."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total_docs: int | None, label: str, interval_s: float = 10.0, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.label, self.interval = total_docs, label, interval_s
        self.docs = self.tokens = 0
        self.t0 = self.last = time.monotonic()
        self._rich = None
        if getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(),
                TextColumn("{task.completed:,} docs"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                console=Console(file=self.stream), transient=False,
            )
            self._task = self._rich.add_task(label, total=total_docs, rate="")
            self._rich.start()

    def rates(self) -> tuple[float, float]:
        dt = max(time.monotonic() - self.t0, 1e-9)
        return self.docs / dt, self.tokens / dt

    def update(self, docs: int, tokens: int) -> None:
        self.docs += docs
        self.tokens += tokens
        now = time.monotonic()
        if self._rich is not None:
            dps, tps = self.rates()
            self._rich.update(self._task, completed=self.docs, rate=f"{dps:,.0f} docs/s  {tps:,.0f} tok/s")
        elif now - self.last >= self.interval:
            self.last = now
            self._line()

    def _line(self, prefix: str = "") -> None:
        dps, tps = self.rates()
        of = f"/{self.total:,}" if self.total else ""
        print(f"{prefix}{self.label}: {self.docs:,}{of} docs  {self.tokens:,} tokens  "
              f"{dps:,.0f} docs/s  {tps:,.0f} tokens/s", file=self.stream, flush=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
        self._line(prefix="done ")
