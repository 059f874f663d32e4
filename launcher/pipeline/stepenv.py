"""A step -> its job: the runner's arguments, the flat env file at STEP_ENV_PATH, its outputs and inputs.

The runners keep reading their config the way they always do (`--config FILE --task T --set key=value`); the
step's variables are also written, flat, to an env file in the datapool (`data/pipeline/<id>.env`, pulled with
data/ on every backend) for scripts that want them. `read_step_env()` reads it back with the stdlib only.

The variables read here: CONFIG, TASK, SET, ARGS, SCRIPT, RAW, OUTPUTS, INPUTS (docs/pipelines.md).

SCRIPT, on any step type, replaces the type's runner the seed's way: the script gets the step's settings (the
pipeline's shared variables and every variable of its config) as environment variables, plus ARGS as its
arguments, and no runner flags. The type then only names the step's outputs (what a skip checks) and its place in
the chaining (MODEL_PREFIX, INPUTS); the script learns its outputs from STEP_OUTPUTS.

Chaining, unless the step's SET says otherwise: a training/eval runner is named after its step (run_name) and
starts from MODEL_PREFIX, the previous training step's final model (model/hf/<id>) or else the base model; an
SFT (CPT) step reads the last tokenize_sft (tokenize_cpt) step's output; an eval step writes
reports/eval/<id>.json.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .load import Pipeline
from .spec import Step, runner_for

# Runners whose config has run_name and model.name_or_path: the pipeline chains them (MODEL_TYPES write
# model/hf/<run_name>). train_hrm_lm keeps its own config untouched.
MODEL_TYPES = ("train_cpt", "train_sft", "train_rl", "train_dpo", "train_ppo", "train_spo")
RUN_CONFIG_TYPES = (*MODEL_TYPES, "eval")
ENV_DIR = "data/pipeline"  # inside the experiment: pulled with data/ before every step


@dataclass
class StepJob:
    step: Step
    script: str
    args: list[str]
    env_file: str  # the env file's text
    env: dict[str, str]  # STEP_* variables for the job
    outputs: list[str]  # experiment-relative: what must be in the store for the step to count as done
    config_hash: str
    fields: dict[str, Any] = field(default_factory=dict)  # the Job's fields
    replaces: str | None = None  # the type's runner that the step's SCRIPT replaced (None: the type's own runner)

    @property
    def note(self) -> str | None:
        """What --dry-run says of a step whose SCRIPT replaced its type's runner."""
        if not self.replaces:
            return None
        outs = ", ".join(self.outputs) or "none"
        return (f"SCRIPT {self.script} replaces {self.replaces} (settings as environment variables, ARGS as "
                f"arguments); {self.step.type} still names its outputs, checked before a skip: {outs}")

    @property
    def env_path(self) -> str:
        return f"{ENV_DIR}/{self.step.id}.env"


def base_model_name(spec: str | None) -> str | None:
    """model/base/<name> of a BASE_MODEL: `tiny:NAME`, a local path, or a Hugging Face id."""
    if not spec:
        return None
    if spec.startswith("tiny:"):
        return spec[len("tiny:"):]
    return Path(spec.rstrip("/")).name


def raw_sources(step: Step) -> list[str]:
    raw = step.values.get("RAW")
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not all(isinstance(r, str) and r for r in raw):
        raise UserError(f"step {step.id}: RAW must be a list of files (jsonl, json or txt), got {raw!r}")
    return list(raw)


def raw_target(step: Step) -> str:
    """Where prepare merges a tokenize step's raw sources (experiment-relative)."""
    return f"data/raw/{step.type.removeprefix('tokenize_')}/{step.id}.jsonl"


def _list(step: Step, key: str) -> list[str]:
    value = step.values.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in value):
        raise UserError(f"step {step.id}: {key} must be a list of strings, got {value!r}")
    return [str(v) for v in value]


