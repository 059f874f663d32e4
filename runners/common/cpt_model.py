"""CPT config and model: the run YAML schema, and the model that continues pretraining on packed blocks.

The tiny model here is built on the *data's* tokenizer (the one runners/tokenize.py used or trained), not
a fresh one: the token ids in the packed blocks only mean something to that tokenizer.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runners.common.errors import RunnerError

_MARKER = "tiny_cpt_model.json"
RESERVED = {
    "output_dir": "checkpoints go to CHECKPOINT_DIR/<run_name>",
    "resume_from_checkpoint": "runs resume from the newest checkpoint by themselves (output.resume)",
    "report_to": "set output.report_to instead",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class CptTiny(_Strict):
    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    max_position_embeddings: int = Field(1024, ge=16)


class CptModel(_Strict):
    init: Literal["pretrained", "tiny"] = "pretrained"
    name_or_path: str = Field(..., description="tiny: name under model/base; else a local dir or hub id")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    tiny: CptTiny = CptTiny()


class CptData(_Strict):
    tokenized: str | None = None  # runners/tokenize.py --mode cpt output; relative = inside EXPERIMENT_DIR
    prepare: str | None = None  # a tokenize config to run first (a no-op when its output is up to date)
    keep_tail: bool = False  # also train on the last, partial block (padded, pad masked out of the loss)


class CptOutput(_Strict):
    resume: bool = True
    save_final: bool = True
    report_to: list[Literal["wandb", "tensorboard"]] = []


class CptConfig(_Strict):
    run_name: str = Field("cpt", pattern=r"^[\w.-]+$")
    seed: int = 0
    model: CptModel
    data: CptData
    trainer: dict[str, Any] = {}
    output: CptOutput = CptOutput()


def load_cpt_config(path: str | Path, overrides: list[str] = ()) -> CptConfig:
    from runners.common.config import apply_overrides, yaml_load

    path = Path(path)
    if not path.is_file():
        raise RunnerError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text()) or {}
    except Exception as exc:  # yaml.YAMLError; kept broad so a bad file is one line, not a traceback
        raise RunnerError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise RunnerError(f"{path}: expected a mapping at the top level")
    data = apply_overrides(data, list(overrides))
    data.setdefault("run_name", path.stem)
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
    from runners.data.tokenizer_io import tokenizer_fingerprint

    spec = {**tiny.model_dump(), "tokenizer": tokenizer_fingerprint(tok_dir)}
    marker = out_dir / _MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == spec:
            return out_dir
        raise RunnerError(f"model.name_or_path: {out_dir} holds a tiny model for another tokenizer or size; "
                          "pick another name")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=tiny.hidden, intermediate_size=tiny.hidden * 2,
        num_hidden_layers=tiny.layers, num_attention_heads=tiny.heads, num_key_value_heads=tiny.heads,
        max_position_embeddings=tiny.max_position_embeddings, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps(spec))
        os.rename(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
