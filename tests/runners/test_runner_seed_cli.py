"""The seeds' command lines, as the seeds write them (paths adjusted to this layout).

Seed Abstract Runners: `--task-module`. Seed MiniMind: `--data_config` (a mixture YAML), `--use_prepared`,
`--eval_interval`, `--eval_batches`, `--wandb_project`. Run in-process (the same argv the script gets; the
script's own exit codes are covered by test_runner_errors and test_runner_launch).
"""
from __future__ import annotations

import json

from .conftest import eval_rows, read_metrics, run_main, train_rows

CHATS = [[{"role": "user", "content": f"Say a, {i} times."}, {"role": "assistant", "content": "a " * (1 + i % 4)}]
         for i in range(40)]


def test_minimind_data_config_use_prepared_eval_and_wandb(pool, capfd, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    raw = pool / "data" / "raw" / "sft" / "chat.jsonl"
    raw.parent.mkdir(parents=True)
    raw.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CHATS))
    seed = ["--config", "configs/sft/smoke.yaml", "--task-module", "tasks.smoke_task",
            "--data_config", "configs/data/posttrain/sft/raw_chat.yaml", "--eval_interval", "2", "--eval_batches", "1",
            "--wandb_project", "minimind", "--set", "trainer.max_steps=4", "--set", "trainer.save_steps=4"]
    assert run_main("sft_run", *seed) == 0
    tokenized = pool / "data" / "tokenized" / "sft" / "sft_chat"
    meta = json.loads((tokenized / "meta.json").read_text())
    assert meta["mode"] == "sft" and (tokenized / "validation").is_dir()
    rows = read_metrics(pool, "sft-smoke")
    assert [r["step"] for r in train_rows(rows)] == [1, 2, 3, 4]
    assert [r["step"] for r in eval_rows(rows)] == [2, 4]  # eval on the mixture's own validation split
    assert next((pool / "reports" / "sft-smoke" / "wandb").glob("offline-run-*/run-*.wandb")).stat().st_size > 0
    cap = capfd.readouterr()
    assert "\r" not in cap.out + cap.err  # no progress bars in a job log

    # --use_prepared: the raw data may be gone (a node that pulled only data/tokenized); nothing is re-tokenized.
    raw.unlink()
    stamp = (tokenized / "meta.json").stat().st_mtime_ns
    assert run_main("sft_run", *seed, "--use_prepared", "--set", "run_name=prepared") == 0
    assert (tokenized / "meta.json").stat().st_mtime_ns == stamp
    assert [r["step"] for r in train_rows(read_metrics(pool, "prepared"))] == [1, 2, 3, 4]
