"""One run handed across workers: kill -9 mid-run, the lease expires, the next worker resumes from the last
commit (local, then ssh to a real sshd), the store a moto S3 every worker reaches; a clean preemption hands over
without waiting for the TTL; and split brain: a worker paused past its TTL can never publish over its successor."""
from __future__ import annotations

import json
import re
import signal
import sys

import yaml

from ..motoserver import MOTO_ENV
from ..waiting import wait_for
from .workers import Workers, mock_project

from .conftest import BUCKET


def workers_on_s3(tmp_path, project, relay_env, commander, moto, run: str, **kw) -> Workers:
    env = {**relay_env, **MOTO_ENV}
    flags = ("--datapool", f"s3://{BUCKET}/{tmp_path.name}", "--endpoint-url", moto.endpoint,
             "--secret", "AWS_ACCESS_KEY_ID", "--secret", "AWS_SECRET_ACCESS_KEY", "--experiment", "relay")
    return Workers(mock_project(project), env, commander.url, run, flags, **kw)


def store_metrics(moto, tmp_path, run: str) -> list[dict]:
    key = f"{tmp_path.name}/experiments/relay/reports/{run}/metrics.jsonl"
    body = moto.client().get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def last_step_printed(w: Workers, job_id: str) -> int:
    log = w.project / "datapool" / "experiments" / "relay" / "reports" / "jobs" / job_id / "log.txt"
    return max(int(m) for m in re.findall(r"^mock: step (\d+)", log.read_text(), re.M))


def committed(client, run: str) -> dict | None:
    return client.run(run)["checkpoint"]


def kill_after_next_commit(w: Workers, client, job_id: str, after_step: int) -> dict:
    """Waits for a commit past `after_step` by this worker's epoch, then kills it at once (what a successor redoes
    is then the steps since that commit: less than one checkpoint interval)."""
    assert wait_for(lambda: (committed(client, w.run) or {}).get("step", 0) > after_step, timeout=90), \
        w.log(job_id)
    w.kill9(job_id)
    return committed(client, w.run)  # read after the kill: a commit may have landed in between


def test_mock_run_handed_over_twice_local_then_ssh(tmp_path, project, relay_env, commander, moto, sshd):
    client = commander.client()
    client.register("handoff", {}, ttl=4)
    # A checkpoint every 10 steps of 0.4 s: the interval (4 s) is longer than a commit takes to land under load
    # (a second to notice it, then the push), so a worker killed right after a commit is inside the interval.
    w = workers_on_s3(tmp_path, project, relay_env, commander, moto, "handoff", steps=40, every=10, step_seconds=0.4)
    a = w.launch()
    first = kill_after_next_commit(w, client, a, 0)

    b = w.launch()  # waits politely while the dead worker's lease runs out, then takes the run
    assert wait_for(lambda: client.run("handoff")["epoch"] == 2, timeout=60), w.log(b)
    second = kill_after_next_commit(w, client, b, first["step"])
    assert second["epoch"] == 2

    ssh = {"host": sshd.target, "identity": str(sshd.identity), "known_hosts": str(sshd.known_hosts),
           "python": sys.executable, "remote_dir": str(tmp_path / "node")}
    (tmp_path / "ssh.yaml").write_text(yaml.safe_dump({"backend": "ssh", "ssh": ssh}))
    c = w.launch("--profile", str(tmp_path / "ssh.yaml"))
    assert wait_for(lambda: client.run("handoff")["finished"], timeout=120), w.log(c)
    assert wait_for(lambda: w.status(c) == "succeeded", timeout=60), w.log(c)

    view = client.run("handoff", events=200)
    assert view["epoch"] == 3 and view["handoffs"] == 2
    assert view["checkpoint"]["step"] == w.steps and view["checkpoint"]["epoch"] == 3
    lines = store_metrics(moto, tmp_path, "handoff")
    assert lines[-1]["step"] == w.steps  # the same last step as an uninterrupted run
    assert {line["step"] for line in lines} == set(range(1, w.steps + 1))  # no step skipped
    by_epoch = {}
    for line in lines:
        by_epoch.setdefault(line["relay_epoch"], []).append(line)
    assert sorted(by_epoch) == ["1", "2", "3"]
    # Each successor resumed from exactly the checkpoint committed before the kill ...
    assert by_epoch["2"][0]["resumed_from"] == first["step"] and by_epoch["3"][0]["resumed_from"] == second["step"]
    # ... so what it redid is the steps the killed worker ran past that commit (its own log, on this machine, has
    # every step it printed; the store's metrics may lack the last second): at most one checkpoint interval.
    for killed, pointer in ((a, first), (b, second)):
        redone = last_step_printed(w, killed) - pointer["step"]
        assert 0 <= redone <= w.every, (killed, redone)
    assert "[launcher] relay: holding run handoff at epoch 3" in w.log(c)
    assert f"resuming from step {second['step']}" in w.log(c)


