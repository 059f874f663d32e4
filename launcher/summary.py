"""The plan in ten seconds: what `launch --dry-run` prints and the confirmation before a paid launch shows.

Pure: a Plan (and the facts its backend declares, `Backend.where`) -> lines of at most WIDTH columns, at most
MAX_LINES of them. Warnings come first (in colour when asked: the CLI asks on a terminal), then where it runs, the
machine, spot, price and worst case, runtime and deadline, the datapool, the snapshot, then the notes; what does
not fit is counted on the last line (`--full` and `-o json` show everything). The core names no backend here.

    lines(plan)                    # the summary, no colour
    pipeline_lines(rows, total)    # `launch pipeline --dry-run`: one row per step
"""
from __future__ import annotations

import textwrap
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plan import Plan

WIDTH = 80
MAX_LINES = 25
LABEL = 10  # the label column: "datapool  "


def _cut(text: str, width: int = WIDTH) -> str:
    text = str(text).rstrip()
    return text if len(text) <= width else text[: width - 1] + "…"


def _fact(label: str, value: str) -> str:
    return _cut(f"{label:<{LABEL - 1}} " + " ".join(str(value).split()))


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _when(ts: float | None) -> str:
    if ts is None:
        return "none"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _paths(items: list[str]) -> tuple[str, str]:
    """(the common folder, the items under it), so `pull` fits one line."""
    import os

    if not items:
        return "", ""
    common = os.path.commonprefix(items)
    common = common[: common.rfind("/") + 1] if "/" in common else ""
    return common, ", ".join(i[len(common):] or "./" for i in items)


def money(usd: float | None) -> str:
    if usd is None:
        return "?"
    return f"${usd:.2f}" if usd >= 0.1 or usd == 0 else f"${usd:.4f}"


def price_text(price: dict[str, Any], billed_seconds: int | None) -> tuple[str, float | None]:
    """("$1.006/h (spot ...); worst case $6.13 to the deadline", worst case in USD or None when unknown)."""
    hourly = price.get("usd_per_hour")
    if hourly is None:
        note = (price.get("note") or "").split(": ")[0]
        return "none known" + (f" ({note})" if note else ""), None
    worst = price.get("worst_case_usd")
    if worst is None and billed_seconds:
        worst = round(hourly * billed_seconds / 3600, 2)
    if hourly == 0:
        return f"$0 ({price.get('note') or 'free'})", 0.0
    market = price.get("market")
    # A spot price varies by zone and hour: the plan prices the on-demand list price, the worst case.
    per_hour = f"${hourly:g}/h" + (" on-demand (spot: less)" if market == "spot" else
                                   f" {market} list price" if market else "")
    return per_hour + (f"; worst case {money(worst)} to the deadline" if worst is not None else
                       "; no deadline, no worst case"), worst


def worst_case(plan: Plan) -> float | None:
    return price_text(plan.price or {}, plan.job.billed_seconds)[1]


def priced(plan: Plan) -> bool:
    """Does the plan show a price above 0 (a launch asks first on a terminal)?"""
    hourly = (plan.price or {}).get("usd_per_hour")
    return bool(hourly) and hourly > 0


def _wrapped(prefix: str, text: str) -> list[str]:
    return textwrap.wrap(" ".join(text.split()), width=WIDTH, initial_indent=prefix,
                         subsequent_indent=" " * len(prefix), break_on_hyphens=False) or [prefix.rstrip()]


