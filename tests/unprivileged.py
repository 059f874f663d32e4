"""Run the launcher as an unprivileged user (`nobody`), from any checkout.

Root ignores permission bits, so tests of read-only directories run `launch` as nobody. That user often cannot
reach this interpreter's packages: a checkout under a 0700 home (a root user's `~/launcher`), a venv whose
python is a symlink into `/root/.pyenv`, an editable install. So the launcher runs from a copy: the `launcher`
package and every third-party package it imports, copied once per test process into a world-readable folder
under /tmp, on PYTHONPATH, with an interpreter nobody can execute (this one, or the same Python version
elsewhere on the machine: compiled extensions then still match).
"""
from __future__ import annotations

import atexit
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

NOBODY = 65534
REPO = Path(__file__).resolve().parents[1]
# What `launch`, `launch sync` and the local backend import on the paths these tests take.
ENTRY = ("launcher.cli", "launcher.cli.sync", "launcher.cli.run", "launcher.cli.app", "launcher.api",
         "launcher.datapool.sync", "launcher.datapool.s3", "launcher.datapool.s3http", "launcher.backends.local",
         "launcher.planner", "launcher.snapshot")

_cache: dict[str, object] = {}


def prefix() -> list[str]:
    """The command prefix that drops to nobody; [] when not root (permission bits already apply)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    pytest.skip("running as root with neither setpriv nor runuser: cannot make a directory read-only")


def _stdlib_dirs() -> set[str]:
    paths = sysconfig.get_paths()
    return {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib")}


def _third_party_tops() -> set[str]:
    """Top-level packages outside the stdlib and outside launcher that the entry modules import."""
    code = ("import importlib, json, sys\n"
            f"for m in {ENTRY!r}:\n"
            "    try: importlib.import_module(m)\n"
            "    except Exception: pass\n"
            "print(json.dumps({k: getattr(v, '__file__', None) for k, v in list(sys.modules.items())}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    import json

    stdlib = _stdlib_dirs()
    tops = set()
    for name, file in json.loads(out.stdout or "{}").items():
        top = name.split(".")[0]
        if not file or top == "launcher" or top in sys.stdlib_module_names:
            continue
        real = os.path.realpath(file)
        if any(real.startswith(d + os.sep) for d in stdlib) and "-packages" not in real:
            continue
        tops.add(top)
    return tops


def _copy_top(name: str, dest: Path) -> bool:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        if spec is not None and spec.submodule_search_locations:  # a namespace package
            for loc in spec.submodule_search_locations:
                shutil.copytree(loc, dest / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            return True
        return False
    src = Path(spec.origin)
    if src.name == "__init__.py":
        shutil.copytree(src.parent, dest / src.parent.name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(src, dest / src.name)
    return True


def _interpreter(pre: list[str]) -> str:
    """An interpreter nobody can run, of this Python version."""
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for cand in (sys.executable, os.path.realpath(sys.executable), shutil.which(f"python{want}"),
                 f"/usr/bin/python{want}", f"/usr/local/bin/python{want}"):
        if not cand:
            continue
        r = subprocess.run([*pre, cand, "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=60, cwd="/")
        if r.returncode == 0 and r.stdout.strip() == want:
            return cand
    pytest.skip(f"no Python {want} that the unprivileged user can run")


def _world_readable(root: Path) -> None:
    for d, dirs, files in os.walk(root):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)


def runtime() -> tuple[list[str], dict[str, str]]:
    """(argv prefix: drop to nobody + the interpreter, env additions: PYTHONPATH to the copy). Built once."""
    if "runtime" in _cache:
        return _cache["runtime"]
    pre = prefix()
    if not pre:
        _cache["runtime"] = ([sys.executable], {"PYTHONPATH": str(REPO)})
        return _cache["runtime"]
    python = _interpreter(pre)
    base = Path(tempfile.mkdtemp(prefix="launcher-nobody-", dir="/tmp"))
    atexit.register(shutil.rmtree, base, True)
    site = base / "site"
    site.mkdir()
    shutil.copytree(REPO / "launcher", site / "launcher", ignore=shutil.ignore_patterns("__pycache__"))
    for top in sorted(_third_party_tops()):
        _copy_top(top, site)
    _world_readable(base)
    env = {"PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    # Whatever the entry list missed: copied on first use, until the launcher imports.
    for _ in range(20):
        r = subprocess.run([*pre, python, "-c", "; ".join(f"import {m}" for m in ENTRY)], capture_output=True,
                           text=True, timeout=120, cwd="/", env={**os.environ, **env})
        missing = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'", r.stderr)
        if r.returncode == 0 or not missing or not _copy_top(missing[1].split(".")[0], site):
            break
        _world_readable(site)
    if r.returncode != 0:
        pytest.skip(f"cannot run the launcher as an unprivileged user here: {r.stderr.strip()[-300:]}")
    _cache["runtime"] = ([*pre, python], env)
    return _cache["runtime"]


def run(argv: list[str], env: dict, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python ARGV...` as nobody (argv without the interpreter, e.g. ["-m", "launcher", "sync", ...])."""
    pre, extra = runtime()
    return subprocess.run([*pre, *argv], env={**env, **extra}, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def nobody_tmp():
    """A fresh folder nobody can reach (0755, under /tmp), for tests whose files the unprivileged user must see.
    Not pytest's tmp_path: its /tmp/pytest-of-<user> is 0700, and any pytest session starting beside this one
    sets it back to 0700, cutting nobody off mid-test."""
    d = Path(tempfile.mkdtemp(prefix="launcher-nobody-t-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    for sub, dirs, _ in os.walk(d):
        for name in dirs:
            os.chmod(os.path.join(sub, name), 0o755)
    shutil.rmtree(d, ignore_errors=True)
