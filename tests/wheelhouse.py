"""Wheels for tests that install, made from what this venv already has installed (no index, no network): each
installed distribution packed back into a wheel from its RECORD, with a RECORD of its own. uv's wheel is made the
same way from the `uv` in .venv (pyproject's dev extra), so the node runs the real uv binary."""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import re
import zipfile
from pathlib import Path

# What launcher's agent imports on a node whose store is file://: the test lock pins exactly these.
AGENT_DISTS = ("pydantic", "pydantic_core", "typing_extensions", "annotated_types", "typing_inspection", "PyYAML")


def repack(dist_name: str, dest: Path) -> Path:
    """The installed distribution `dist_name` as a wheel in `dest` (made once; its name is its version's)."""
    dist = importlib.metadata.distribution(dist_name)
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    # Every tag the wheel had, compressed as wheel names are (py2-none-any + py3-none-any: py2.py3-none-any):
    # named by its first tag alone, a py2.py3 wheel would look like a Python 2 one to an installer.
    parts = [t.split("-") for t in tags]
    if len({(abi, plat) for _, abi, plat in parts}) == 1:
        tag = ".".join(dict.fromkeys(py for py, _, _ in parts)) + f"-{parts[0][1]}-{parts[0][2]}"
    else:
        tag = tags[0]
    out = Path(dest) / f"{name}-{dist.version}-{tag}.whl"
    if out.exists():
        return out
    site = Path(str(dist.locate_file("")))
    info = next(str(f).split("/")[0] for f in dist.files if str(f).split("/")[0].endswith(".dist-info"))
    data_dir = f"{name}-{dist.version}.data"
    rows = []
    part = out.with_suffix(".part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for f in dist.files:
            rel = str(f)
            if "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            if rel.startswith(f"{info}/") and rel.split("/")[-1] in ("INSTALLER", "REQUESTED", "RECORD",
                                                                         "direct_url.json"):
                continue
            src = (site / rel).resolve()
            if rel.startswith("../"):  # a script installed in bin/: the wheel's .data/scripts/
                arc = f"{data_dir}/scripts/{Path(rel).name}"
            else:
                arc = rel
            data = src.read_bytes()
            zi = zipfile.ZipInfo(arc)
            zi.external_attr = (src.stat().st_mode & 0o777 | 0o100000) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{arc},sha256={digest},{len(data)}")
        rows.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(rows) + "\n")
    part.rename(out)
    return out


def agent_wheelhouse(dest: Path) -> tuple[Path, str]:
    """A find-links folder with the agent's dependencies, and a lock pinning exactly them."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = []
    for name in AGENT_DISTS:
        repack(name, dest)
        dist = importlib.metadata.distribution(name)
        pins.append(f"{dist.metadata['Name'].lower()}=={dist.version}")
    return dest, "".join(f"{p}\n" for p in sorted(pins))


def uv_wheel(dest: Path) -> Path:
    """The installed uv (its binary) as `uv-<version>-py3-none-<platform>.whl`."""
    dest.mkdir(parents=True, exist_ok=True)
    return repack("uv", dest)
