"""Build launcher's pydantic models without pydantic's plugin scan.

The first model class pydantic builds makes it read the entry points of every installed distribution, looking
for plugins: ~150 ms in a training environment, paid by every `launch` and every agent. Our models need no
plugin, so the CLI and the agent import them inside `without_plugins()`; the switch is off again afterwards, so
models a user builds in the same process (the Python API) still get theirs.
"""
from __future__ import annotations

import contextlib
import os

_VAR = "PYDANTIC_DISABLE_PLUGINS"


@contextlib.contextmanager
def without_plugins():
    old = os.environ.get(_VAR)
    os.environ[_VAR] = "__all__"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_VAR, None)
        else:
            os.environ[_VAR] = old
