"""The house rule for bad input, as one assertion: exit code 2 and a single `error: ...` line on stderr."""
from __future__ import annotations


def one_error_line(r, *words) -> str:
    """The error line of a finished `launch` run `r` (a CompletedProcess), which must name each of `words`."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]
