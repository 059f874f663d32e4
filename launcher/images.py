"""The node image, from one lock: `images/requirements.lock` feeds the Dockerfile (k8s, EC2 when an image is
used), the Modal image and the venv the node bootstrap builds when no image is used. The image tag is the lock's
hash, so a tag names exactly one set of dependencies.

`images/requirements-gpu.lock` holds only what the `gpu` extra adds, resolved together with the base lock; it goes on
top where CUDA is present. Both are written by `python images/lock.py` (images/README.md). Stdlib only at import:
the bootstrap renderer imports this module on every launch.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from . import envvars

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
LOCK_FILE = IMAGES_DIR / "requirements.lock"
GPU_LOCK_FILE = IMAGES_DIR / "requirements-gpu.lock"
DOCKERFILE = IMAGES_DIR / "Dockerfile"
PYPROJECT = IMAGES_DIR.parent / "pyproject.toml"
# pyproject's extras each lock pins (besides launcher's own dependencies, which the base lock always pins).
# track: a remote job's `report_to: [wandb]` must find wandb on the node.
LOCKED_EXTRAS = ("aws", "train", "track")
GPU_EXTRAS = ("gpu",)
# One CUDA + Python base for the Dockerfile and the Modal image.
CUDA_BASE = "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"
PYTHON_VERSION = "3.11"
# Where `launch image build --push` puts it unless told otherwise; k8s uses it as the default --image.
DEFAULT_REPO = "ghcr.io/launcher-ml/node"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def lock_hash(lock: Path | None = None) -> str:
    """First 12 hex digits of the lock's sha256 (default LOCK_FILE): the image tag."""
    return hashlib.sha256((lock or LOCK_FILE).read_bytes()).hexdigest()[:12]


def default_repo() -> str:
    return envvars.get("IMAGE_REPO", DEFAULT_REPO)


def default_image() -> str:
    return f"{default_repo()}:{lock_hash()}"


def normalize(name: str) -> str:
    """PEP 503: `Foo_Bar` and `foo-bar` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(*locks: Path) -> dict[str, str]:
    """{normalized name: version} of every `name==version` line in the locks."""
    out = {}
    for lock in locks:
        for line in lock.read_text().splitlines():
            if m := _PIN.match(line.strip()):
                out[normalize(m.group(1))] = m.group(2)
    return out


def lock_mismatches(pyproject: Path | None = None, lock: Path | None = None,
                    gpu_lock: Path | None = None) -> list[str]:
    """What pyproject asks for that the locks do not pin at a satisfying version, one line each ([] = in step).
    The base lock must cover launcher's dependencies and LOCKED_EXTRAS; base + gpu lock must cover GPU_EXTRAS.
    Defaults: this module's PYPROJECT, LOCK_FILE, GPU_LOCK_FILE (read at call time)."""
    import tomllib

    from packaging.requirements import Requirement  # pip's own parser; every environment with pip has it

    pyproject, lock, gpu_lock = pyproject or PYPROJECT, lock or LOCK_FILE, gpu_lock or GPU_LOCK_FILE
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    base_pins = pins(lock)
    wanted = [(dep, base_pins, lock) for dep in project.get("dependencies", [])]
    wanted += [(dep, base_pins, lock) for extra in LOCKED_EXTRAS for dep in extras.get(extra, [])]
    if gpu_lock.exists():
        both = {**base_pins, **pins(gpu_lock)}
        wanted += [(dep, both, gpu_lock) for extra in GPU_EXTRAS for dep in extras.get(extra, [])]
    problems = []
    for dep, pinned, where in wanted:
        req = Requirement(dep)
        if req.marker and not req.marker.evaluate({"python_version": PYTHON_VERSION, "sys_platform": "linux",
                                                   "platform_machine": "x86_64", "extra": ""}):
            continue  # not for the nodes' platform
        version = pinned.get(normalize(req.name))
        if version is None:
            problems.append(f"{dep}: not pinned in {where.name}")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{dep}: {where.name} pins {version}")
    return problems
