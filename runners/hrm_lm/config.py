"""YAML config for HRM-LM, validated with pydantic: unknown keys are refused and every error names its key."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import HRMUserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ACTConfig(_Strict):
    """Adaptive computation time: a Q-head decides after each segment whether to halt (off by default)."""

    enabled: bool = False
    max_segments: int = Field(4, ge=1)
    # Chance per sample of forcing a random minimum number of segments, so the Q-head also sees long runs.
    exploration_prob: float = Field(0.1, ge=0.0, le=1.0)


class ModelConfig(_Strict):
    # None = take the vocabulary size from the dataset's meta.json; an explicit value must match it.
    vocab_size: Optional[int] = Field(None, ge=4)
    d_model: int = Field(256, ge=8)
    n_heads: int = Field(4, ge=1)
    h_layers: int = Field(2, ge=1)
    l_layers: int = Field(2, ge=1)
    dec_layers: int = Field(2, ge=1)
    h_cycles: int = Field(2, ge=1, description="N: high-level updates per segment")
    l_steps: int = Field(2, ge=1, description="T: low-level steps per high-level update")
    ffn_expansion: float = Field(4.0, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    max_position: int = Field(2048, ge=8)
    tie_embeddings: bool = True
    segments: int = Field(1, ge=1, description="deep supervision: segments per batch, state detached between")
    act: ACTConfig = ACTConfig()

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("model.d_model / model.n_heads must be even (rotary embeddings)")
        return self


class SyntheticConfig(_Strict):
    """Built-in arithmetic data: prompts like `12 + 7 =` (or `What is 12 + 7?`), answers `19`."""

    max_digits: int = Field(1, ge=1, le=6)
    ops: list[Literal["+", "-", "*"]] = ["+"]
    # Held-out problems: val problems (a, op, b) never appear in train. "random" draws them at random; "mirror"
    # holds out one order of a commutative pair (a + b in val, b + a in train), so the held-out problems are
    # solvable by a model that learned commutativity; with few distinct problems (single digits) "random" leaves
    # held-out pairs whose facts the model never saw in any form. "pairs" is the strict split: whole unordered pairs
    # {a, b} are held out (a + b and b + a both in val), so no held-out problem is trained in either order.
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    holdout: Literal["random", "mirror", "pairs"] = "random"
    # Upper bound on distinct problems drawn (all of them when the space is smaller).
    max_problems: int = Field(20000, ge=10)
    templates: list[Literal["plain", "question"]] = ["plain", "question"]
    # Extra training-only tasks built from the training problems alone (see data.aux_problems): "max" (which digit
    # of a trained pair is larger), "sub" (trained a + b = c read as c - a = b). Validation stays plain addition.
    aux: list[Literal["max", "sub"]] = []
    seed: int = 0


    @model_validator(mode="after")
    def _mirror_needs_commutative(self):
        if self.holdout in ("mirror", "pairs") and "-" in self.ops:
            raise ValueError(f"data.synthetic.holdout {self.holdout!r} needs commutative ops (+, *); drop '-' or use "
                             "'random'")
        return self


class DataConfig(_Strict):
    synthetic: SyntheticConfig = SyntheticConfig()


class TrainConfig(_Strict):
    # None = no dataset: the trainer then does the seed's one dry-run batch and says how to train (naming
    # `synthetic` is how to train on the built-in arithmetic set).
    dataset: Optional[str] = None
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    optimizer: Literal["adamw", "adamw_8bit"] = "adamw"
    learning_rate: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    # A positive steps wins over epochs when both are set. 0 (or unset) = not limited by that key, so the seed's
    # `--epochs N --steps 0` trains N epochs; one of the two must be > 0.
    steps: Optional[int] = Field(None, ge=0)
    epochs: Optional[float] = Field(None, ge=0)
    # 0 turns validation off (the seed's default) and, unless save_every says otherwise, periodic checkpoints too.
    val_every: int = Field(200, ge=0)
    save_every: Optional[int] = Field(None, ge=0, description="default: val_every; 0 = only final.pt")
    eval_max_samples: int = Field(512, ge=1)
    eval_max_new_tokens: int = Field(16, ge=1)
    checkpoint_limit: int = Field(3, ge=1)
    save_best_model: bool = False
    max_seq_len: int = Field(512, ge=2)
    log_steps: int = Field(10, ge=1)
    dataset_workers: int = Field(0, ge=0)
    mixed_precision: Literal["none", "bf16", "fp16"] = "none"
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    compile: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _length(self):
        if not self.steps and not self.epochs:
            raise ValueError("nothing limits the run: set train.steps or train.epochs > 0 (0 or unset = not "
                             "limited by it; --epochs N --steps 0 trains N epochs)")
        return self


class HRMConfig(_Strict):
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig(steps=1000)
    data: DataConfig = DataConfig()


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "value_error":  # our own validators' sentences, without pydantic's prefix
        msg = msg.removeprefix("Value error, ")
    extra = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {key}: {msg}{extra}"


def validate_config(raw: dict, source: str = "config") -> HRMConfig:
    try:
        return HRMConfig.model_validate(raw)
    except ValidationError as err:
        raise HRMUserError(_format_error(err, source)) from None


def load_config(path: str | Path, overrides: dict | None = None) -> HRMConfig:
    """Read YAML, apply `train.*` overrides from the command line, validate once."""
    from runners.common.config import read_yaml  # the runners' one YAML reader (reads `1e-5` as a float)
    from runners.common.errors import RunnerError

    try:
        raw = read_yaml(path)
    except RunnerError as exc:  # HRM-LM's own type, for the scripts that catch only it
        raise HRMUserError(str(exc)) from None
    train = dict(raw.get("train") or {})
    for key, value in (overrides or {}).items():
        if value is not None:
            train[key] = value
    steps, epochs = (overrides or {}).get("steps"), (overrides or {}).get("epochs")
    if steps:  # a positive --steps decides the length, whatever epochs the YAML or the flags give
        train.pop("epochs", None)
    elif epochs is not None and steps is None:  # --epochs alone replaces the YAML's steps
        train.pop("steps", None)
    # --steps 0 (with or without --epochs): steps stay 0 = "not limited by steps", so the epochs decide.
    raw["train"] = train
    return validate_config(raw, str(path))


def dump_config(cfg: HRMConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
