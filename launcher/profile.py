"""Launch profiles: a YAML file of Job fields (`--profile configs/launch/NAME.yaml`); CLI flags override it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError


def read_mapping(path: Path, what: str, example: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping; a syntax error or another type is one UserError line naming the file."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{what} {path}: not valid YAML{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path}: expected a mapping ({example}), got {type(data).__name__}")
    return data


def load_profile(path: str | Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise UserError(f"profile not found: {path}; give the path of a YAML file, e.g. configs/launch/local.yaml")
    from .relay.config import from_seed_profile

    data = read_mapping(Path(path), "profile", "job fields: gpu: A10G, ...")
    return from_seed_profile(data, f"profile {path}")  # the relay seed's run.yaml spelling


def merge(profile: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Profile values, then every override the user actually gave (None / empty = not given)."""
    merged = dict(profile)
    for key, value in overrides.items():
        if value is None or value == () or value == [] or value == {}:
            continue
        if key == "env" and isinstance(merged.get("env"), dict):
            merged["env"] = {**merged["env"], **value}
        elif key == "secrets" and isinstance(merged.get("secrets"), list):
            merged["secrets"] = list(dict.fromkeys([*merged["secrets"], *value]))
        else:
            merged[key] = value
    return merged


# -- the default profile ----------------------------------------------------------------------------------------
# Job fields every `launch` starts from: $LAUNCHER_PROFILE (a file; set to "" for none), else
# $XDG_CONFIG_HOME/launcher/config.yaml (else ~/.config/launcher/config.yaml) when it exists. A --profile file goes
# over it, flags over both. It holds defaults, not a job: no script, args or relay here.
PROFILE_ENV = "LAUNCHER_PROFILE"
_NOT_DEFAULTS = ("script", "args", "relay", "name")


def default_profile_path() -> Path | None:
    """The default profile's file, or None when there is none (a missing config.yaml is no error; a missing
    $LAUNCHER_PROFILE file is, when used)."""
    import os

    if PROFILE_ENV in os.environ:
        value = os.environ[PROFILE_ENV].strip()
        return Path(value).expanduser() if value else None
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    path = Path(base) / "launcher" / "config.yaml"
    return path if path.is_file() else None


def load_default_profile() -> dict[str, Any]:
    path = default_profile_path()
    if path is None:
        return {}
    if not path.is_file():
        raise UserError(f"${PROFILE_ENV} names {path}, which is not a file; fix it, or set {PROFILE_ENV}= for none")
    data = read_mapping(path, "default profile", "job fields: backend: ec2, gpu: A10G, ...")
    wrong = [k for k in _NOT_DEFAULTS if k in data]
    if wrong:
        raise UserError(f"default profile {path}: {wrong[0]}: belongs to one job, not to the defaults; "
                        "put it in a --profile file or on the command line")
    return data


def merge_sections(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` (a --profile) on top of `base` (the defaults): a backend's section merges field by field (the
    defaults' region stays under a profile that sets only the instance type), `env` merges, `secrets` union."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        elif key == "secrets" and isinstance(out.get(key), list) and isinstance(value, list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        else:
            out[key] = value
    return out


def launch_profile(path: str | Path | None, backend: str | None = None) -> dict[str, Any]:
    """What `launch` starts from: the default profile, then the --profile file (`path`), as one mapping; flags go
    over it (`merge`). A backend section of the defaults for a backend this launch does not use is dropped
    (`backend`: --backend, when given): the defaults may configure every backend, and only the chosen one's
    section is the job's."""
    defaults = load_default_profile()
    given = load_profile(path) if path else {}
    if not defaults:
        return given
    from .backends import BACKENDS, DEFAULT_BACKEND

    chosen = backend or given.get("backend") or defaults.get("backend") or DEFAULT_BACKEND
    defaults = {k: v for k, v in defaults.items() if k not in BACKENDS or k == chosen or k in given}
    return merge_sections(defaults, given)
