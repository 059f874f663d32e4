"""How a sync shows progress: a rich bar on a terminal, plain lines otherwise."""
from __future__ import annotations

import sys

from .sync import Reporter, SyncResult


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def summary(r: SyncResult) -> str:
    p = r.plan
    verb = "would copy" if r.dry_run else "copied"
    parts = [f"{verb} {len(p.copy) if r.dry_run else r.copied} files ({human(p.bytes if r.dry_run else r.bytes)})"]
    if p.delete:
        parts.append(f"{'would delete' if r.dry_run else 'deleted'} {len(p.delete) if r.dry_run else r.deleted}")
    parts.append(f"{p.unchanged} unchanged")
    if p.extra:
        parts.append(f"{len(p.extra)} only at the destination (kept; --delete removes them)")
    rate = f", {human(r.bytes / r.seconds)}/s" if r.bytes and r.seconds > 0 else ""
    return f"{r.src} -> {r.dst}: " + ", ".join(parts) + f" in {r.seconds:.2f}s{rate}"


class PlainReporter(Reporter):
    def __init__(self, out=None, verbose: bool = True):
        self.out = out or sys.stdout
        self.verbose = verbose

    def _warn_unmatched(self, r: SyncResult) -> None:
        for pat in r.unmatched_includes:
            sys.stderr.write(f"warning: --include '{pat}' matches no file on either side\n")

    def plan(self, r: SyncResult) -> None:
        self._warn_unmatched(r)
        if r.dry_run:
            for rel, size, why in r.plan.copy:
                self.out.write(f"would copy  {rel}  ({human(size)}, {why})\n")
            for rel in r.plan.delete:
                self.out.write(f"would delete  {rel}\n")

    def moved(self, action: str, path: str, size: int) -> None:
        if self.verbose:
            self.out.write(f"{action}  {path}" + (f"  ({human(size)})" if action == "copy" else "") + "\n")

    def finish(self, r: SyncResult) -> None:
        self.out.write(summary(r) + "\n")
        self.out.flush()


class RichReporter(PlainReporter):
    """Files, bytes and rate on one live bar (stderr, so stdout stays clean for pipes)."""

    def __init__(self):
        super().__init__(verbose=False)
        self.progress = None

    def plan(self, r: SyncResult) -> None:
        super().plan(r)
        if r.dry_run or not r.plan.copy:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.total_files = len(r.plan.copy)
        self.done_files = 0
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                                 console=Console(stderr=True))
        self.progress.start()
        self.bytes_task = self.progress.add_task(self._files(), total=max(1, r.plan.bytes))

    def _files(self) -> str:
        return f"{self.done_files}/{self.total_files} files"

    def moved(self, action: str, path: str, size: int) -> None:
        if self.progress is not None and action == "copy":
            self.done_files += 1
            self.progress.update(self.bytes_task, advance=size, description=self._files())

    def finish(self, r: SyncResult) -> None:
        if self.progress is not None:
            self.progress.stop()
        super().finish(r)
