"""A job script that resumes, for the relaunch-after-preemption tests of every backend.

One file per finished step (a file written once settles and is pushed; one rewritten every step never would be),
and on start the newest step found in CHECKPOINT_DIR is where it goes on from.
"""

STEPS = """
import os, time
from pathlib import Path
ckpt = Path(os.environ["CHECKPOINT_DIR"])
ckpt.mkdir(parents=True, exist_ok=True)
done = [int(p.stem.split("-")[1]) for p in ckpt.glob("step-*.txt")]
start = max(done) + 1 if done else 0
print(f"attempt {os.environ['LAUNCH_ATTEMPT']} starts at step {start}", flush=True)
for i in range(start, 14):
    (ckpt / f"step-{i}.txt").write_text(str(i))
    time.sleep(0.5)
print("all steps done", flush=True)
"""