def _args(step: Step) -> list[str]:
    """ARGS: a list, appended as written, or one string split as a shell would (the seed's ARGS is a string)."""
    value = step.values.get("ARGS", [])
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise UserError(f"step {step.id}: ARGS {value!r}: {exc}; fix the quoting or give a list") from None
    return _list(step, "ARGS")


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def script_env(pipe: Pipeline, step: Step) -> dict[str, str]:
    """A SCRIPT step's settings as environment variables (the seed exports each variable of the step config to
    its script): the pipeline's shared variables, then the config's, flattened as in the env file."""
    from ..job import RESERVED_ENV

    out = {}
    for key, value in {**pipe.shared, **step.values}.items():
        if not _ENV_NAME.match(key):
            raise UserError(f"step {step.id}: {key!r} cannot be an environment variable, and a SCRIPT step gets "
                            "each setting as one; rename it with letters, digits and '_'")
        if key in RESERVED_ENV:
            raise UserError(f"step {step.id}: {key} is set by launch on every node, so a SCRIPT step cannot get "
                            "it from its config; rename the setting")
        out[key] = _value(value)
    return out


def _flat_set(step: Step) -> dict[str, Any]:
    """SET = {"trainer": {"max_steps": 5}} or {"trainer.max_steps": 5} -> {"trainer.max_steps": 5}."""
    raw = step.values.get("SET", {})
    if not isinstance(raw, dict):
        raise UserError(f"step {step.id}: SET must be a mapping of config keys, e.g. {{\"trainer.max_steps\": 5}}")
    out: dict[str, Any] = {}

    def walk(prefix: str, node: dict) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                walk(key + ".", v)
            else:
                out[key] = v

    walk("", raw)
    return out


def _value(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)


def env_text(values: dict[str, Any]) -> str:
    lines = []
    for key in sorted(values):
        text = _value(values[key])
        if "\n" in text:
            text = json.dumps(text)  # one line per variable; read_step_env() undoes it
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def read_step_env(path: str | os.PathLike | None = None) -> dict[str, str]:
    """The step's variables from STEP_ENV_PATH (or `path`): values are strings; lists and dicts are JSON."""
    path = path or os.environ.get("STEP_ENV_PATH")
    if not path:
        return {}
    out = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = json.loads(value) if value.startswith('"') and value.endswith('"') and len(value) > 1 else value
    return out


def _yaml_keys(project: Path, config: str | None) -> set[str]:
    if not config or not (project / config).is_file():
        return set()
    import yaml

    try:
        data = yaml.safe_load((project / config).read_text()) or {}
    except yaml.YAMLError:
        return set()  # the runner reports the bad YAML itself, in its own words
    return set(data) if isinstance(data, dict) else set()


def _file_digest(project: Path, rel: str | None) -> str | None:
    if not rel:
        return None
    path = project / rel
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _tokenize_args(pipe: Pipeline, step: Step, config: str | None, sets: dict[str, Any]) -> tuple[list[str], str]:
    mode = step.type.removeprefix("tokenize_")
    given = _yaml_keys(pipe.project, config) | {k.replace("-", "_") for k in sets}
    args = ["--config", config] if config else []
    name = sets.get("name") or step.id
    auto = {"mode": mode, "name": step.id}
    if raw_sources(step):
        auto["input"] = Path(raw_target(step)).name  # the tokenizer looks in data/raw/<mode>/ of the experiment
    base = base_model_name(pipe.base_model)
    if base and not sets.get("train_tokenizer"):
        auto["tokenizer"] = f"model/base/{base}"
    for key, value in auto.items():
        if key not in given:
            args += [f"--{key.replace('_', '-')}", value]
    for key, value in sets.items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            args.append(flag)
        elif value is not False and value is not None:
            args += [flag, _value(value)]
    return args, f"data/tokenized/{mode}/{name}"


