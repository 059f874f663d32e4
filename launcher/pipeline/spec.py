"""The STEPS model and the seed's rules: ids `<type>_<idx>`, config stem = id, unique ids, known types.

A pipeline is a list of steps; each step is one job on its own backend. The rules are checked before anything
is prepared or run, each broken one a single `UserError` line naming the step and the fix.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError, did_you_mean

# Step type -> the runner it starts (relative to the project root); `script` names its own script.
RUNNERS: dict[str, tuple[str, ...]] = {
    "tokenize_cpt": ("runners/tokenize_run.py",),
    "tokenize_sft": ("runners/tokenize_run.py",),
    "train_cpt": ("runners/cpt_run.py",),
    "train_sft": ("runners/sft_run.py",),
    "train_rl": ("runners/rl_run.py",),
    "train_dpo": ("runners/dpo_run.py",),
    "train_ppo": ("runners/ppo_run.py",),
    "train_spo": ("runners/spo_run.py",),
    "train_hrm_lm": ("runners/hrm_lm_run.py",),
    "eval": ("runners/evals.py",),
    "script": (),
}
STEP_TYPES = tuple(RUNNERS)
# The seed converts Megatron <-> HF checkpoints; here checkpoints are HF format from end to end.
OUT_OF_SCOPE = {"mg2hf", "hf2mg"}
# What a step may set about where it runs; unset ones come from the pipeline, then from the launch profile.
PLACEMENT = ("backend", "gpu", "cpus", "memory", "disk", "max_runtime", "spot", "env", "secrets")
STEP_KEYS = ("id", "type", "config", "enabled", *PLACEMENT)
_ID = re.compile(r"^(?P<type>[a-z][a-z0-9_]*?)_(?P<idx>\d+)$")
# A tokenize step's config file in the experiment's steps/ folder, as the seed's prepare finds them.
TOKENIZE_FILE = re.compile(r"^(?P<id>tokenize_(?P<mode>cpt|sft)_(?P<idx>\d+))\.(?:py|yaml|yml)$")
CONFIG_EXTS = (".py", ".yaml", ".yml")


@dataclass
class Step:
    id: str
    type: str
    config: Path | None  # the step config file (steps/<id>.py or .yaml), None when the step has none
    enabled: bool = True
    placement: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)  # the config file's variables, upper-case names


def runner_for(step_type: str, project: Path) -> str | None:
    """The runner script of a step type, relative to the project root (None for `script`)."""
    names = RUNNERS[step_type]
    for name in names:
        if (project / name).is_file():
            return name
    return names[0] if names else None


def _where(source: str, i: int, entry: Any) -> str:
    sid = entry.get("id") if isinstance(entry, dict) else None
    return f"{source}: STEPS[{i}]" + (f" ({sid})" if isinstance(sid, str) else "")


def check_type(step_type: Any, where: str) -> str:
    if step_type in OUT_OF_SCOPE:
        raise UserError(f"{where}: type '{step_type}' is out of scope: checkpoints are HF format throughout, so no "
                        "conversion step is needed; drop the step and point the next one at model/hf/<run>")
    if not isinstance(step_type, str) or step_type not in RUNNERS:
        raise UserError(f"{where}: unknown type {step_type!r}{did_you_mean(str(step_type), STEP_TYPES)}; "
                        f"known types: {', '.join(STEP_TYPES)}")
    return step_type


def parse_steps(raw: Any, source: str, base_dir: Path) -> list[Step]:
    """STEPS as written -> checked Steps. `base_dir` is the pipeline file's folder (config paths are relative to it)."""
    if raw is None:
        raise UserError(f"{source}: no STEPS; define STEPS = [{{\"id\": \"train_sft_0\", \"type\": \"train_sft\", "
                        "\"config\": \"steps/train_sft_0.py\"}, ...]")
    if not isinstance(raw, (list, tuple)) or not raw:
        raise UserError(f"{source}: STEPS must be a non-empty list of steps ({{\"id\", \"type\", \"config\", "
                        f"\"enabled\"}}), got {type(raw).__name__}")
    steps: list[Step] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw):
        where = _where(source, i, entry)
        if not isinstance(entry, dict):
            raise UserError(f"{where}: a step is a mapping {{\"id\", \"type\", \"config\", \"enabled\"}}, "
                            f"got {type(entry).__name__}")
        for key in entry:
            if key not in STEP_KEYS:
                raise UserError(f"{where}: unknown key {key!r}{did_you_mean(str(key), STEP_KEYS)}; "
                                f"a step has {', '.join(STEP_KEYS)}")
        for key in ("id", "type"):
            if key not in entry:
                raise UserError(f"{where}: missing '{key}'; e.g. {{\"id\": \"train_sft_0\", \"type\": \"train_sft\"}}")
        step_type = check_type(entry["type"], where)
        sid = entry["id"]
        m = _ID.match(sid) if isinstance(sid, str) else None
        if m is None or m["type"] != step_type:
            raise UserError(f"{where}: id {sid!r} must be <type>_<idx> for type {step_type}, e.g. {step_type}_0")
        if sid in seen:
            free = max(int(_ID.match(k)["idx"]) for k in seen if k.startswith(step_type + "_")) + 1
            raise UserError(f"{where}: id {sid!r} is used twice (also STEPS[{seen[sid]}]); give each step its own "
                            f"index, e.g. {step_type}_{free}")
        seen[sid] = i
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise UserError(f"{where}: enabled must be True or False, got {enabled!r}")
        config = entry.get("config")
        path = None
        if config is not None:
            if not isinstance(config, str) or not config:
                raise UserError(f"{where}: config must be a file path such as steps/{sid}.py, got {config!r}")
            path = (base_dir / config) if not Path(config).is_absolute() else Path(config)
            if path.stem != sid:
                raise UserError(f"{where}: config {config} must be named after the step: steps/{sid}.py "
                                f"(its stem '{path.stem}' is not the id '{sid}')")
            if path.suffix not in (".py", ".yaml", ".yml"):
                raise UserError(f"{where}: config {config} must be a .py or .yaml file")
            if not path.is_file():
                raise UserError(f"{where}: config {config} not found ({path}); create it or fix the path")
        else:
            for ext in CONFIG_EXTS:  # the seed's convention: steps/<id>.py beside the pipeline
                if (base_dir / "steps" / f"{sid}{ext}").is_file():
                    path = base_dir / "steps" / f"{sid}{ext}"
                    break
        placement = {k: entry[k] for k in PLACEMENT if k in entry}
        steps.append(Step(id=sid, type=step_type, config=path, enabled=enabled, placement=placement))
    return steps


