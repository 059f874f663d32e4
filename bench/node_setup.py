"""How long a fresh node takes to get its venv, each way the bootstrap has (launcher/node/venvsetup.py, its own code):

    pip cold      python -m venv + pip install -r LOCK (no uv offered)
    uv cold       uv venv + uv pip install -r LOCK, empty uv cache (a fresh machine with the uv wheel)
    uv warm       the same with uv's cache already filled (a box that built another venv before)
    venv unpack   the packed venv a first node pushed: GET (here from 127.0.0.1) + tar -x + the import check

Packages come from a local wheelhouse downloaded once (`pip download`, then `--no-index --find-links` for every
run), so the network is not what is measured: the lock is a CPU-torch subset of images/requirements.lock (torch's CPU
wheel and its dependencies, numpy, launcher's own dependencies). Every row in one run, on one machine; ratios are
against pip cold of the same run. Targets: uv cold <= 1/3 of pip cold, venv unpack <= 10 s.

    .venv/bin/python bench/node_setup.py                 # wheelhouse in ~/.cache/launcher-bench/wheelhouse
    .venv/bin/python bench/node_setup.py --wheelhouse DIR --repeat 3
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launcher import nodesetup  # noqa: E402
from launcher.images import LOCK_FILE, PYTHON_VERSION, pins  # noqa: E402
from launcher.node import venvsetup  # noqa: E402
from tests.httpstore import start_http_store  # noqa: E402

# torch (CPU) and what it needs, numpy, and launcher's own dependencies: the lock's pins of these names.
SUBSET = ("torch", "filelock", "fsspec", "jinja2", "markupsafe", "mpmath", "networkx", "sympy", "typing-extensions",
          "setuptools", "numpy", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "pyyaml")
DEPS = "pydantic, yaml"  # the bootstrap's check (torch is checked after each row, outside its time)


def subset_lock(dest: Path) -> Path:
    pinned = pins(LOCK_FILE)
    missing = [n for n in SUBSET if n not in pinned]
    if missing:
        sys.exit(f"error: images/requirements.lock no longer pins {', '.join(missing)}: update SUBSET in "
                 f"{Path(__file__).name}")
    lock = dest / "requirements.lock"
    lock.write_text("".join(f"{n}=={pinned[n]}\n" for n in SUBSET))
    return lock


def wheelhouse(lock: Path, where: Path) -> Path:
    """Downloaded once: every run after installs from it with --no-index."""
    stamp = where / f".complete-{nodesetup.sha256_file(lock)[:16]}"
    if stamp.exists():
        return where
    where.mkdir(parents=True, exist_ok=True)
    print(f"downloading the wheelhouse once into {where} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(where),
                    "--requirement", str(lock)], check=True)
    stamp.touch()
    return where


def _env(wheels: Path, uv_dir: str | None) -> dict:
    """Installs from the wheelhouse only; uv on PATH only for the uv rows (no uv: the pip fallback)."""
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if not (Path(p) / "uv").exists()]
    if uv_dir:
        path.insert(0, uv_dir)
    return {"PATH": os.pathsep.join(path), "UV_OFFLINE": "1",
            "UV_DEFAULT_INDEX": "http://127.0.0.1:9/simple", "UV_FIND_LINKS": str(wheels), "UV_NO_CONFIG": "1",
            "UV_PYTHON_DOWNLOADS": "never", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels),
            "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1",
            "LAUNCHER_UV_SHA": "", "LAUNCHER_UV_URL": "", "LAUNCHER_VENV_PACK": "", "LAUNCHER_VENV_GET_URL": "",
            "LAUNCHER_VENV_PUT_URL": ""}


def _with_env(env: dict, fn, *args):
    from unittest import mock  # patch.dict: the environment put back as it was, whatever fn does

    with mock.patch.dict(os.environ, env):
        return fn(*args)


def one_round(lock: Path, wheels: Path, uv_dir: str, scratch: Path, store: Path, url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    locks = [str(lock)]
    state = str(scratch / "state")
    os.makedirs(state, exist_ok=True)

    def build(base: Path, env: dict) -> float:
        base.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        py = _with_env(env, venvsetup.build, base, locks, PYTHON_VERSION, state, DEPS)
        took = time.perf_counter() - t
        assert venvsetup.deps_ok(py, DEPS + ", torch"), f"{py} does not import {DEPS}, torch"
        return took

    pip_base, uv_base = scratch / "pip-node", scratch / "uv-node"
    out["pip cold"] = build(pip_base, _env(wheels, None))
    out["uv cold"] = build(uv_base, _env(wheels, uv_dir))
    venv = uv_base / "venvs" / venvsetup.lock_hash(locks)
    shutil.rmtree(venv)  # the cache in uv-node/cache/uv stays: the same box, its second lock
    out["uv warm"] = build(uv_base, _env(wheels, uv_dir))

    # The node that built it pushes it (after its job); a fresh node with the same base unpacks it.
    pack = f"{venv.name}-{venvsetup.node_platform()}"
    fast = {"LAUNCHER_VENV_PACK": pack, "LAUNCHER_VENV_GET_URL": f"{url}/{pack}.tar",
            "LAUNCHER_VENV_PUT_URL": f"{url}/{pack}.tar"}
    t = time.perf_counter()
    _with_env({**_env(wheels, uv_dir), **fast}, venvsetup.push, uv_base, locks, state)
    out["(pack + push, after the job)"] = time.perf_counter() - t
    if not (store / f"{pack}.tar").is_file():
        sys.exit(f"error: the pack was not pushed; see {state}/setup.log")
    out["pack MB"] = (store / f"{pack}.tar").stat().st_size / 1e6
    shutil.rmtree(uv_base)  # a fresh machine, the same base dir
    out["venv unpack"] = build(uv_base, {**_env(wheels, None), **fast})
    if "unpacked from the store" not in Path(state, "setup.log").read_text().splitlines()[-1]:
        sys.exit(f"error: the venv was not unpacked from the store; see {state}/setup.log")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheelhouse", type=Path, default=Path.home() / ".cache" / "launcher-bench" / "wheelhouse")
    p.add_argument("--repeat", type=int, default=1, help="rounds; each row is the median (default 1)")
    p.add_argument("--scratch", type=Path, default=None, help="where the venvs are built (default: a temp dir)")
    a = p.parse_args()
    if a.repeat < 1:
        print("error: --repeat must be at least 1", file=sys.stderr)
        return 2
    uv = nodesetup.which_uv()
    if not uv:
        print("error: no uv here: pip install uv (pyproject's dev extra has it)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="node-setup-bench-", dir=a.scratch))
    store = root / "store"
    server = start_http_store(store)
    url = server.url
    try:
        lock = subset_lock(root)
        torch_version = pins(lock)["torch"]
        wheels = wheelhouse(lock, a.wheelhouse)
        load_before = os.getloadavg()
        rounds = []
        for i in range(a.repeat):
            scratch = root / f"round-{i}"
            rounds.append(one_round(lock, wheels, str(Path(uv).parent), scratch, store, url))
            print(f"round {i + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in rounds[-1].items()), file=sys.stderr)
            shutil.rmtree(scratch, ignore_errors=True)
            for f in store.iterdir():
                f.unlink()
        load_after = os.getloadavg()
    finally:
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    uv_version = subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip()
    pip_version = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                                 text=True).stdout.split()[1]
    print(f"node setup: {len(SUBSET)} packages (torch {torch_version} CPU and its dependencies, numpy, "
          f"launcher's own), from a local wheelhouse; {a.repeat} round(s), median")
    print(f"machine: {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}, {uv_version}, pip "
          f"{pip_version}")
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; commit {commit}{' (dirty tree)' if dirty else ''}")
    print()
    print("| way | seconds | vs pip cold | target |")
    print("| --- | ---: | ---: | --- |")
    pip = med["pip cold"]
    targets = {"uv cold": (med["uv cold"] <= pip / 3, "<= 1/3 of pip"),
               "venv unpack": (med["venv unpack"] <= 10, "<= 10 s")}
    for way in ("pip cold", "uv cold", "uv warm", "venv unpack"):
        ok, what = targets.get(way, (None, ""))
        mark = "" if ok is None else f"{what}: {'met' if ok else 'MISSED'}"
        print(f"| {way} | {med[way]:.1f} | {med[way] / pip:.2f} | {mark} |")
    print(f"| (pack + push, after the job) | {med['(pack + push, after the job)']:.1f} | | pack "
          f"{med['pack MB']:.0f} MB |")
    return 0 if all(ok for ok, _ in targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
