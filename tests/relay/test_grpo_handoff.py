"""A real GRPO smoke run (TRL on a tiny offline model, CPU) handed over twice: each worker is killed (-9) after a
commit, the next resumes from that checkpoint through the runner's own resume path, and the run ends at the same
step an uninterrupted one does."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ..waiting import wait_for
from .workers import Workers

REPO = Path(__file__).resolve().parents[2]
# Longer completions and batches than the smoke config: ~0.25 s a step here, so a checkpoint interval (2 s) is
# longer than a commit takes to land (a new checkpoint is looked for every second) and a kill lands mid-run.
STEPS, EVERY = 24, 8
SLOWER = ("--set", "trainer.max_completion_length=48", "--set", "trainer.per_device_train_batch_size=16")


def launch_grpo(w: Workers) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "launcher", "--detach", *w.flags, "--relay", w.commander_url, "--run-id", w.run,
         "--push-interval", "1s", "runners/rl_run.py", "--config", "configs/rl/smoke.yaml", "--task",
         "tasks/smoke_task.py", "--set", f"trainer.max_steps={STEPS}", "--set", f"trainer.save_steps={EVERY}",
         "--set", "trainer.save_total_limit=1", *SLOWER],
        cwd=REPO, env=w.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def test_grpo_run_handed_over_twice(tmp_path, relay_env, commander):
    client = commander.client()
    client.register("grpo", {}, ttl=6)
    pool = tmp_path / "pool"
    w = Workers(REPO, {**relay_env, "WANDB_MODE": "disabled"}, commander.url, "grpo",
                ("--datapool", pool.as_uri(), "--experiment", "relay-grpo"))
    pointers, jobs = [], []
    for epoch in (1, 2):
        job = launch_grpo(w)
        jobs.append(job)
        floor = pointers[-1]["step"] if pointers else 0
        assert wait_for(lambda: (client.run("grpo")["checkpoint"] or {}).get("epoch") == epoch
                        and client.run("grpo")["checkpoint"]["step"] > floor, timeout=150), w.log(job)
        w.kill9(job)
        pointers.append(client.run("grpo")["checkpoint"])  # read after the kill: a commit may have landed between
    last = launch_grpo(w)
    assert wait_for(lambda: client.run("grpo")["finished"], timeout=180), w.log(last)
    assert wait_for(lambda: w.status(last) == "succeeded", timeout=30), w.log(last)

    view = client.run("grpo")
    assert view["epoch"] == 3 and view["handoffs"] == 2 and view["checkpoint"]["step"] == STEPS
    exp = pool / "experiments" / "relay-grpo"
    rows = [json.loads(line) for line in (exp / "reports" / "rl-smoke" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "reward" in r and "step" in r]
    assert max(r["step"] for r in train) == STEPS  # the step an uninterrupted run ends at
    assert {r["step"] for r in train} == set(range(1, STEPS + 1))
    for job, pointer, nxt in zip(jobs, pointers, (jobs[1], last)):
        # The successor's trainer resumed from the committed checkpoint, copied into its own epoch folder.
        assert f"resuming from step {pointer['step']}" in w.log(nxt)
        # What it redid: the steps the killed worker logged past that commit, at most one checkpoint interval.
        done = [int(s) for s in re.findall(r"^step (\d+)/", w.log(job), re.M)]
        assert done and 0 <= max(done) - pointer["step"] <= EVERY, (max(done), pointer)
    assert (exp / "model" / "relay" / "grpo" / "epoch-3" / "rl-smoke" / f"checkpoint-{STEPS}").is_dir()
    assert (exp / "model" / "hf" / "rl-smoke" / "model.safetensors").is_file()
