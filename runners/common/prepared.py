"""Tokenized training data for SFT and CPT: `data.pretokenized`, `--data_config` (data.mixture), `--use_prepared`.

A mixture YAML (configs/mixtures/*.yaml, the format runners/tokenize_run.py --mixture reads) is tokenized for the
run with the model's own tokenizer into data/tokenized/<mode>/<mixture name> (a no-op when that output is up to
date). `--use_prepared` skips tokenizing and trains on that output as it is: the raw data need not be on the node.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from runners.common.config import read_yaml
from runners.common.errors import RunnerError
from runners.common.paths import resolve_in_experiment


def mixture_name(mixture: str) -> str:
    """The output name a mixture tokenizes to: its `name:`, else the file's stem (as runners/data does)."""
    spec = read_yaml(mixture)
    return str(spec.get("name") or Path(mixture).stem)


def prepared_dir(mode: str, mixture: str, exp_dir: Path) -> Path:
    return exp_dir / "data" / "tokenized" / mode / mixture_name(mixture)


def check_data_section(data, mode: str, exp_dir: Path, other: str | None = None) -> None:
    """Combinations of data.pretokenized/tokenized (`other` names the key), data.mixture, data.use_prepared."""
    if data.mixture and other and getattr(data, other.split(".")[-1], None):
        raise RunnerError(f"give {other} or --data_config (data.mixture), not both")
    if data.mixture:
        out = prepared_dir(mode, data.mixture, exp_dir)  # reads the YAML: a missing file fails here
        if data.use_prepared and not (out / "meta.json").is_file():
            raise RunnerError(f"--use_prepared: {out} holds no tokenized data yet; run once without --use_prepared "
                              f"(or `runners/tokenize_run.py --mode {mode} --mixture {data.mixture}`) first")
    elif data.use_prepared and not (other and getattr(data, other.split(".")[-1], None)):
        raise RunnerError("--use_prepared needs --data_config MIXTURE (whose tokenized output to use)"
                          + (f" or {other}" if other else ""))


def tokenize_mixture(mode: str, mixture: str, tokenizer, exp_dir: Path, **settings) -> Path:
    """Tokenize `mixture` with `tokenizer` (an object or a local dir) for this run; returns the output dir."""
    from runners.data.errors import DataError
    from runners.data.pipeline import TokenizeConfig, TokenizeJob

    with tempfile.TemporaryDirectory(prefix="tokenizer-") as tmp:
        if isinstance(tokenizer, (str, Path)) and (Path(tokenizer) / "tokenizer.json").is_file():
            tok_dir = str(tokenizer)
        else:
            tokenizer.save_pretrained(tmp)  # a hub model's tokenizer: the job reads a local dir
            tok_dir = tmp
        try:
            cfg = TokenizeConfig(mode=mode, mixture=mixture, tokenizer=tok_dir, workers=1 if _one_core() else 0,
                                 **settings)
            job = TokenizeJob(cfg)  # the same env contract as the run: the same experiment
            if int(os.environ.get("LOCAL_RANK", "0")) == 0:
                job.run()
            else:
                import time

                fp = job.fingerprint()  # torchrun: one process per node tokenizes; the others wait for it
                while not job.up_to_date(fp):
                    time.sleep(2)
        except DataError as exc:
            raise RunnerError(f"--data_config {mixture}: {exc}") from None
        return job.out


def _one_core() -> bool:
    try:
        return len(os.sched_getaffinity(0)) <= 1
    except AttributeError:
        return True


def sft_tokenized_dir(ctx) -> Path | None:
    """The tokenized SFT dir this run trains on, tokenizing the mixture first when asked; None = the task's data."""
    data, exp = ctx.config.data, ctx.paths.experiment_dir
    if data.pretokenized:
        return resolve_in_experiment(data.pretokenized, exp)
    if not data.mixture:
        return None
    if data.use_prepared:
        return prepared_dir("sft", data.mixture, exp)
    return tokenize_mixture("sft", data.mixture, ctx.tokenizer, exp,
                            max_length=int(ctx.args.max_length or ctx.config.model.max_seq_length))
