"""A mock trainer: counts steps, checkpoints every N, resumes from its newest checkpoint. The relay's default
trainer (`mode: mock`) and the quickest way to see a hand-off, on any machine, in seconds.

    python runners/mock_run.py --steps 60 --checkpoint-every 5 --step-seconds 0.2 [--run-name NAME]

Checkpoints: $CHECKPOINT_DIR/<run-name>/checkpoint-<step>/ holding state.json and trainer_state.json (written
last, like transformers: a folder without it was cut short). Built in a `tmp-checkpoint-<step>` folder and renamed,
so a push never takes half of one. Metrics: reports/<run-name>/metrics.jsonl, one line per step with the step,
the step it resumed from, the job and the relay epoch. SIGTERM: checkpoint the current step, exit 143.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from launcher.layout import checkpoint_dir, experiment_dir


def newest(run_dir: Path) -> int:
    best = 0
    for child in run_dir.glob("checkpoint-*") if run_dir.is_dir() else []:
        try:
            state = json.loads((child / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        best = max(best, int(state["global_step"]))
    return best


def save(run_dir: Path, step: int) -> None:
    final = run_dir / f"checkpoint-{step}"
    if final.exists():
        return
    tmp = run_dir / f"tmp-checkpoint-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "state.json").write_text(json.dumps({"step": step}) + "\n")
    (tmp / "trainer_state.json").write_text(json.dumps({"global_step": step}) + "\n")
    os.replace(tmp, final)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="total steps of the run (default 100)")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="steps between checkpoints (default 10)")
    parser.add_argument("--step-seconds", type=float, default=0.5, help="how long one step takes (default 0.5)")
    parser.add_argument("--run-name", default="mock", help="folder name under CHECKPOINT_DIR and reports/")
    ns = parser.parse_args(argv)
    if ns.steps < 1 or ns.checkpoint_every < 1 or ns.step_seconds < 0:
        parser.error("--steps and --checkpoint-every must be >= 1, --step-seconds >= 0")

    run_dir = checkpoint_dir("mock_run") / ns.run_name
    reports = experiment_dir() / "reports" / ns.run_name
    reports.mkdir(parents=True, exist_ok=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))

    start = newest(run_dir)
    print(f"mock: {'resuming from step ' + str(start) if start else 'starting fresh'}; {ns.steps} steps, "
          f"checkpoint every {ns.checkpoint_every}", flush=True)
    step = start
    with open(reports / "metrics.jsonl", "a") as metrics:
        while step < ns.steps:
            if stop:
                save(run_dir, step)
                print(f"mock: SIGTERM: checkpoint at step {step}; exiting 143", flush=True)
                return 143
            time.sleep(ns.step_seconds)
            step += 1
            metrics.write(json.dumps({"step": step, "resumed_from": start, "job": os.environ.get("JOB_ID"),
                                      "relay_epoch": os.environ.get("RELAY_EPOCH"), "time": time.time()}) + "\n")
            metrics.flush()
            if step % ns.checkpoint_every == 0 or step == ns.steps:
                save(run_dir, step)
                print(f"mock: step {step}: checkpoint", flush=True)
            else:
                print(f"mock: step {step}", flush=True)
    print(f"mock: done at step {step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
