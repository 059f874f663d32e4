"""The fake Modal container (tests/modal/fakemodal.py starts one per attempt): loads the function exactly as the
client sent it (cloudpickled) and its captured arguments, calls it, and leaves the pickled return value.

The container's filesystem is a folder: absolute paths under the node base in the arguments (the bootstrap, the
spec) move under FAKE_MODAL_ROOT, where the fake laid out the mounts and the volumes, as nodesim moves EC2's.
"""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path


def rebase(value, base: str, root: str):
    if isinstance(value, str):
        return value.replace(base, root + base)
    if isinstance(value, dict):
        return {k: rebase(v, base, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(rebase(v, base, root) for v in value)
    return value


def _vendored_cloudpickle_only() -> None:
    """The pickled function refers to modal's vendored cloudpickle; load that without running `modal/__init__`
    (2-3 s of imports), so the container starts about as fast as a real one relative to the job."""
    import importlib.util
    import types

    if "modal" not in sys.modules:
        pkg = types.ModuleType("modal")
        pkg.__path__ = list(importlib.util.find_spec("modal").submodule_search_locations)
        sys.modules["modal"] = pkg


def main(work: Path) -> int:
    _vendored_cloudpickle_only()
    fn = pickle.loads((work / "function.pkl").read_bytes())
    args, kwargs = pickle.loads((work / "args.pkl").read_bytes())
    base, root = os.environ["FAKE_MODAL_BASE"], os.environ["FAKE_MODAL_ROOT"]
    value = fn(*rebase(list(args), base, root), **rebase(kwargs, base, root))
    del sys.modules["modal"]  # what the function imported stays; the stub goes
    (work / "result.tmp").write_bytes(pickle.dumps(value))  # an int: what modal's serializer writes too
    os.replace(work / "result.tmp", work / "result.pkl")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
