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
