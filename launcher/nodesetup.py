"""Node setup's fast paths, the client's side: what a backend offers the node bootstrap so that a fresh machine gets
its venv quickly (the node's side: launcher/node/venvsetup.py). Stdlib only at import: renderers call it offline.

* **uv**: the node builds its venv with uv, pip only where uv cannot run. uv reaches the node as a content-addressed
  object, the node platform's wheel named by its sha256 (`tools/uv-<sha256>.whl` in the store, or under the ssh
  box's remote_dir), uploaded only when absent and verified on the node before use. The client gets the wheel once,
  with `pip download`, into `~/.cache/launcher/uv/` (`$XDG_CACHE_HOME`), or takes `$LAUNCHER_UV_WHEEL`.
* **the packed venv**: after the first job on a lock hash, the node packs the venv it built and PUTs it to
  `venvs/<lock hash>-<platform>.tar` in the store (a presigned URL made at submit); later nodes GET and unpack it
  instead of installing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .node import venvsetup
from .node.venvsetup import sha256_file  # the node checks the wheel with the same function

UV_VERSION = "0.13.10"
# The nodes' platform, the one the locks are resolved for (images/README.md): Linux x86_64.
UV_WHEEL_PLATFORM = "manylinux_2_17_x86_64"
NODE_PLATFORM = "linux-x86_64"
TOOLS_DIR = "tools"  # the store's folder of content-addressed tools (the uv wheel), beside code/
VENVS_DIR = "venvs"  # the store's folder of packed venvs, by lock hash and platform
WHEEL_ENV = "UV_WHEEL"  # $LAUNCHER_UV_WHEEL: a uv wheel file to use instead of downloading one


def lock_files(workdir: str | Path, gpu: bool = False) -> list[Path]:
    """The locks the node builds its venv from, as the bootstrap picks them: the project's own
    images/requirements.lock if it has one, else launcher's (it travels with the agent); the gpu lock on top where
    the node has CUDA."""
    from .images import IMAGES_DIR

    own = Path(workdir) / "images" / "requirements.lock"
    base = own if own.is_file() else IMAGES_DIR / "requirements.lock"
    out = [base]
    gpu_lock = base.with_name("requirements-gpu.lock")
    if gpu and gpu_lock.is_file():
        out.append(gpu_lock)
    return out


def lock_hash(workdir: str | Path, gpu: bool = False) -> str:
    """The venv's name on the node: the node's own lock_hash of the same locks, so client and node agree by
    construction."""
    return venvsetup.lock_hash([str(p) for p in lock_files(workdir, gpu)])


def venv_pack(workdir: str | Path, gpu: bool = False) -> str:
    """The packed venv's name: `<lock hash>-<platform>`; the node uses it only if it is its own."""
    return f"{lock_hash(workdir, gpu)}-{NODE_PLATFORM}"


def venv_key(pack: str) -> str:
    """Its key under the datapool store's root."""
    return f"{VENVS_DIR}/{pack}.tar"


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "launcher" / "uv"


def uv_wheel() -> Path:
    """The uv wheel for the nodes' platform: `$LAUNCHER_UV_WHEEL`, else the cached download, else downloaded once
    with pip into the cache. Nothing to be had is one UserError line with the fix."""
    from . import envvars
    from .errors import UserError

    named = envvars.get(WHEEL_ENV)
    if named:
        path = Path(named).expanduser()
        if not (path.is_file() and path.name.startswith("uv-") and path.suffix == ".whl"):
            raise UserError(f"LAUNCHER_{WHEEL_ENV}={named}: not a uv wheel file (uv-<version>-...whl); unset it to "
                            "download one")
        return path
    cache = _cache_dir()
    pattern = f"uv-{UV_VERSION}-*{UV_WHEEL_PLATFORM}*.whl"
    found = sorted(cache.glob(pattern))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        argv = [sys.executable, "-m", "pip", "download", f"uv=={UV_VERSION}", "--only-binary=:all:",
                "--platform", UV_WHEEL_PLATFORM, "--no-deps", "--quiet", "--dest", tmp]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
            ok = proc.returncode == 0
            why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, why = False, str(exc)
        got = sorted(Path(tmp).glob(pattern))
        if not ok or not got:
            raise UserError(f"cannot get uv {UV_VERSION} for the nodes ({why}): download it once with `pip download "
                            f"uv=={UV_VERSION} --only-binary=:all: --platform {UV_WHEEL_PLATFORM} --no-deps -d "
                            f"{cache}`, or set LAUNCHER_{WHEEL_ENV} to such a wheel")
        final = cache / got[0].name
        os.replace(got[0], final)
    return final


def offered_uv_wheel() -> Path | None:
    """The uv wheel to offer a node, or None when none can be had here (no index reachable from this machine, say):
    the node then builds its venv with pip, which is slower but the same venv, so the launch goes on with a note.
    A $LAUNCHER_UV_WHEEL that is not a uv wheel is the user's to fix and stays an error."""
    from . import envvars
    from .errors import UserError

    try:
        return uv_wheel()
    except UserError as exc:
        if envvars.get(WHEEL_ENV):
            raise
        sys.stderr.write(f"[launcher] note: the node builds its venv with pip, not uv: {exc}\n")
        return None


def uv_name(sha: str) -> str:
    """The uv wheel's name as a content-addressed object (in the store's tools/, or the node's)."""
    return f"uv-{sha}.whl"


def put_uv(store_url: str, *, endpoint_url: str | None = None) -> tuple[str, str]:
    """The uv wheel into the store's tools/, only when absent (content-addressed: same name and size is the same
    wheel); returns its sha256 and its key under the store's root, or ("", "") when there is no wheel to offer."""
    from .datapool.base import Entry
    from .datapool.stores import open_store

    wheel = offered_uv_wheel()
    if wheel is None:
        return "", ""
    sha = sha256_file(wheel)
    name = uv_name(sha)
    size = wheel.stat().st_size
    store = open_store(store_url, TOOLS_DIR, endpoint_url=endpoint_url)
    try:
        kwargs = {"lazy": True} if getattr(store, "is_local", False) else {}
        have = store.list(want=lambda rel: rel == name, **kwargs).get(name)
        if have is None or have.size != size:
            store.put_file(wheel, name, Entry(name, size, wheel.stat().st_mtime, sha))
    finally:
        store.close()
    return sha, f"{TOOLS_DIR}/{name}"


def which_uv() -> str | None:
    """uv on this machine (the bench and the tests build with it)."""
    here = Path(sys.executable).parent / "uv"
    return str(here) if here.is_file() else shutil.which("uv")
