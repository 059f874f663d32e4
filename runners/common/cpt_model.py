"""CPT config and model: the run YAML schema, and the model that continues pretraining on packed blocks.

The tiny model here is built on the *data's* tokenizer (the one runners/tokenize_run.py used or trained), not
a fresh one: the token ids in the packed blocks only mean something to that tokenizer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from runners.common.config import Strict, format_validation_error, read_config_mapping
from runners.common.errors import RunnerError

_MARKER = "tiny_cpt_model.json"


class CptTiny(Strict):
    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    max_position_embeddings: int = Field(1024, ge=16)
    vocab_size: int = Field(512, ge=300)  # the tokenizer --data_config trains for a tiny model (data.prepare: its own)


class CptModel(Strict):
    init: Literal["pretrained", "tiny"] = "pretrained"
    name_or_path: str = Field(..., description="tiny: name under model/base; else a local dir or hub id")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    tiny: CptTiny = CptTiny()


class CptData(Strict):
    tokenized: str | None = None  # runners/tokenize_run.py --mode cpt output; relative = inside EXPERIMENT_DIR
    prepare: str | None = None  # a tokenize config to run first (a no-op when its output is up to date)
    keep_tail: bool = False  # also train on the last, partial block (padded, pad masked out of the loss)
    mixture: str | None = None  # --data_config: a mixture YAML tokenized with the model's tokenizer, then trained on
    use_prepared: bool = False  # --use_prepared: train on data.tokenized / the mixture's output; never tokenize
    block_size: int | None = Field(None, ge=8)  # --data_config blocks; default min(2048, the model's context)


class CptOutput(Strict):
    resume: bool = True
    save_final: bool = True
    report_to: list[Literal["wandb", "tensorboard"]] = []
    wandb_project: str | None = None


class CptConfig(Strict):
    run_name: str = Field("cpt", pattern=r"^[\w.-]+$")
    seed: int = 0
    model: CptModel
    data: CptData
    trainer: dict[str, Any] = {}
    output: CptOutput = CptOutput()
    eval_interval: int = Field(0, ge=0)  # eval loss on the validation split every N steps; 0 = off
    eval_batches: int = Field(0, ge=0)  # batches per eval; 0 = the whole split


def load_cpt_config(path: str | Path, overrides: list[str] = ()) -> CptConfig:
    path = Path(path)
    data = read_config_mapping(path, overrides)
    try:
        cfg = CptConfig.model_validate(data)
    except ValidationError as err:
        raise RunnerError(format_validation_error(err, str(path), CptConfig)) from None
    if not (cfg.data.tokenized or cfg.data.prepare or cfg.data.mixture):
        raise RunnerError(f"{path}: set data.tokenized (a runners/tokenize_run.py --mode cpt output), data.prepare "
                          "or --data_config MIXTURE")
    return cfg


def build_tiny_on_tokenizer(tok_dir: Path, out_dir: Path, tiny: CptTiny, seed: int = 0) -> Path:
    """A tiny LlamaForCausalLM sized to the data's tokenizer, saved with it; reused when already built."""
    from runners.common.tiny_model import TinyModelMismatch, build_tiny_llama, tiny_model_ready
    from runners.data.tokenizer_io import tokenizer_fingerprint

    # The fingerprint is in the spec: the same sizes on another tokenizer would read the blocks' ids wrongly.
    # vocab_size is left out: the tokenizer's fingerprint says it, and models built before it existed stay valid.
    spec = {**tiny.model_dump(exclude={"vocab_size"}), "tokenizer": tokenizer_fingerprint(tok_dir)}
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
