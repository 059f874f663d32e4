"""The node's venv from the lock: what the bootstrap runs when the node has no Python with launcher's dependencies.

Stdlib only: it runs on the node's own python3 (from the snapshot, `.launcher-agent/launcher/node/`) before any
dependency is there. Kept out of the bootstrap's text so EC2's 16 KB of user-data hold only what must be there
before the snapshot is. Run from the node's base dir:

    python3 -m launcher.node.venvsetup build LOCK [LOCK...]    prints the venv's python on its last stdout line
    python3 -m launcher.node.venvsetup push LOCK [LOCK...]     packs that venv and PUTs it to the store

`build` takes the first of these that works, for venvs/<hash>/ (hash: the first 16 hex digits of the locks'
sha256, so every job on the same lock shares it; a flock makes two jobs on one box build it once):

1. the venv is already whole there (`.ready`, written last);
2. the packed venv from the store (`$LAUNCHER_VENV_GET_URL`, offered only for the pack named
   `$LAUNCHER_VENV_PACK` = `<hash>-linux-<machine>`): downloaded, unpacked, and kept only if it imports launcher's
   dependencies (a pack made on another image may point at a Python this node lacks);
3. uv: the wheel the client offered (`tools/uv-<sha256>.whl`, fetched from `$LAUNCHER_UV_URL` when not on the node,
   used only if its sha256 is `$LAUNCHER_UV_SHA` and the binary runs here), else a `uv` on PATH. The venv uses the
   node's Python when its minor is the lock's (`--python-version`), else a uv-managed Python of that minor, kept
   under python/; uv's cache lives in cache/uv;
4. pip: `python -m venv` + `pip install -r LOCK` (no uv offered, or it cannot run on this node).

`push` (after the job, on the node that built the venv): packs `venvs/<hash>/` with the uv-managed Python it uses,
if any, as a tar (zstd where the node has it, else gzip; paths relative to the base dir, so it unpacks where every
node of this backend keeps it) and PUTs it to `$LAUNCHER_VENV_PUT_URL`. A failed push is logged, never a job's
failure: the next node installs instead.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

READY = ".ready"
_CHUNK = 1 << 20


class SetupError(Exception):
    """A step that cannot go on: its message is the setup failure's stderr."""


def log(state: str, msg: str) -> None:
    # The same lines as the bootstrap's own `log`: setup.log is one story.
    with open(os.path.join(state, "setup.log"), "a") as f:
        f.write(f"[bootstrap {time.strftime('%H:%M:%S', time.gmtime())}] {msg}\n")


def lock_hash(locks: list[str]) -> str:
    """The first 16 hex digits of the sha256 of the locks' bytes, one after the other (the venv's folder name)."""
    h = hashlib.sha256()
    for lock in locks:
        h.update(Path(lock).read_bytes())
    return h.hexdigest()[:16]


def node_platform() -> str:
    return f"linux-{platform.machine()}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _tls():
    """The store's URLs trust the job's CA where it has one (the bootstrap exports it as AWS_CA_BUNDLE), as the
    snapshot's download does; uv and pip keep the system's trust for the index."""
    import ssl

    ca = os.environ.get("AWS_CA_BUNDLE")
    return ssl.create_default_context(cafile=ca) if ca else None


def http_get(url: str, dest: Path) -> None:
    """A presigned GET into `dest` (temp file + rename: never a partial file under the final name)."""
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=120, context=_tls()) as r, open(part, "wb") as f:
        shutil.copyfileobj(r, f, _CHUNK)
    os.replace(part, dest)


def http_put(url: str, src: Path) -> None:
    size = src.stat().st_size
    with open(src, "rb") as f:
        req = urllib.request.Request(url, data=f, method="PUT",
                                     headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
        urllib.request.urlopen(req, timeout=600, context=_tls()).close()


_ZSTD, _GZIP = b"\x28\xb5\x2f\xfd", b"\x1f\x8b"


def _stream_untar(url: str, base: Path, exclude: str) -> None:
    """GET a tar straight into `tar -x` under `base` (no copy on disk first: the pack is hundreds of MB), its
    compression told by its first bytes (tar cannot tell it on a pipe)."""
    with urllib.request.urlopen(url, timeout=120, context=_tls()) as r:
        head = r.read(4)
        how = ["-I", "zstd -d"] if head == _ZSTD else ["-z"] if head[:2] == _GZIP else []
        with tempfile.TemporaryFile() as errf:  # a file, not a pipe: tar's stderr never blocks it mid-stream
            proc = subprocess.Popen(["tar", "-x", *how, "-f", "-", "-C", str(base), f"--exclude={exclude}"],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errf)
            try:
                proc.stdin.write(head)
                shutil.copyfileobj(r, proc.stdin, _CHUNK)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # tar gave up: its exit code and stderr say why
            proc.wait()
            errf.seek(0)
            err = errf.read().decode(errors="replace").strip()
        if proc.returncode:
            raise SetupError(f"tar -x failed ({proc.returncode}): {err or 'no message'}")


def _run(argv: list[str], env: dict | None = None) -> None:
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    if proc.returncode:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-20:]
        raise SetupError(f"{' '.join(argv[:3])} ... failed ({proc.returncode}): " + "\n".join(tail))