def build_step(pipe: Pipeline, step: Step, before: list[Step], profile: dict[str, Any] | None = None) -> StepJob:
    """`before`: the enabled steps ahead of this one, in order; `profile`: the launch profile's job fields."""
    profile = profile or {}
    values = step.values
    sets = _flat_set(step)
    config, task = values.get("CONFIG"), values.get("TASK")
    for key, v in (("CONFIG", config), ("TASK", task), ("SCRIPT", values.get("SCRIPT"))):
        if v is not None and not isinstance(v, str):
            raise UserError(f"step {step.id}: {key} must be a path string, got {v!r}")
    if config and not (pipe.project / config).is_file():
        raise UserError(f"step {step.id}: CONFIG {config} not found under {pipe.project}; paths in a step config "
                        "are relative to the project root (run launch pipeline from there)")
    trained = [s for s in before if s.type in MODEL_TYPES]
    base = base_model_name(pipe.base_model)
    model_prefix = (f"model/hf/{_run_name(trained[-1])}" if trained
                    else f"model/base/{base}" if base else "")
    outputs: list[str] = []
    replaces = None
    if "SCRIPT" in values and not values["SCRIPT"]:
        raise UserError(f"step {step.id}: SCRIPT is empty; give the script's path (relative to the project root) "
                        "or drop SCRIPT to run the type's runner")
    if step.type == "script" and not values.get("SCRIPT"):
        raise UserError(f"step {step.id}: a script step needs SCRIPT = \"path/to/script.py\" in its config "
                        f"({step.config or f'steps/{step.id}.py'})")
    if values.get("SCRIPT"):
        # The seed's way, on any type: SCRIPT instead of the type's runner, with the step's settings in its
        # environment (script_env below) and ARGS alone as its arguments; the type keeps naming its outputs.
        script = values["SCRIPT"]
        args: list[str] = []
        outputs = _type_outputs(pipe, step)
        replaces = runner_for(step.type, pipe.project)
    else:
        script = runner_for(step.type, pipe.project)
        if step.type.startswith("tokenize_"):
            args, out = _tokenize_args(pipe, step, config, sets)
            outputs.append(out)
        else:
            args = (["--config", config] if config else []) + (["--task", task] if task else [])
            auto: dict[str, Any] = {}
            if step.type in RUN_CONFIG_TYPES:
                auto["run_name"] = step.id
                if model_prefix and "model.name_or_path" not in sets:
                    auto.update({"model.name_or_path": model_prefix, "model.init": "pretrained"})
                if step.type == "eval":
                    auto["eval.name"] = step.id
                sft_tok = [s for s in before if s.type == "tokenize_sft"]
                cpt_tok = [s for s in before if s.type == "tokenize_cpt"]
                if step.type == "train_sft" and sft_tok:
                    auto["data.pretokenized"] = _tokenize_output(pipe, sft_tok[-1])
                if step.type == "train_cpt" and cpt_tok:
                    auto["data.tokenized"] = _tokenize_output(pipe, cpt_tok[-1])
            for key, value in {**auto, **sets}.items():
                args += ["--set", f"{key}={_value(value) if value is not None else 'null'}"]
            run_name = sets.get("run_name", auto.get("run_name"))
            if step.type == "eval":
                outputs.append(f"reports/eval/{sets.get('eval.name', step.id)}.json")
            elif step.type in MODEL_TYPES:
                outputs.append(f"model/hf/{run_name}")
    args += _args(step)
    if "OUTPUTS" in values:
        outputs = _list(step, "OUTPUTS")
    for out in outputs:
        if Path(out).is_absolute() or ".." in Path(out).parts:
            raise UserError(f"step {step.id}: OUTPUTS entry {out!r} must be relative to the experiment dir")
    if "INPUTS" in values:
        inputs = _list(step, "INPUTS")
    else:  # what earlier steps left under model/ (data/ and model/base/ are pulled anyway)
        inputs = [o for s in before for o in default_outputs(pipe, s)
                  if o.startswith("model/") and not o.startswith("model/base")]
    env = {"STEP_ID": step.id, "STEP_TYPE": step.type, "MODEL_PREFIX": model_prefix,
           "STEP_ENV_PATH": f"{ENV_DIR}/{step.id}.env"}
    if inputs:
        env["STEP_INPUTS"] = ",".join(inputs)
    file_values = {**pipe.shared, **values, "STEP_ID": step.id, "STEP_TYPE": step.type, "MODEL_PREFIX": model_prefix,
                   "EXPERIMENT": pipe.experiment, "STEP_SCRIPT": script, "STEP_ARGS": args}
    text = env_text(file_values)
    fields = job_fields(pipe, step, profile, script, args, env)
    # What the step computes from: a change here re-runs it (and, through its new outputs, every step after it).
    # Placement (backend, GPU, limits) is left out: the same step on another machine gives the same outputs.
    digest = hashlib.sha256(json.dumps({
        "type": step.type, "script": script, "args": args, "env_file": text,
        "files": {rel: _file_digest(pipe.project, rel) for rel in (config, task, values.get("SCRIPT")) if rel},
        "env": {k: v for k, v in sorted(fields["env"].items())},
    }, sort_keys=True, default=str).encode()).hexdigest()
    if values.get("SCRIPT"):
        # Added after the hash: the settings are in the env file's text and the outputs follow from it, so a step
        # that ran before scripts got these variables is still up to date. Settings win over the pipeline's ENV
        # (the seed: the step config over the environment); the STEP_* variables win over both.
        fields["env"] = {**fields["env"], **script_env(pipe, step), **env, "STEP_OUTPUTS": ",".join(outputs)}
    return StepJob(step=step, script=script, args=args, env_file=text, env=env, outputs=outputs, config_hash=digest,
                   fields=fields, replaces=None if step.type == "script" else replaces)


