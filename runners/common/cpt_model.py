"""CPT config and model: the run YAML schema, and the model that continues pretraining on packed blocks.

The tiny model here is built on the *data's* tokenizer (the one runners/tokenize.py used or trained), not
a fresh one: the token ids in the packed blocks only mean something to that tokenizer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from runners.common.config import Strict, read_config_mapping
from runners.common.errors import RunnerError

_MARKER = "tiny_cpt_model.json"
RESERVED = {
    "output_dir": "checkpoints go to CHECKPOINT_DIR/<run_name>",
    "resume_from_checkpoint": "runs resume from the newest checkpoint by themselves (output.resume)",
    "report_to": "set output.report_to instead",
}


class CptTiny(Strict):
    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    max_position_embeddings: int = Field(1024, ge=16)


class CptModel(Strict):
    init: Literal["pretrained", "tiny"] = "pretrained"
    name_or_path: str = Field(..., description="tiny: name under model/base; else a local dir or hub id")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    tiny: CptTiny = CptTiny()


class CptData(Strict):
    tokenized: str | None = None  # runners/tokenize.py --mode cpt output; relative = inside EXPERIMENT_DIR
    prepare: str | None = None  # a tokenize config to run first (a no-op when its output is up to date)
    keep_tail: bool = False  # also train on the last, partial block (padded, pad masked out of the loss)


class CptOutput(Strict):
    resume: bool = True
    save_final: bool = True
    report_to: list[Literal["wandb", "tensorboard"]] = []


class CptConfig(Strict):
    run_name: str = Field("cpt", pattern=r"^[\w.-]+$")
    seed: int = 0
    model: CptModel
    data: CptData
    trainer: dict[str, Any] = {}
    output: CptOutput = CptOutput()


def load_cpt_config(path: str | Path, overrides: list[str] = ()) -> CptConfig:
    path = Path(path)
    data = read_config_mapping(path, overrides)
    try:
        cfg = CptConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RunnerError(f"{path}: '{where}': {first['msg']}") from None
    if not cfg.data.tokenized and not cfg.data.prepare:
        raise RunnerError(f"{path}: set data.tokenized (a runners/tokenize.py --mode cpt output) or data.prepare")
    return cfg


def training_arguments(cfg: CptConfig, output_dir: Path):
    """transformers TrainingArguments from `trainer:`; the runner owns paths, reporting and CPU safety."""
    import dataclasses

    import torch
    from transformers import TrainingArguments

    allowed = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    for key in cfg.trainer:
        if key in RESERVED:
            raise RunnerError(f"'trainer.{key}' is set by the runner: {RESERVED[key]}")
        if key not in allowed:
            from runners.common.errors import did_you_mean

            raise RunnerError(f"unknown key 'trainer.{key}' for TrainingArguments{did_you_mean(key, allowed)}")
    kwargs = {"logging_steps": 10, "save_steps": 500, "save_total_limit": 2, "seed": cfg.seed,
              "include_num_input_tokens_seen": "non_padding"}
    kwargs.update(cfg.trainer)
    if not torch.cuda.is_available():
        kwargs.update(use_cpu=True, bf16=False, fp16=False)
    kwargs.update(output_dir=str(output_dir), report_to=list(cfg.output.report_to) or "none",
                  run_name=cfg.run_name)
    try:
        return TrainingArguments(**kwargs)
    except (ValueError, TypeError) as exc:
        raise RunnerError(f"trainer: {str(exc).strip().splitlines()[0]}") from None


def build_tiny_on_tokenizer(tok_dir: Path, out_dir: Path, tiny: CptTiny, seed: int = 0) -> Path:
    """A tiny LlamaForCausalLM sized to the data's tokenizer, saved with it; reused when already built."""
    from runners.common.tiny_model import TinyModelMismatch, build_tiny_llama, tiny_model_ready
    from runners.data.tokenizer_io import tokenizer_fingerprint

    # The fingerprint is in the spec: the same sizes on another tokenizer would read the blocks' ids wrongly.
    spec = {**tiny.model_dump(), "tokenizer": tokenizer_fingerprint(tok_dir)}
    try:
        if tiny_model_ready(out_dir, spec, _MARKER):
            return out_dir
    except TinyModelMismatch:
        raise RunnerError(f"model.name_or_path: {out_dir} holds a tiny model for another tokenizer or size; "
                          "pick another name") from None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    return build_tiny_llama(tok, out_dir, tiny.hidden, tiny.layers, heads=tiny.heads,
                            max_position_embeddings=tiny.max_position_embeddings, seed=seed, spec=spec,
                            marker=_MARKER)
