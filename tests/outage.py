"""What the outage tests run on a node (tests/*/test_*_outage.py, tests/backends/test_contract_network.py).

ticks.py COUNT DELAY [UNTIL]: COUNT numbered lines DELAY seconds apart, then (with UNTIL) ticks on until the file
UNTIL exists (the simulated nodes run on this machine), two minutes at most. A line printed twice or lost after a
reconnect shows in the numbers.
"""

TICKS = """
import os, sys, time
i, end = 0, time.time() + 120
while i < int(sys.argv[1]) or (len(sys.argv) > 3 and not os.path.exists(sys.argv[3]) and time.time() < end):
    print(f"tick {i:03d} " + "x" * 60, flush=True)
    time.sleep(float(sys.argv[2]))
    i += 1
"""
