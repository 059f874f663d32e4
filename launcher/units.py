"""Durations ("2h", "1h30m", "90s") and sizes ("16Gi", "100GB") as users type them."""
from __future__ import annotations

import re

from .errors import UserError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value, what: str = "duration") -> int:
    """Seconds from `90`, `90s`, `30m`, `2h`, `1h30m`, `1d`."""
    if isinstance(value, bool):
        raise UserError(f"bad {what} {value!r}: use a number of seconds or a form like 90s, 30m, 2h, 1h30m")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise UserError(f"bad {what} {value!r}: must be positive (e.g. 30m, 2h)")
        return int(value)
    text = str(value).strip().lower()
    if text.isdigit():
        return parse_duration(int(text), what)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UserError(f"bad {what} {value!r}: use a number of seconds or a form like 90s, 30m, 2h, 1h30m")
    seconds = sum(float(n) * _SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"bad {what} {value!r}: must be positive (e.g. 30m, 2h)")
    return int(seconds)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)b?$")


def parse_size(value, what: str = "size") -> int:
    """Bytes from `16Gi`, `16GiB`, `100GB`, `512M`, or a plain byte count."""
    if isinstance(value, bool):
        raise UserError(f"bad {what} {value!r}: use a form like 16Gi, 100GB or 512Mi")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise UserError(f"bad {what} {value!r}: must be positive")
        return int(value)
    m = _SIZE.match(str(value).strip().lower())
    if not m:
        raise UserError(f"bad {what} {value!r}: use a form like 16Gi, 100GB or 512Mi")
    number, prefix, binary = m.groups()
    power = " kmgtp".index(prefix or " ")
    base = 1024 if (binary or not prefix) else 1000
    size = int(float(number) * base**power)
    if size <= 0:
        raise UserError(f"bad {what} {value!r}: must be positive")
    return size