def deps_ok(python: Path, deps: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {deps}"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


# --- uv ------------------------------------------------------------------------------------------------------------

def get_uv(base: Path, state: str) -> str | None:
    """The uv binary to build with, or None (pip). The offered wheel is content-addressed: verified before use,
    unpacked once per sha256 into tools/uv-<sha>/."""
    sha, url = os.environ.get("LAUNCHER_UV_SHA", ""), os.environ.get("LAUNCHER_UV_URL", "")
    if sha:
        tools = base / "tools"
        binary = tools / f"uv-{sha}" / "uv"
        try:
            if not binary.is_file():
                wheel = tools / f"uv-{sha}.whl"
                if not wheel.is_file() or sha256_file(wheel) != sha:
                    if not url:
                        raise SetupError(f"{wheel} is missing or not sha256 {sha}")
                    tools.mkdir(parents=True, exist_ok=True)
                    http_get(url, wheel)
                    if sha256_file(wheel) != sha:
                        wheel.unlink()
                        raise SetupError(f"the uv wheel fetched is not sha256 {sha}")
                _unpack_uv(wheel, binary)
            _run([str(binary), "--version"])  # a wheel for another platform does not run here
            return str(binary)
        except (OSError, SetupError) as exc:
            log(state, f"uv offered but not usable here ({str(exc).splitlines()[0]}): pip instead")
            return None
    found = shutil.which("uv")
    if found:
        return found
    log(state, "no uv offered and none on PATH: pip")
    return None


def _unpack_uv(wheel: Path, binary: Path) -> None:
    """The wheel's `uv-<version>.data/scripts/uv`, alone, into its own folder (temp + rename)."""
    tmp = binary.parent.with_name(binary.parent.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.endswith(".data/scripts/uv")]
        if not names:
            raise SetupError(f"{wheel}: no uv binary in the wheel")
        with z.open(names[0]) as src, open(tmp / "uv", "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
    (tmp / "uv").chmod(0o755)
    try:
        os.rename(tmp, binary.parent)
    except OSError:  # another job unpacked the same sha first: the same bytes
        shutil.rmtree(tmp, ignore_errors=True)


def node_python(minor: str) -> str | None:
    """The node's own interpreter when its minor is the lock's: `python<minor>` if it runs and says so (a shim
    such as pyenv's may not), else this python3."""
    named = shutil.which(f"python{minor}")
    if named:
        said = subprocess.run([named, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True)
        if said.returncode == 0 and said.stdout.strip() == minor:
            return named
    if "%d.%d" % sys.version_info[:2] == minor:
        return sys.executable
    return None


# --- the venv ------------------------------------------------------------------------------------------------------

def _unpack_pack(base: Path, venv: Path, state: str, deps: str) -> bool:
    """Step 2: the store's pack of this very lock and platform, streamed into tar, if offered; True when the venv
    is whole."""
    url, name = os.environ.get("LAUNCHER_VENV_GET_URL", ""), os.environ.get("LAUNCHER_VENV_PACK", "")
    want = f"{venv.name}-{node_platform()}"
    if not url:
        return False
    if name != want:
        log(state, f"the store's venv is for {name}, this node needs {want}: installing")
        return False
    started = time.time()
    try:
        _stream_untar(url, base, exclude=f"venvs/{venv.name}/{READY}")
    except urllib.error.HTTPError as exc:  # 404: no node has pushed it yet
        log(state, f"no packed venv {want} in the store ({exc}): installing")
        return False
    except (OSError, SetupError) as exc:
        log(state, f"packed venv {want} did not unpack ({str(exc).splitlines()[-1]}): installing")
        shutil.rmtree(venv, ignore_errors=True)
        return False
    if not deps_ok(venv / "bin" / "python", deps):
        log(state, f"packed venv {want} does not run on this node: installing")
        shutil.rmtree(venv, ignore_errors=True)
        return False
    (venv / READY).write_text("unpacked\n")  # last, as after a build: a node cut off mid-unpack unpacks again
    log(state, f"venv {want} unpacked from the store in {time.time() - started:.1f}s")
    return True


def _install(base: Path, venv: Path, locks: list[str], minor: str, state: str) -> str:
    """Steps 3 and 4; returns how (uv or pip)."""
    uv = get_uv(base, state)
    reqs = [f"--requirement={lock}" for lock in locks]
    if uv:
        env = {**os.environ, "UV_CACHE_DIR": str(base / "cache" / "uv"),
               "UV_PYTHON_INSTALL_DIR": str(base / "python")}
        own = node_python(minor)
        if own:
            log(state, f"venv with uv on {own}")
            _run([uv, "venv", "--quiet", "--python", own, "--no-managed-python", str(venv)], env)
        else:
            log(state, f"venv with uv on a uv-managed Python {minor} (the node has none)")
            _run([uv, "venv", "--quiet", "--python", minor, "--managed-python", str(venv)], env)
        _run([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), *reqs], env)
        return "uv"
    own = node_python(minor) or sys.executable
    log(state, f"venv with pip on {own}")
    _run([own, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "pip"), "install", "-q", *reqs])
    return "pip"


def build(base: Path, locks: list[str], minor: str, state: str, deps: str) -> Path:
    venv = base / "venvs" / lock_hash(locks)
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Built where it stays (a moved venv's scripts keep the old path in their #!); the lock file outlives the build
    # so two jobs on one box build it once.
    with open(f"{venv}.building", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / READY).is_file():
            log(state, f"venv {venv.name} already built")
            return venv / "bin" / "python"
        shutil.rmtree(venv, ignore_errors=True)
        if not _unpack_pack(base, venv, state, deps):
            started = time.time()
            how = _install(base, venv, locks, minor, state)
            (venv / READY).write_text(f"{how}\n")  # last: the venv is whole
            # The node that built it packs it after the job (`push`): the job does not wait for the upload.
            (venv / ".built-here").write_text(f"{state}\n")
            log(state, f"venv {venv.name} built with {how} in {time.time() - started:.1f}s")
    return venv / "bin" / "python"


def push(base: Path, locks: list[str], state: str) -> None:
    url, name = os.environ.get("LAUNCHER_VENV_PUT_URL", ""), os.environ.get("LAUNCHER_VENV_PACK", "")
    venv = base / "venvs" / lock_hash(locks)
    marker = venv / ".built-here"
    if not (url and marker.is_file() and name == f"{venv.name}-{node_platform()}"):
        return
    started = time.time()
    members = [f"venvs/{venv.name}"]
    # A uv-managed Python lives outside the venv (its bin/python links there): it travels with it.
    real = Path(os.path.realpath(venv / "bin" / "python"))
    managed = base / "python"
    if managed in real.parents:
        members.append("/".join(real.relative_to(base).parts[:2]))
    pack = base / "venvs" / f".{name}.push.tar"
    compress = ["-I", "zstd -T0 -3"] if shutil.which("zstd") else ["-z"]
    try:
        marker.unlink()  # not in the pack: nodes that unpack it did not build it
        _run(["tar", "-cf", str(pack), *compress, "-C", str(base), *members])
        http_put(url, pack)
        log(state, f"venv {name} packed and pushed to the store ({pack.stat().st_size >> 20} MB, "
                   f"{time.time() - started:.1f}s): later nodes unpack it")
    except (OSError, SetupError) as exc:
        log(state, f"venv {name} not pushed to the store ({str(exc).splitlines()[0]}); later nodes install it")
    finally:
        pack.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launcher.node.venvsetup")
    p.add_argument("verb", choices=("build", "push"))
    p.add_argument("locks", nargs="+")
    p.add_argument("--python-version", default="3.11", help="the lock's Python minor")
    p.add_argument("--state", required=True, help="the job's state dir (setup.log)")
    p.add_argument("--deps", default="pydantic, yaml", help="what the venv must import")
    a = p.parse_args(argv)
    base = Path.cwd()
    try:
        if a.verb == "build":
            print(build(base, a.locks, a.python_version, a.state, a.deps))
        else:
            push(base, a.locks, a.state)
    except (OSError, SetupError) as exc:
        print(f"venv: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
