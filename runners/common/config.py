"""One YAML per run, validated strictly: a typo fails with its dotted path, not silently ignored.

`read_yaml` is the one YAML reader of every runner (SFT, DPO, GRPO, PPO, SPO, CPT, eval, HRM-LM): a missing
file, bad YAML or a non-mapping top level is one RunnerError line naming the file.

`trainer:` holds the TRL config arguments (SFTConfig / GRPOConfig / DPOConfig) as written in TRL's docs;
its keys are checked against the TRL dataclass by `check_trainer_keys` once the runner knows which one.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runners.common.errors import RunnerError, did_you_mean

# The runner owns these: they follow the env contract, not the YAML.
RESERVED_TRAINER_KEYS = {
    "output_dir": "checkpoints go to CHECKPOINT_DIR/<run_name>",
    "report_to": "set output.report_to instead",
    "resume_from_checkpoint": "runs resume from the newest checkpoint by themselves (output.resume)",
    "logging_dir": "set output.report_to: [tensorboard]; logs go under reports/<run_name>",
}


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-5` as a float (YAML 1.1 wants `1.0e-5`; everybody writes `1e-5`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


class Strict(BaseModel):
    """Base of every config section here and in cpt_model.py: an unknown key is an error, never ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TinyModel(Strict):
    vocab_size: int = Field(512, ge=300)
    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)


class ModelSection(Strict):
    name_or_path: str = Field("tiny", description="hub id, local dir (relative = inside EXPERIMENT_DIR), or tiny name")
    init: Literal["pretrained", "tiny"] = "pretrained"
    backend: Literal["auto", "unsloth", "vllm", "transformers"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_seq_length: int = Field(1024, ge=16)
    load_in_4bit: bool = False  # Unsloth (QLoRA) only
    tiny: TinyModel = TinyModel()


class LoraSection(Strict):
    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class GenerationSection(Strict):
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0.0)  # 0 = greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    batch_size: int = Field(16, ge=1)


class DataSection(Strict):
    pretokenized: str | None = None  # dir from runners/data/pretokenized.py; relative = inside EXPERIMENT_DIR
    mixture: str | None = None  # a mixture YAML (--data_config) prepared for this run (SFT: tokenized; DPO, GRPO,
    # PPO, SPO: mixed JSONL rows; runners/common/prepared.py)
    use_prepared: bool = False  # --use_prepared: train on the mixture's prepared output as it is, never prepare again


class RewardSection(Strict):
    """GRPO, PPO, SPO: a sequence-classification reward model beside the task's rewards
    (runners/common/reward_model.py)."""

    model: str | None = None  # hub id or local dir (relative = inside EXPERIMENT_DIR); None: the task's rewards only
    batch_size: int = Field(16, ge=1)  # completions per forward pass
    max_length: int = Field(512, ge=8)  # tokens of prompt + completion; a longer row loses its prompt's start
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")  # auto: CUDA when present, else cpu
    weights: dict[str, float] = {}  # reward function name (the task's, or reward_model) -> weight; default 1.0


class OutputSection(Strict):
    save_final: bool = True
    final: Literal["merged", "adapter"] = "merged"  # LoRA runs only: merged weights or the adapter alone
    report_to: list[Literal["wandb", "tensorboard"]] = []
    wandb_project: str | None = None  # default: the experiment's name
    resume: bool = True


class EvalSection(Strict):
    name: str = "eval"
    num_samples: int | None = Field(None, ge=1)
    sample_completions: int = Field(8, ge=0)


class RunConfig(Strict):
    run_name: str = Field("run", pattern=r"^[\w.-]+$")
    seed: int = 0
    model: ModelSection = ModelSection()
    lora: LoraSection = LoraSection()
    trainer: dict[str, Any] = {}
    generation: GenerationSection = GenerationSection()
    data: DataSection = DataSection()
    reward: RewardSection = RewardSection()
    output: OutputSection = OutputSection()
    eval: EvalSection = EvalSection()
    # Periodic eval while training (seed spellings, also flags): every N optimizer steps, K batches of held-out data.
    eval_interval: int = Field(0, ge=0)  # 0 = no eval loop
    eval_batches: int = Field(0, ge=0)  # 0 = the whole held-out set
    task: dict[str, Any] = {}  # task-owned; a task may validate it with a pydantic `TaskConfig`


def _allowed_at(loc: tuple, root: type) -> list[str]:
    node: Any = root
    for part in loc[:-1]:
        fields = getattr(node, "model_fields", None)
        if not fields or part not in fields:
            return []
        node = fields[part].annotation
    return list(getattr(node, "model_fields", {}) or {})


def format_validation_error(err: ValidationError, source: str, root: type | None = None) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    path = ".".join(str(p) for p in loc)
    if first["type"] == "extra_forbidden":
        allowed = _allowed_at(loc, root or RunConfig)
        hint = did_you_mean(str(loc[-1]), allowed)
        return f"{source}: unknown key '{path}'{hint}; allowed here: {', '.join(allowed)}"
    return f"{source}: '{path}': {first['msg']} (got {first.get('input')!r})"


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise RunnerError(f"--set {item!r}: expected key.sub=value")
    key, raw = item.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise RunnerError(f"--set {item!r}: empty key part")
    # YAML parsing: `3` -> int, `1e-3` -> float, `[a, b]` -> list, `true` -> bool.
    return key.split("."), yaml_load(raw) if raw != "" else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise RunnerError(f"--set {item!r}: '{k}' is not a section")
            node = nxt
        node[keys[-1]] = value
    return data


def read_yaml(path: str | Path, overrides: list[str] = ()) -> dict:
    """The YAML mapping at `path` with `--set key.sub=value` overrides applied; every failure one RunnerError."""
    path = Path(path)
    if not path.is_file():
        raise RunnerError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RunnerError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise RunnerError(f"{path}: expected a mapping at the top level")
    return apply_overrides(data, list(overrides))


def read_config_mapping(path: Path, overrides: list[str] = ()) -> dict:
    """The YAML at `path` as a dict with `--set` overrides applied and `run_name` defaulting to the file's stem."""
    data = read_yaml(path, overrides)
    data.setdefault("run_name", path.stem)
    return data


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    path = Path(path)
    data = read_config_mapping(path, overrides)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise RunnerError(format_validation_error(err, str(path))) from None


def check_trainer_keys(config: RunConfig, trl_config_cls: type) -> None:
    """Refuse keys the TRL config class does not have, before any model is built."""
    allowed = {f.name for f in dataclasses.fields(trl_config_cls) if f.init}
    for key in config.trainer:
        if key in RESERVED_TRAINER_KEYS:
            raise RunnerError(f"'trainer.{key}' is set by the runner: {RESERVED_TRAINER_KEYS[key]}")
        if key not in allowed:
            raise RunnerError(
                f"unknown key 'trainer.{key}' for {trl_config_cls.__name__}{did_you_mean(key, allowed)}"
            )


def save_resolved(config: RunConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