def test_sigterm_hands_over_without_waiting_for_the_ttl(tmp_path, project, relay_env, commander, moto):
    client = commander.client()
    client.register("clean", {}, ttl=30)  # a hand-off that waited for the TTL would take 30 s
    w = workers_on_s3(tmp_path, project, relay_env, commander, moto, "clean", steps=30, every=5)
    a = w.launch()
    assert wait_for(lambda: (committed(client, "clean") or {}).get("step", 0) >= 5, timeout=60), w.log(a)
    b = w.launch()  # a standby, waiting for the lease
    w.signal_all(a, signal.SIGTERM)  # the platform takes the machine: the agent pushes, commits, releases
    assert wait_for(lambda: client.run("clean")["epoch"] == 2, timeout=60), w.log(b)
    events = client.run("clean", events=200)["events"]
    released = next(e for e in events if e["kind"] == "released")
    acquired = [e for e in events if e["kind"] == "acquired"][-1]
    last_renewal_bound = released["at"]  # the lease ran at most until release + TTL
    assert acquired["at"] < last_renewal_bound + 30 - 5  # well before the TTL could have run out
    assert acquired["worker"] == b and acquired["previous"] is None  # released, not expired
    stopped = [e for e in events if e["kind"] == "committed" and e["epoch"] == 1][-1]
    assert acquired["checkpoint_step"] == stopped["step"]  # the successor starts from A's last (SIGTERM) save
    assert wait_for(lambda: client.run("clean")["finished"], timeout=90), w.log(b)


def test_split_brain_paused_worker_cannot_publish_over_its_successor(tmp_path, project, relay_env, commander, moto):
    client = commander.client()
    client.register("split", {}, ttl=4)
    w = workers_on_s3(tmp_path, project, relay_env, commander, moto, "split", steps=200, every=5)
    a = w.launch()
    assert wait_for(lambda: (committed(client, "split") or {}).get("step", 0) >= 5, timeout=60), w.log(a)
    b = w.launch()
    w.signal_all(a, signal.SIGSTOP)  # paused (or cut off) past its TTL
    assert wait_for(lambda: client.run("split")["epoch"] == 2, timeout=60), w.log(b)
    assert wait_for(lambda: (committed(client, "split") or {}).get("epoch") == 2, timeout=60), w.log(b)
    w.signal_all(a, signal.SIGCONT)  # A wakes up believing it still holds the run
    assert wait_for(lambda: w.status(a) in ("preempted", "failed", "cancelled"), timeout=60), w.log(a)
    events = client.run("split", events=500)["events"]
    refused = [e for e in events if e["kind"].endswith("_refused") and e.get("epoch") == 1]
    assert refused, events  # A's renew or commit came back with epoch 1 and was refused
    assert not [e for e in events if e["kind"] == "committed" and e["epoch"] == 1 and e["at"] > refused[0]["at"]]
    pointer = committed(client, "split")
    assert pointer["epoch"] == 2 and "/epoch-2/" in pointer["path"]
    log_a = w.log(a)
    assert "stale epoch 1" in log_a or "no renewal acknowledged" in log_a, log_a
    assert w.status(b) == "running"  # B goes on, its checkpoints intact
    assert wait_for(lambda: (committed(client, "split") or {}).get("step", 0) > pointer["step"], timeout=60)
    client.close("split")
    assert wait_for(lambda: w.status(b) != "running", timeout=60)
