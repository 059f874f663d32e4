"""The worker's link to the commander through the fault proxy (tests/faults.py): dropped, blackholed and refused
connections shorter than the worker's tolerance pass without a stop, and the run finishes with exit 0; a blackhole
longer than it stops the script before the lease can pass to anyone else."""
from __future__ import annotations

import time

from ..faults import FaultProxy
from ..waiting import wait_for
from .workers import Workers, mock_project, stop_and_lease_end


def test_short_drops_blackholes_and_refusals_pass_without_a_stop(tmp_path, project, relay_env, commander):
    client = commander.client()
    # TTL 16 s: renewals every 4 s, a 1.6 s margin and a grace cut to 5.3 s: 9 s without an answer is tolerated.
    client.register("faults", {}, ttl=16)
    with FaultProxy(("127.0.0.1", commander.port), name="node->commander") as proxy:
        w = Workers(mock_project(project), relay_env, f"http://{proxy.address}", "faults",
                    ("--datapool", (tmp_path / "pool").as_uri()), steps=200, every=10, step_seconds=0.2)
        job = w.launch()
        assert wait_for(lambda: (client.run("faults")["checkpoint"] or {}).get("step", 0) >= 10, timeout=60)
        for fault in (proxy.drop, proxy.blackhole, proxy.refuse):
            fault(for_s=3)  # long enough for a renewal to fail (they come every 4 s, retried every second) ...
            time.sleep(3 + 5)  # ... and then one lands again before the next fault: separate outages, not one long
        assert wait_for(lambda: client.run("faults")["finished"], timeout=90), w.log(job)
        assert wait_for(lambda: w.status(job) == "succeeded", timeout=30), w.log(job)
    log = w.log(job)
    assert "renewal failed" in log  # the faults really cut the worker off ...
    assert "stopping the script" not in log and "mock: done at step 200" in log  # ... and it rode them out
    view = client.run("faults")
    assert view["epoch"] == 1 and view["checkpoint"]["step"] == 200


def test_a_blackhole_longer_than_the_lease_allows_stops_the_script_in_time(tmp_path, project, relay_env, commander):
    client = commander.client()
    client.register("hole", {}, ttl=6)
    with FaultProxy(("127.0.0.1", commander.port), name="node->commander") as proxy:
        w = Workers(mock_project(project), relay_env, f"http://{proxy.address}", "hole",
                    ("--datapool", (tmp_path / "pool").as_uri()), steps=1000, every=5, step_seconds=0.1)
        job = w.launch()
        assert wait_for(lambda: (client.run("hole")["checkpoint"] or {}).get("step", 0) >= 5, timeout=60)
        proxy.blackhole()  # the commander stays up; the worker's packets go nowhere
        assert wait_for(lambda: w.status(job) == "preempted", timeout=60), w.log(job)
    assert "no renewal acknowledged" in w.log(job)
    metrics = tmp_path / "pool" / "experiments" / "default" / "reports" / "hole" / "metrics.jsonl"
    last_step_at, lease_until = stop_and_lease_end(commander, metrics, "hole")
    assert last_step_at < lease_until - 0.6  # the script was done before the lease could pass to anyone