def lines(plan: Plan, facts: list[tuple[str, str]] | None = None, *, color: bool = False,
          dry_run: bool = True) -> list[str]:
    """The summary. `facts`: the backend's `where(plan)` (looked up when None). `dry_run`: the header says nothing
    is created; False at the confirmation."""
    import click

    from .backends import get_backend
    from .backends.base import SNAPSHOT_FACT
    from .units import format_duration

    backend = get_backend(plan.backend)
    if facts is None:
        facts = backend.where(plan)
    stored = next((value for label, value in facts if label == SNAPSHOT_FACT), None)
    facts = [(label, value) for label, value in facts if label != SNAPSHOT_FACT]
    job, d = plan.job, plan.to_dict()
    head = [_cut(f"{plan.job_id} on {plan.backend}" + (" (dry run: nothing is created)" if dry_run else ""))]
    body = [_fact(label, value) for label, value in facts]
    if backend.capabilities.spot:
        body.append(_fact("spot", ("yes: preemptible" + (f", relaunched up to {job.max_restarts}x"
                                                         if job.max_restarts else ""))
                          if job.spot else "no (on-demand)"))
    body.append(_fact("price", price_text(plan.price or {}, job.billed_seconds)[0]))
    body.append(_fact("runtime", f"max {format_duration(job.max_runtime)}; deadline {_when(plan.deadline_at)}"
                      if job.max_runtime else "no max runtime, no deadline (--max-runtime sets both)"))
    pool = d["datapool"]
    body.append(_fact("datapool", f"{pool.get('store') or 'no store (local root only)'}; root {pool['root']}"))
    for verb in ("pull", "push"):
        common, items = _paths(pool.get(verb) or [])
        if items:
            body.append(_fact(f"  {verb}", f"{items}" + (f" (in {common})" if common else "")))
    if plan.snapshot:
        s = plan.snapshot
        body.append(_fact("snapshot", f"{s.sha256[:12]}, {_size(s.size)}, {s.files} files"
                          + ("; in the store? checked at launch" if dry_run else f"; {stored}" if stored else "")))
    tail = "all of it: --full (YAML) or -o json"
    warn = [w for text in plan.warnings for w in _wrapped("warning: ", text)]
    notes = [(n, _wrapped("note: ", n)) for n in plan.notes]
    room = MAX_LINES - len(head) - len(body) - 1  # the last line: how to see everything
    shown_warn = warn[: max(room, 0)]
    room -= len(shown_warn)
    shown_notes, left = [], len(plan.warnings) - sum(1 for w in shown_warn if w.startswith("warning: "))
    for i, (_, wrapped) in enumerate(notes):
        if len(wrapped) <= room:
            shown_notes += wrapped
            room -= len(wrapped)
        else:
            left += len(notes) - i
            break
    if len(shown_warn) < len(warn) and shown_warn:
        shown_warn[-1] = _cut(shown_warn[-1][: WIDTH - 1] + "…")
    if left:
        tail = f"{left} more note(s) and the whole request: " + ("--full or -o json" if dry_run else
                                                                  "launch --dry-run --full")
    if color:
        shown_warn = [click.style(w, fg="yellow", bold=w.startswith("warning:")) for w in shown_warn]
        head = [click.style(h, bold=True) for h in head]
    return shown_warn + head + body + shown_notes + ([_cut(tail)] if dry_run or left else [])


def text(plan: Plan, facts: list[tuple[str, str]] | None = None, *, color: bool = False,
         dry_run: bool = True) -> str:
    return "\n".join(lines(plan, facts, color=color, dry_run=dry_run)) + "\n"


def pipeline_lines(rows: list[dict], total: float, unknown: list[str], *, color: bool = False) -> list[str]:
    """`launch pipeline --dry-run`: one row per step (STEP, BACKEND, MACHINE, MAX RUNTIME, WORST CASE), the total,
    then each step's warnings. `rows`: {step, backend, machine, runtime, worst, warnings}."""
    import click

    cols = ("STEP", "BACKEND", "MACHINE", "RUNTIME", "WORST")
    cells = [(r["step"], r["backend"], r["machine"], r["runtime"], money(r["worst"]) if r["worst"] is not None
              else "?") for r in rows]
    widths = [max(len(c), *(len(str(row[i])) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    # Cut the widest free-text columns (step, machine) until the row fits.
    fixed = sum(widths) + 2 * (len(cols) - 1)
    for i in (2, 0):
        over = fixed - WIDTH
        if over > 0:
            cut = min(over, max(widths[i] - len(cols[i]), 0))
            widths[i] -= cut
            fixed -= cut
    fmt = "  ".join(f"{{:<{w}.{w}}}" for w in widths)
    out = [fmt.format(*cols).rstrip()] + [fmt.format(*(str(c) for c in row)).rstrip() for row in cells]
    out.append(_cut(f"worst case total: {money(total)}" + (f" (no price known for {', '.join(unknown)})"
                                                           if unknown else "")))
    for r in rows:
        for w in r.get("warnings") or []:
            out += [click.style(x, fg="yellow") if color else x for x in _wrapped(f"warning: {r['step']}: ", w)]
    out.append("each step's plan: --full (YAML) or -o json")
    return out
