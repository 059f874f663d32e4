"""GRPO on the smoke task: the reward climbs; metrics, checkpoints (rotated), final model and config land in place;
the eval loop scores held-out prompts; wandb (offline) gets the seed's keys; a finished run stays finished."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import yaml

from .conftest import check_finished_then_extend, eval_rows, read_metrics, run_main, train_rows

ARGS = ("--config", "configs/rl/smoke.yaml", "--task", "tasks/smoke_task.py")


def wandb_history(run_dir: Path) -> list[dict]:
    """The history records of an offline wandb run, read from its run-*.wandb file.

    The file is a LevelDB-style log (wandb's datastore format): a 7-byte header (`:W&B`, magic 0xBEE1, version),
    then 32 KiB blocks of records (crc32 4 bytes, length 2, type 1: full/first/middle/last) holding protobuf
    `Record`s. wandb 0.31 no longer ships a Python reader, so this is the reader.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1
    pos, block, payloads, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left in this block for a record header
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            payloads.append(pending)
    history = []
    for payload in payloads:
        record = pb.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return history


def test_grpo_raises_reward_and_writes_outputs(pool, capfd, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    argv = (*ARGS, "--set", "trainer.save_steps=10", "--eval_interval", "20", "--eval_batches", "1",
            "--wandb_project", "smoke")
    assert run_main("rl_run", *argv) == 0

    all_rows = read_metrics(pool, "rl-smoke")
    rows = train_rows(all_rows)
    assert [r["step"] for r in rows] == list(range(1, 41))
    # The smoke config's shipped mixture (configs/data/posttrain/rlaif/grpo.yaml) gave the prompts.
    assert len((pool / "data/prepared/rlaif/grpo_smoke/train.jsonl").read_text().splitlines()) == 64
    first, last = [r["reward"] for r in rows[:10]], [r["reward"] for r in rows[-10:]]
    assert sum(last) / 10 > sum(first) / 10 + 0.3, (first, last)
    for key in ("loss", "learning_rate", "grad_norm", "reward", "tokens_per_s", "samples_per_s"):
        assert key in rows[-1], key
    assert rows[-1]["tokens_per_s"] > 0 and rows[-1]["samples_per_s"] > 0

    # save_total_limit: 2 -> only the two newest of checkpoint-10/20/30/40 remain.
    ckpts = sorted(p.name for p in (pool / "model" / "rl_checkpoints" / "rl-smoke").glob("checkpoint-*"))
    assert ckpts == ["checkpoint-30", "checkpoint-40"]
    assert (pool / "model" / "hf" / "rl-smoke" / "model.safetensors").is_file()
    saved = yaml.safe_load((pool / "reports" / "rl-smoke" / "config.yaml").read_text())
    assert saved["trainer"]["save_steps"] == 10 and saved["model"]["init"] == "tiny"
    assert saved["output"]["report_to"] == ["wandb"] and saved["output"]["wandb_project"] == "smoke"

    # Eval loop: mean reward on held-out prompts (10% of the task's, one batch) at steps 20 and 40.
    evals = eval_rows(all_rows)
    assert [r["step"] for r in evals] == [20, 40] and all(0.0 <= r["eval_reward"] <= 1.0 for r in evals)

    # wandb, offline: the run directory's own record of what was logged, under the seed's names.
    run_dir = next((pool / "reports" / "rl-smoke" / "wandb").glob("offline-run-*"))
    history = wandb_history(run_dir)
    train = [h for h in history if "train/loss" in h]
    assert [h["train/global_step"] for h in train] == list(range(1, 41))
    for key in ("train/learning_rate", "train/grad_norm", "train/epoch", "train/tokens_per_second",
                "train/samples_per_second", "train/reward"):
        assert key in train[-1], sorted(train[-1])
    assert train[-1]["train/reward"] == rows[-1]["reward"]
    assert [h["train/global_step"] for h in history if "eval/reward" in h] == [20, 40]

    # The trained policy, evaluated greedily, says "a" far more than the untrained base does.
    common = ("--config", "configs/eval/smoke.yaml", "--task", "tasks/smoke_task.py")
    assert run_main("evals", *common, "--set", "eval.name=base") == 0
    assert run_main("evals", *common, "--set", "eval.name=trained", "--set", "model.init=pretrained",
                    "--set", "model.name_or_path=model/hf/rl-smoke") == 0
    base = json.loads((pool / "reports" / "eval" / "base.json").read_text())["metrics"]["a_share"]
    trained = json.loads((pool / "reports" / "eval" / "trained.json").read_text())["metrics"]["a_share"]
    assert trained > base + 0.3, (base, trained)

    check_finished_then_extend("rl_run", argv, pool, "rl-smoke", 40, capfd)
