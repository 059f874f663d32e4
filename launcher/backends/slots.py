"""Named slots in a rendered request: what only `start` can know (an instance's image id, presigned URLs, a
security group made at start), left as `<<slot:NAME>>` in the request `render` returns.

`render(plan)` is pure and returns the request with its slots; `--dry-run` prints it as is. `start` computes the
slot values and sends `fill(plan.request, values)`: the same object, not a second rendering, so the golden files
(the request filled with fixed values, tests/backends/test_golden.py) hold exactly what is sent.
"""
from __future__ import annotations

import re
from typing import Any

_SLOT = re.compile(r"<<slot:([a-z_][a-z0-9_]*)>>")


def slot(name: str) -> str:
    """The placeholder for one value only `start` knows."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"bad slot name {name!r}")
    return f"<<slot:{name}>>"


def slots_in(request: Any) -> set[str]:
    """The names of every slot left anywhere in `request` (dicts, lists, strings)."""
    found: set[str] = set()
    _walk(request, lambda text: found.update(_SLOT.findall(text)) or text)
    return found


def fill(request: Any, values: dict[str, Any]) -> Any:
    """A copy of `request` with each slot replaced by its value. A string that is one slot alone takes the value
    as it is (a list, a number); inside a longer string the value is formatted in. A slot without a value, or a
    value for no slot, is an error: what is sent must be exactly what was rendered plus these values."""
    missing = slots_in(request) - set(values)
    if missing:
        raise KeyError(f"unfilled slots in the request: {', '.join(sorted(missing))}")
    unused = set(values) - slots_in(request)
    if unused:
        raise KeyError(f"values for slots the request does not have: {', '.join(sorted(unused))}")

    def one(text: str) -> Any:
        whole = _SLOT.fullmatch(text)
        if whole:
            return values[whole.group(1)]
        return _SLOT.sub(lambda m: str(values[m.group(1)]), text)

    return _walk(request, one)


def _walk(value: Any, on_text) -> Any:
    if isinstance(value, str):
        return on_text(value)
    if isinstance(value, dict):
        return {k: _walk(v, on_text) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_walk(v, on_text) for v in value)
    return value
