"""Mixtures for every trainer: `--data_config` (data.mixture), `--use_prepared` (data.use_prepared).

A mixture YAML (configs/data/{pretrain,posttrain/{sft,dpo,rlaif}}/*.yaml, the format runners/tokenize_run.py
--mixture reads) is prepared for the run by runners/data's one job (runners/data/pipeline.py), a no-op when its
output is up to date:
  SFT, CPT: tokenized with the model's own tokenizer into data/tokenized/<mode>/<mixture name>;
  DPO (mode dpo), GRPO/PPO/SPO (mode rlaif): the mixed rows as JSONL in data/prepared/<mode>/<mixture name>
  (the seed's "prepared" data: {prompt, chosen, rejected} or {prompt[, answer]}, train.jsonl + validation.jsonl).
`--use_prepared` skips that step and trains on the output as it is: the raw data need not be on the node.
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
    from runners.data.pipeline import output_dir

    return output_dir(exp_dir, mode, mixture_name(mixture))


def command_line_source_wins(overrides: list[str], sources: tuple[str, ...]) -> list[str]:
    """A data source named on the command line (--data_config = data.mixture, or --set data.<source>=..., as a
    pipeline's train step passes its tokenize step's output) replaces the YAML's: the YAML's other `sources` are
    dropped, so a shipped config that names a mixture runs with any of them without `give ... not both`."""
    keys = {f"data.{s}" for s in sources}
    given = {o.split("=", 1)[0].removeprefix("data.") for o in overrides if o.split("=", 1)[0] in keys}
    if not given:
        return list(overrides)
    return [f"data.{s}=null" for s in sources if s not in given] + list(overrides)


def check_data_section(data, mode: str, exp_dir: Path, other: str | None = None) -> None:
    """Combinations of data.pretokenized/tokenized (`other` names the key), data.mixture, data.use_prepared."""
    if data.mixture and other and getattr(data, other.split(".")[-1], None):
        raise RunnerError(f"give {other} or --data_config (data.mixture), not both")
    if data.mixture:
        out = prepared_dir(mode, data.mixture, exp_dir)  # reads the YAML: a missing file fails here
        if data.use_prepared and not (out / "meta.json").is_file():
            what = "tokenized" if mode in ("cpt", "sft") else "prepared"
            raise RunnerError(f"--use_prepared: {out} holds no {what} data yet; run once without --use_prepared "
                              f"(or `runners/tokenize_run.py --mode {mode} --mixture {data.mixture}`) first")
        if not data.use_prepared and mode not in ("cpt", "sft"):
            check_mixture(mode, data.mixture)
    elif data.use_prepared and not (other and getattr(data, other.split(".")[-1], None)):
        raise RunnerError("--use_prepared needs --data_config MIXTURE (whose tokenized output to use)"
                          + (f" or {other}" if other else ""))


def tokenize_mixture(mode: str, mixture: str, tokenizer, exp_dir: Path, **settings) -> Path:
    """Tokenize `mixture` with `tokenizer` (an object or a local dir; None with train_tokenizer=True: the job trains
    one on the mixture) for this run; returns the output dir."""
    from runners.data.errors import DataError
    from runners.data.pipeline import TokenizeConfig, TokenizeJob

    with tempfile.TemporaryDirectory(prefix="tokenizer-") as tmp:
        if tokenizer is None:
            tok_dir = None
        elif isinstance(tokenizer, (str, Path)) and (Path(tokenizer) / "tokenizer.json").is_file():
            tok_dir = str(tokenizer)
        else:
            tokenizer.save_pretrained(tmp)  # a hub model's tokenizer: the job reads a local dir
            tok_dir = tmp
        try:
            cfg = TokenizeConfig(mode=mode, mixture=mixture, tokenizer=tok_dir, workers=1 if _one_core() else 0,
                                 **settings)
            job = TokenizeJob(cfg)  # the same env contract as the run: the same experiment
            _run_once_per_node(job)
        except DataError as exc:
            raise RunnerError(f"--data_config {mixture}: {exc}") from None
        return job.out


def _run_once_per_node(job) -> None:
    """torchrun: one process per node runs the data job; the others wait until its output is up to date."""
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        job.run()
        return
    import time

    fp = job.fingerprint()
    while not job.up_to_date(fp):
        time.sleep(2)


def _row_job(mode: str, mixture: str):
    from runners.data.errors import DataError
    from runners.data.pipeline import TokenizeConfig, TokenizeJob

    try:
        return TokenizeJob(TokenizeConfig(mode=mode, mixture=mixture, workers=1))
    except DataError as exc:
        raise RunnerError(f"--data_config {mixture}: {exc}") from None


def check_mixture(mode: str, mixture: str) -> None:
    """Every refusal of the mixture (ratios, missing files, field paths of each source's first record) before
    anything is built or written: the job's own checks, which write nothing."""
    _row_job(mode, mixture)


def prepare_rows(mode: str, mixture: str) -> Path:
    """The mixture's rows as JSONL in data/prepared/<mode>/<name> (a no-op when up to date); returns that dir."""
    from runners.data.errors import DataError

    job = _row_job(mode, mixture)
    try:
        _run_once_per_node(job)
    except DataError as exc:
        raise RunnerError(f"--data_config {mixture}: {exc}") from None
    return job.out


def _read_rows(path: Path):
    import json

    from datasets import Dataset

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    try:
        return Dataset.from_list(rows)
    except Exception as exc:  # pyarrow: e.g. a prompt that is a string in one row and chat messages in another
        raise RunnerError(f"{path}: rows do not form one table ({str(exc).splitlines()[0]}); give every source "
                          "the same shape (all strings or all chat messages)") from None


def mixture_rows(ctx, mode: str):
    """(train, eval) rows from data.mixture for DPO (mode dpo) and GRPO/PPO/SPO (mode rlaif), or None when the
    config names no mixture (the task's hooks then give the data). eval: the mixture's validation split, if any."""
    data, exp = ctx.config.data, ctx.paths.experiment_dir
    if not data.mixture:
        return None
    out = prepared_dir(mode, data.mixture, exp) if data.use_prepared else prepare_rows(mode, data.mixture)
    val = out / "validation.jsonl"
    return _read_rows(out / "train.jsonl"), (_read_rows(val) if val.is_file() else None)


def rl_required_hooks(ctx):
    """GRPO/PPO/SPO: with a mixture the prompts come from it; the task still gives the rewards, unless reward.model
    does (then no task is needed: one given still adds its reward functions)."""
    from runners.common.tasks import HOOKS

    if not ctx.config.data.mixture:
        return None
    if ctx.config.reward.model:
        return []
    return [h for h in HOOKS[ctx.recipe.hooks_kind][0] if h != "get_rl_dataset"]


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
