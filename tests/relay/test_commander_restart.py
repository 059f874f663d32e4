"""The commander dies (kill -9) and comes back on the same state file: the lease, the epoch and the committed
pointer are still there, and a worker whose renewals failed for a moment rides the outage out without stopping."""
from __future__ import annotations

import json

from ..waiting import wait_for
from .workers import Workers, mock_project, stop_and_lease_end


def test_worker_rides_out_a_commander_restart(tmp_path, project, relay_env, commander):
    client = commander.client()
    # TTL 16 s: renewals every 4 s; a cut-off worker stops its script 16 - 1.6 - 5.3 = 9.1 s after its last one.
    client.register("restart", {}, ttl=16)
    w = Workers(mock_project(project), relay_env, commander.url, "restart",
                ("--datapool", (tmp_path / "pool").as_uri()), steps=60, every=5, step_seconds=0.2)
    job = w.launch()
    assert wait_for(lambda: (client.run("restart")["checkpoint"] or {}).get("step", 0) >= 5, timeout=60), w.log(job)
    before = client.run("restart")

    commander.kill()
    # Down until a renewal has failed (at most 4 s), then back: an outage well inside what the worker tolerates.
    assert wait_for(lambda: "renewal failed" in w.log(job), timeout=10), w.log(job)
    commander.start()

    after = client.run("restart")
    assert after["holder"] == before["holder"] == job and after["epoch"] == before["epoch"] == 1
    assert after["checkpoint"]["step"] >= before["checkpoint"]["step"]
    assert wait_for(lambda: client.run("restart")["finished"], timeout=90), w.log(job)
    assert wait_for(lambda: w.status(job) == "succeeded", timeout=30), w.log(job)
    log = w.log(job)
    assert "stopping the script" not in log and "mock: done at step 60" in log
    assert client.run("restart")["epoch"] == 1  # never handed over


def test_a_worker_cut_off_too_long_stops_its_script_before_its_lease_ends(tmp_path, project, relay_env, commander):
    client = commander.client()
    client.register("cutoff", {}, ttl=6)  # grace cut to 2 s, margin 0.6 s: SIGTERM 3.4 s after the last renewal
    w = Workers(mock_project(project), relay_env, commander.url, "cutoff",
                ("--datapool", (tmp_path / "pool").as_uri()), steps=1000, every=5, step_seconds=0.1)
    job = w.launch()
    assert wait_for(lambda: (client.run("cutoff")["checkpoint"] or {}).get("step", 0) >= 5, timeout=60), w.log(job)
    commander.kill()  # and it stays down
    assert wait_for(lambda: w.status(job) == "preempted", timeout=60), w.log(job)
    log = w.log(job)
    assert "no renewal acknowledged" in log and "mock: SIGTERM: checkpoint" in log, log
    metrics = tmp_path / "pool" / "experiments" / "default" / "reports" / "cutoff" / "metrics.jsonl"
    last_step_at, lease_until = stop_and_lease_end(commander, metrics, "cutoff")
    assert last_step_at < lease_until - 0.6  # the script was done before the lease could pass to anyone
    result = json.loads((tmp_path / "pool" / "experiments" / "default" / "reports" / "jobs" / job / "result.json")
                        .read_text())
    assert result["reason"] == "relay_lease_lost" and "relay:" in result["error"]
