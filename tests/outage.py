"""What the outage tests run on a node (tests/*/test_*_outage.py, tests/backends/test_contract_network.py).

ticks.py COUNT DELAY [UNTIL]: COUNT numbered lines DELAY seconds apart, then (with UNTIL) ticks on until the file
UNTIL exists (the simulated nodes run on this machine), two minutes at most. A line printed twice or lost after a
reconnect shows in the numbers.
"""

# push.py GO [EXIT]: writes a checkpoint, waits (two minutes at most) for the file GO, writes its final model, then
# exits EXIT (0 by default): what a store outage during the run or at the final push must not lose.
CHECKPOINT_THEN_WAIT = """
import os, sys, time
from pathlib import Path
exp = Path(os.environ["EXPERIMENT_DIR"])
ckpt = Path(os.environ["CHECKPOINT_DIR"]) / "checkpoint-1"
ckpt.mkdir(parents=True)
(ckpt / "weights.bin").write_bytes(b"w" * 1000)
print("started", flush=True)
go = Path(sys.argv[1])
for _ in range(2400):
    if go.exists():
        break
    time.sleep(0.05)
(exp / "model/hf/final").mkdir(parents=True)
(exp / "model/hf/final/model.bin").write_bytes(b"final")
print("done", flush=True)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""

TICKS = """
import os, sys, time
i, end = 0, time.time() + 120
while i < int(sys.argv[1]) or (len(sys.argv) > 3 and not os.path.exists(sys.argv[3]) and time.time() < end):
    print(f"tick {i:03d} " + "x" * 60, flush=True)
    time.sleep(float(sys.argv[2]))
    i += 1
"""