def job_fields(pipe: Pipeline, step: Step, profile: dict[str, Any], script: str, args: list[str],
               step_env: dict[str, str]) -> dict[str, Any]:
    """The step's Job fields: the launch profile, then the pipeline's defaults, then the step's own placement."""
    from ..profile import merge

    # A backend's own section (ssh:, k8s:, ...) applies to the steps on that backend only: the Job sets the others
    # aside unvalidated.
    fields = merge(merge(profile, pipe.defaults), step.placement)
    env = fields.get("env") or {}
    if not isinstance(env, dict):
        raise UserError(f"step {step.id}: env must be a mapping of NAME: value, got {env!r}")
    fields["env"] = {str(k): _value(v) for k, v in env.items()} | step_env
    secrets = fields.get("secrets") or []
    fields["secrets"] = [secrets] if isinstance(secrets, str) else secrets
    fields.update(script=script, args=args, name=step.id, experiment=pipe.experiment, workdir=str(pipe.project))
    if pipe.datapool:
        fields["datapool"] = pipe.datapool
    if pipe.endpoint_url:
        fields["endpoint_url"] = pipe.endpoint_url
    return fields


def _run_name(step: Step) -> str:
    sets = _flat_set(step)
    return str(sets.get("run_name", step.id))


def _tokenize_output(pipe: Pipeline, step: Step) -> str:
    sets = _flat_set(step)
    return f"data/tokenized/{step.type.removeprefix('tokenize_')}/{sets.get('name') or step.id}"


def default_outputs(pipe: Pipeline, step: Step) -> list[str]:
    if "OUTPUTS" in step.values:
        return _list(step, "OUTPUTS")
    return _type_outputs(pipe, step)


def _type_outputs(pipe: Pipeline, step: Step) -> list[str]:
    """The folders a step type names in the experiment (the runners' chaining; SET may rename them)."""
    if step.type.startswith("tokenize_"):
        return [_tokenize_output(pipe, step)]
    if step.type == "eval":
        return [f"reports/eval/{_flat_set(step).get('eval.name', step.id)}.json"]
    if step.type in MODEL_TYPES:
        return [f"model/hf/{_run_name(step)}"]
    return []
