"""Read a pipeline (pipeline.py or pipeline.yaml, one schema) and its step configs into a `Pipeline`.

pipeline.py is Python like the seed's: its upper-case module variables are the settings. pipeline.yaml holds the
same names (any case). Names the launcher does not use are shared defaults for every step's env file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import envvars
from ..errors import UserError
from .spec import Step, parse_steps, unlisted_tokenize_steps

# Pipeline-level settings the launcher reads; everything else upper-case is a default for every step's env file.
# Each registered backend's section is one too (SSH = {...}), for the steps on that backend.
JOB_KEYS = ("BACKEND", "GPU", "CPUS", "MEMORY", "DISK", "MAX_RUNTIME", "SPOT", "ENV", "SECRETS", "PUSH_INTERVAL",
            "GRACE_PERIOD")
OWN_KEYS = ("STEPS", "EXPERIMENT", "BASE_MODEL", "DATAPOOL", "ENDPOINT_URL", "PROFILE", "SEED")


def default_keys() -> tuple[str, ...]:
    from ..backends import entries

    return (*JOB_KEYS, *(name.upper() for name, e in entries().items() if e.options is not None))


@dataclass
class Pipeline:
    path: Path  # the pipeline file
    project: Path  # the project root: where `launch pipeline` runs; paths in step configs are relative to it
    experiment: str
    steps: list[Step]
    base_model: str | None = None
    datapool: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    seed: int = 0
    defaults: dict[str, Any] = field(default_factory=dict)  # job fields for every step (lower-case names)
    shared: dict[str, Any] = field(default_factory=dict)  # other variables: every step's env file starts with them
    # steps/tokenize_{cpt,sft}_<idx> files not in STEPS: prepared (their RAW), never run
    unlisted: list[Step] = field(default_factory=list)

    @property
    def enabled(self) -> list[Step]:
        return [s for s in self.steps if s.enabled]


def read_vars(path: Path, what: str, *, lower: bool = False) -> dict[str, Any]:
    """The upper-case variables of a .py file (`lower`: the lower-case ones too), or the keys (upper-cased) of a
    .yaml file."""
    if path.suffix in (".yaml", ".yml"):
        from ..profile import read_mapping

        data = read_mapping(path, what, "STEPS: [...], ...")
        return {str(k).upper(): v for k, v in data.items()}
    if path.suffix != ".py":
        raise UserError(f"{what} {path}: use a .py or .yaml file")
    import runpy

    try:
        names = runpy.run_path(str(path), run_name="__pipeline__")
    except SyntaxError as exc:
        raise UserError(f"{what} {path}: Python syntax error at line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - the user's file: say where it broke, in one line
        raise UserError(f"{what} {path}: failed to load: {type(exc).__name__}: {exc}") from None
    return {k: v for k, v in names.items() if (lower or k.isupper()) and not k.startswith("_") and not callable(v)
            and type(v).__name__ != "module"}


def read_step_config(step: Step, path: Path) -> dict[str, Any]:
    """A step config's variables. One that sets SCRIPT keeps its lower-case names too: the seed exports every
    variable of such a config to its script (`lr = "2e-5"` -> $lr), and so do we (stepenv.script_env)."""
    names = read_vars(path, f"step {step.id}: config", lower=True)
    if "SCRIPT" in names:
        return names
    return {k: v for k, v in names.items() if k.isupper()}


def load_pipeline(path: str | Path, project: str | Path = ".") -> Pipeline:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"pipeline not found: {path}; pass -c configs/experiments/NAME/pipeline.py (or pipeline.yaml)")
    p = p.resolve()
    source = str(path)
    data = read_vars(p, "pipeline")
    steps = parse_steps(data.get("STEPS"), source, p.parent)
    unlisted = unlisted_tokenize_steps(p.parent, {s.id for s in steps})
    for step in (*steps, *unlisted):
        if step.config is not None:
            step.values = read_step_config(step, step.config)
    experiment = data.get("EXPERIMENT") or p.parent.name
    if not isinstance(experiment, str):
        raise UserError(f"{source}: EXPERIMENT must be a name such as 'demo', got {experiment!r}")
    seed = data.get("SEED", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"{source}: SEED must be an integer (the raw-data shuffle seed), got {seed!r}")
    for key in ("BASE_MODEL", "DATAPOOL", "ENDPOINT_URL", "PROFILE"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise UserError(f"{source}: {key} must be a string, got {data[key]!r}")
    keys = default_keys()
    defaults = {k.lower(): data[k] for k in keys if data.get(k) is not None}
    shared = {k: v for k, v in data.items() if k not in (*OWN_KEYS, *keys)}
    datapool = data.get("DATAPOOL") or envvars.get("DATAPOOL") or None
    return Pipeline(path=p, project=Path(project).resolve(), experiment=experiment, steps=steps,
                    base_model=data.get("BASE_MODEL"), datapool=datapool, endpoint_url=data.get("ENDPOINT_URL"),
                    profile=data.get("PROFILE"), seed=seed, defaults=defaults, shared=shared, unlisted=unlisted)
