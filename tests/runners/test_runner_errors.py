"""Bad inputs stop a runner before any work: exit 2, one `error:` line on stderr, nothing written."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .conftest import files_under, run_main, run_script
from runners.common.tiny_model import build_tiny_model
from tasks.smoke_task import get_corpus

SMOKE = "tasks/smoke_task.py"


def assert_refused(code, capsys, root: Path, before: list[str], expect: str):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2
    assert len(errors) == 1 and expect in errors[0], err
    assert files_under(root) == before


@pytest.fixture
def prebuilt(pool):
    """An experiment that already holds the tiny base model, so refusals can be checked against a real tree."""
    build_tiny_model(get_corpus(None), pool / "model" / "base" / "tiny-smoke")
    return pool


def test_task_missing_hook(tmp_path, pool, capsys):
    task = tmp_path / "sft_only_task.py"
    task.write_text("def get_sft_dataset(config, tokenizer):\n    return []\n")
    code = run_main("rl_run", "--config", "configs/rl/smoke.yaml", "--task", str(task), "--set", "data.mixture=null")
    assert_refused(code, capsys, pool.parent.parent, [], "missing get_rl_dataset, get_reward_funcs")


def test_config_typo(pool, capsys):
    code = run_main("dpo_run", "--config", "configs/dpo/smoke.yaml", "--task", SMOKE, "--set", "lora.targets=[x]")
    assert_refused(code, capsys, pool.parent.parent, [], "unknown key 'lora.targets'")


def test_trainer_typo(pool, capsys):
    code = run_main("rl_run", "--config", "configs/rl/smoke.yaml", "--task", SMOKE, "--set", "trainer.learnig_rate=1")
    assert_refused(code, capsys, pool.parent.parent, [], "did you mean 'learning_rate'")


def test_missing_model_dir(pool, capsys):
    code = run_main("sft_run", "--config", "configs/sft/smoke.yaml", "--task", SMOKE,
                    "--set", "model.init=pretrained", "--set", "model.name_or_path=model/hf/never-trained")
    assert_refused(code, capsys, pool.parent.parent, [], "no model directory at")


def test_lora_target_that_does_not_exist(prebuilt, capsys):
    before = files_under(prebuilt)
    code = run_main("sft_run", "--config", "configs/sft/smoke.yaml", "--task", SMOKE,
                    "--set", "lora.enabled=true", "--set", "lora.target_modules=[q_prj]")
    assert_refused(code, capsys, prebuilt, before, "'q_prj' is not a module of this model (did you mean 'q_proj'?)")


def test_trl_cross_field_check(prebuilt, capsys):
    before = files_under(prebuilt)
    code = run_main("rl_run", "--config", "configs/rl/smoke.yaml", "--task", SMOKE, "--set", "trainer.num_generations=3")
    assert_refused(code, capsys, prebuilt, before, "error: trainer:")


def test_missing_pretokenized_dir(prebuilt, capsys):
    before = files_under(prebuilt)
    code = run_main("sft_run", "--config", "configs/sft/smoke.yaml", "--task", SMOKE,
                    "--set", "data.pretokenized=data/tokenized/sft/none")
    assert_refused(code, capsys, prebuilt, before, "is not a pre-tokenized dir")


def test_no_task_where_the_data_comes_from_one(pool, capsys):
    code = run_main("rl_run", "--config", "configs/rl/smoke.yaml")
    assert_refused(code, capsys, pool.parent.parent, [], "--task is required: the rl runner reads its data from")


def test_no_task_on_tokenized_data_with_a_tiny_model_not_built_yet(pool, capsys):
    # Tokenized data needs no task, but a tiny model built on first use takes its tokenizer's text from one.
    tokenized = pool / "data" / "tokenized" / "sft" / "smoke"
    (tokenized / "train").mkdir(parents=True)
    (tokenized / "meta.json").write_text('{"mode": "sft", "format": "arrow"}')
    before = files_under(pool.parent.parent)
    code = run_main("sft_run", "--config", "configs/sft/smoke.yaml", "--set", "data.pretokenized=data/tokenized/sft/smoke")
    assert_refused(code, capsys, pool.parent.parent, before, "model.init: tiny builds its tokenizer from a task's text")


def test_cli_exit_code_and_single_line(tmp_path):
    """The real script: a typo exits 2 with one line and no traceback, before importing TRL."""
    proc = run_script("rl_run", "--config", "configs/rl/smoke.yaml", "--task", SMOKE, "--set", "modle.init=tiny",
                      env={"DATAPOOL_ROOT": str(tmp_path / "pool")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: configs/rl/smoke.yaml: unknown key 'modle' (did you mean 'model'?); allowed here: run_name, seed, "
        "model, lora, trainer, generation, data, reward, output, eval, eval_interval, eval_batches, task"
    ]
    assert not (tmp_path / "pool").exists()


def test_tracker_not_installed(pool, capfd, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what Python does for a package it cannot import
    code = run_main("sft_run", "--config", "configs/sft/smoke.yaml", "--task", SMOKE,
                    "--set", "output.report_to=[tensorboard]")
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: output.report_to: tensorboard is not installed; pip install "
                                 "'launcher[track]' (or tensorboard) or remove tensorboard from output.report_to"]
    assert files_under(pool.parent.parent) == []


def test_wandb_online_without_a_key(pool, capsys, monkeypatch, tmp_path):
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    code = run_main("rl_run", "--config", "configs/rl/smoke.yaml", "--task", SMOKE, "--wandb_project", "p")
    assert_refused(code, capsys, pool.parent.parent, [], "wandb needs an API key: pass it with `launch --secret "
                                                         "WANDB_API_KEY`")


def test_sequence_length_leaves_no_example(tmp_path, pool, capfd):
    """The smoke SFT config (64 tokens) with the Wordle task, whose prompts are longer: one line, nothing written."""
    from runners.common.config import load_config
    from tasks.wordle_task import get_corpus as wordle_corpus

    config = load_config("configs/sft/smoke.yaml", ["task.num_examples=8"])
    build_tiny_model(wordle_corpus(config), pool / "model" / "base" / "tiny-smoke")
    before = files_under(pool)
    code = run_main("sft_run", "--config", "configs/sft/smoke.yaml", "--task", "tasks/wordle_task.py",
                    "--set", "task.num_examples=8", "--set", "data.mixture=null")  # the task's rows, not the mixture's
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "model.max_seq_length (64 tokens)" in err[0], err
    assert files_under(pool) == before


@pytest.mark.parametrize("extra, expect", [
    (["--use_prepared", "--set", "data.mixture=null"], "--use_prepared needs --data_config MIXTURE"),
    (["--data_config", "configs/data/posttrain/sft/nope.yaml"],
     "config file not found: configs/data/posttrain/sft/nope.yaml"),
    (["--data_config", "configs/data/posttrain/sft/smoke.yaml", "--use_prepared"], "holds no tokenized data yet"),
    (["--eval_interval", "x"], "argument --eval_interval/--eval-interval: invalid int value: 'x'"),
    (["--set", "eval_interval=-1"], "'eval_interval': Input should be greater than or equal to 0"),
])
def test_seed_flags_bad_input(pool, capsys, extra, expect):
    code = run_main("sft_run", "--config", "configs/sft/smoke.yaml", "--task", SMOKE, *extra)
    assert_refused(code, capsys, pool.parent.parent, [], expect)


def test_dpo_refuses_an_sft_mixture_naming_the_field(pool, capsys):
    # Chat rows have no chosen/rejected: the first record of the source is mapped before anything is built.
    code = run_main("dpo_run", "--config", "configs/dpo/smoke.yaml", "--task", SMOKE,
                    "--data_config", "configs/data/posttrain/sft/smoke.yaml")
    assert_refused(code, capsys, pool.parent.parent, [], "source 'chats': field 'prompt' missing in a record")
