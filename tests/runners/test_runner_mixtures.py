"""Mixtures on every trainer (issue 25, items 1 and 3): the seed MiniMind's `--data_config MIX --use_prepared` on
DPO, PPO, GRPO and SPO as the seed writes them (paths adjusted to configs/data/posttrain/...), CPT on the shipped
pretrain mixture with the shipped config as it is, and bad mixtures refused in one line with nothing written.

Learning from the shipped mixtures is asserted by the trainers' own smoke tests (test_runner_dpo, test_runner_rl,
test_ppo, test_spo): their smoke configs name these mixtures. The runs here are one or two steps: they check the
plumbing (prepared JSONL, its reuse, the `answer` column reaching the rewards), not learning.
"""
from __future__ import annotations

import json
import sys

import pytest

from .conftest import files_under, read_metrics, run_main, train_rows

POST = "configs/data/posttrain"
# The seed's lines: `python train_<algo>.py --data_config config/data/posttrain/<dir>/<file>.yaml --use_prepared`,
# here with our config and the smoke task (which gives the rewards; DPO needs none).
SEED = {
    "dpo_run": ("configs/dpo/smoke.yaml", f"{POST}/dpo/smoke.yaml", "dpo", "dpo_smoke"),
    "rl_run": ("configs/rl/smoke.yaml", f"{POST}/rlaif/grpo.yaml", "rlaif", "grpo_smoke"),
    "ppo_run": ("configs/ppo/smoke.yaml", f"{POST}/rlaif/ppo.yaml", "rlaif", "ppo_smoke"),
    "spo_run": ("configs/spo/smoke.yaml", f"{POST}/rlaif/spo.yaml", "rlaif", "spo_smoke"),
}
# A task that records the `answer` column its reward function gets (the shipped prompts carry "a").
RECORDING_TASK = """
from tasks.smoke_task import *  # noqa: F401,F403
from tasks import smoke_task

SEEN = []


def get_reward_funcs(config, tokenizer):
    def a_reward(prompts, completions, **columns):
        SEEN.extend(columns.get("answer") or [None])
        return [smoke_task.a_share(smoke_task._text(c)) for c in completions]

    return [a_reward]
"""


@pytest.mark.parametrize("runner", list(SEED))
def test_seed_data_config_then_use_prepared(pool, tmp_path, runner):
    config, mixture, mode, name = SEED[runner]
    task = tmp_path / f"recording_{runner}.py"
    task.write_text(RECORDING_TASK)
    small = ["--set", "trainer.max_steps=1", "--set", "trainer.save_steps=1"]
    argv = ["--config", config, "--task", str(task), "--data_config", mixture, *small]
    assert run_main(runner, *argv) == 0
    out = pool / "data" / "prepared" / mode / name
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 64  # 32 flat + 32 nested rows, ratio 0.5 each
    meta = json.loads((out / "meta.json").read_text())
    assert [s["drawn"] for s in meta["sources"]] == [32, 32]
    if mode == "dpo":
        assert all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)  # dotted paths mapped to the names
    else:
        assert all(set(r) == {"prompt", "answer"} and r["answer"] == "a" for r in rows)
        seen = sys.modules[f"_task_{task.stem}"].SEEN
        assert seen and set(seen) == {"a"}, seen[:5]  # the reference reached the reward function

    # --use_prepared: the prepared JSONL as it is, not written again.
    stamp = (out / "train.jsonl").stat().st_mtime_ns
    assert run_main(runner, *argv, "--use_prepared", "--set", "run_name=prepared") == 0
    assert (out / "train.jsonl").stat().st_mtime_ns == stamp
    assert [r["step"] for r in train_rows(read_metrics(pool, "prepared"))] == [1]


def _mixture(tmp_path, text: str) -> str:
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"q": {"text": "Say a."}, "good": "a a", "bad": "b b"}) + "\n")
    path = tmp_path / "mix.yaml"
    path.write_text(text)
    return str(path)


BAD = {
    "ratios": ("sources:\n  - {name: one, path: ./pairs.jsonl, ratio: 0.5}\n"
               "  - {name: two, path: ./pairs.jsonl, ratio: 0.3}\n", "ratios sum to 0.8000, not 1"),
    "missing file": ("sources:\n  - {name: gone, path: ./nope.jsonl, ratio: 1.0}\n",
                     "mixture source 'gone': {tmp}/nope.jsonl does not exist; fix `path:` (./ paths are under {tmp})"),
    "raw path missing": ("sources:\n  - {name: raw, path: pairs.jsonl, ratio: 1.0}\n",
                         "relative paths are under {pool}/data/raw/dpo"),
    "field path": ("sources:\n  - name: p\n    path: ./pairs.jsonl\n    ratio: 1.0\n"
                   "    fields: {prompt_field: q.txt, chosen_field: good, rejected_field: bad}\n",
                   "source 'p': field 'q.txt' missing in a record"),
    "sft key on dpo": ("sources:\n  - {name: p, path: ./pairs.jsonl, ratio: 1.0, fields: {response_field: good}}\n",
                       "source 'p': unknown dpo field mapping key(s) ['response_field']"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_mixture_is_one_line_exit_2_nothing_written(pool, tmp_path, capsys, case):
    text, expect = BAD[case]
    mixture = _mixture(tmp_path, text)
    root = pool.parent.parent
    code = run_main("dpo_run", "--config", "configs/dpo/smoke.yaml", "--task", "tasks/smoke_task.py",
                    "--data_config", mixture)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1, err
    assert expect.format(tmp=tmp_path, pool=pool) in err[0], err
    assert files_under(root) == []


def test_prompt_mixture_refuses_a_bad_field_on_rl(pool, tmp_path, capsys):
    mixture = _mixture(tmp_path, "sources:\n  - {name: p, path: ./pairs.jsonl, ratio: 1.0, "
                                 "fields: {prompt_field: q.text, answer_field: ref}}\n")
    code = run_main("rl_run", "--config", "configs/rl/smoke.yaml", "--task", "tasks/smoke_task.py",
                    "--data_config", mixture)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "source 'p': field 'ref' missing in a record" in err[0], err
    assert files_under(pool.parent.parent) == []


def test_use_prepared_before_any_preparation(pool, capsys):
    code = run_main("ppo_run", "--config", "configs/ppo/smoke.yaml", "--task", "tasks/smoke_task.py", "--use_prepared")
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "data/prepared/rlaif/ppo_smoke holds no prepared data yet" in err[0], err
    assert files_under(pool.parent.parent) == []


def test_cpt_data_config_on_the_shipped_config(pool):
    """The issue's line as written: the tiny model takes the tokenizer the mixture's tokenize step trains."""
    assert run_main("cpt_run", "--config", "configs/cpt/smoke.yaml",
                    "--data_config", "configs/data/pretrain/smoke.yaml") == 0
    meta = json.loads((pool / "data" / "tokenized" / "cpt" / "cpt_smoke" / "meta.json").read_text())
    assert meta["tokenizer"]["trained"] and meta["block_size"] == 64
    losses = [r["loss"] for r in train_rows(read_metrics(pool, "cpt-smoke")) if "loss" in r]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5, losses  # logging_steps 5 of 40 steps
    assert (pool / "model" / "hf" / "cpt-smoke" / "model.safetensors").is_file()