def unlisted_tokenize_steps(base_dir: Path, listed: set[str]) -> list[Step]:
    """`steps/tokenize_{cpt,sft}_<idx>.py` (or .yaml) files whose id is not in STEPS: the seed's prepare scans the
    folder and prepares their raw data, so ours does too (they never run: only STEPS run). `.py` wins over `.yaml`,
    as for a listed step; ordered by mode, then index."""
    folder = base_dir / "steps"
    if not folder.is_dir():
        return []
    found: dict[str, tuple[str, int, Path]] = {}
    for path in sorted(folder.iterdir(), key=lambda p: CONFIG_EXTS.index(p.suffix) if p.suffix in CONFIG_EXTS
                       else len(CONFIG_EXTS)):
        m = TOKENIZE_FILE.match(path.name)
        if m is None or not path.is_file() or m["id"] in listed or m["id"] in found:
            continue
        found[m["id"]] = (m["mode"], int(m["idx"]), path)
    return [Step(id=sid, type=f"tokenize_{mode}", config=path, enabled=False)
            for sid, (mode, _, path) in sorted(found.items(), key=lambda kv: kv[1][:2])]


def pick(steps: list[Step], name: str | None, flag: str) -> Step | None:
    """The step a --from/--only/--force names, or a one-line error listing the ids."""
    if name is None:
        return None
    for s in steps:
        if s.id == name:
            if not s.enabled:
                raise UserError(f"{flag} {name}: the step is disabled (enabled: False); enable it in STEPS first")
            return s
    ids = [s.id for s in steps]
    raise UserError(f"{flag} {name}: no such step{did_you_mean(name, ids)}; steps: {', '.join(ids)}")
