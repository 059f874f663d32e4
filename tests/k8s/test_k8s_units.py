"""Pure parts, no cluster: stuck-pod diagnosis on the objects as the API serves them, and the agent's multi-node
rank, torchrun wrapping and who pushes."""
from __future__ import annotations

from pathlib import Path

from launcher.node import multinode
from launcher.backends.k8s import stuck

NOW = 1_800_000_000.0


def pod(name="job-x-0-abcde", phase="Pending", created="2027-01-15T08:00:00Z", conditions=(), waiting=None):
    status = {"phase": phase, "conditions": list(conditions)}
    if waiting:
        status["containerStatuses"] = [{"name": "agent", "state": {"waiting": {"reason": waiting[0],
                                                                               "message": waiting[1]}}}]
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": status}


def event(kind, name, reason, message, at="2027-01-15T08:00:01Z"):
    return {"involvedObject": {"kind": kind, "name": name}, "reason": reason, "message": message,
            "lastTimestamp": at}


def created_ago(seconds: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(NOW - seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}


def test_immediate_reasons_carry_the_clusters_message():
    p = pod(created=created_ago(5), conditions=[UNSCHEDULABLE])
    why = stuck.diagnose("job-x", [p], [], now=NOW, job_created=NOW - 6, pending_timeout=600)
    assert why == "pod job-x-0-abcde cannot be scheduled: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    p = pod(created=created_ago(5), waiting=("CreateContainerConfigError", 'secret "hf" not found'))
    assert stuck.diagnose("job-x", [p], [], now=NOW, job_created=None, pending_timeout=600) == \
        'pod job-x-0-abcde: CreateContainerConfigError: secret "hf" not found'
    jobs_events = [event("Job", "job-x", "FailedCreate", 'pods "job-x-0" is forbidden: exceeded quota: gpu-quota')]
    assert "exceeded quota: gpu-quota" in stuck.diagnose("job-x", [], jobs_events, now=NOW, job_created=NOW - 1,
                                                         pending_timeout=600)


def test_an_autoscaler_adding_a_node_leaves_it_to_the_pending_timeout():
    p = pod(created=created_ago(30), conditions=[UNSCHEDULABLE])
    events = [event("Pod", "job-x-0-abcde", "FailedScheduling", UNSCHEDULABLE["message"]),
              event("Pod", "job-x-0-abcde", "TriggeredScaleUp", "pod triggered scale-up: [{gpu-pool 0->1 (max: 4)}]"),
              event("Pod", "other-pod", "Scheduled", "not ours")]
    assert stuck.diagnose("job-x", [p], events, now=NOW, job_created=None, pending_timeout=600) is None
    p = pod(created=created_ago(700), conditions=[UNSCHEDULABLE])
    why = stuck.diagnose("job-x", [p], events, now=NOW, job_created=None, pending_timeout=600)
    assert why.startswith("pod job-x-0-abcde still Pending after 11m40s (--pending-timeout 10m00s); last event: "
                          "TriggeredScaleUp: pod triggered scale-up")


def test_running_pods_and_young_pending_ones_are_not_stuck():
    pods = [pod(phase="Running", created=created_ago(2000)), pod(name="job-x-1-fghij", created=created_ago(20))]
    assert stuck.diagnose("job-x", pods, [], now=NOW, job_created=None, pending_timeout=600) is None
    assert stuck.diagnose("job-x", [], [], now=NOW, job_created=NOW - 30, pending_timeout=600) is None
    assert "made no pod" in stuck.diagnose("job-x", [], [], now=NOW, job_created=NOW - 700, pending_timeout=600)


def test_disruption_and_exit_code():
    failed = {"metadata": {"name": "p"}, "status": {"phase": "Failed", "conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
         "message": "Preempted in order to admit critical pod"}],
        "containerStatuses": [{"state": {"terminated": {"exitCode": 137}}}]}}
    assert stuck.disrupted([failed]) == "pod p: PreemptionByScheduler: Preempted in order to admit critical pod"
    assert stuck.exit_code([failed]) == 137
    assert stuck.disrupted([pod()]) is None and stuck.exit_code([pod()]) is None


MULTI = {"LAUNCH_NUM_NODES": "4", "LAUNCH_TORCHRUN": "1", "MASTER_ADDR": "job-0.job", "MASTER_PORT": "29555",
         "NPROC_PER_NODE": "8", "WORLD_SIZE": "32", "JOB_COMPLETION_INDEX": "2"}


def test_rank_env_and_torchrun_wrapping():
    assert multinode.rank_env(MULTI) == {"NODE_RANK": "2", "NNODES": "4"}
    cmd = multinode.wrap(["/py", "-u", "/code/train.py", "--lr", "1e-4"], MULTI)
    assert cmd == ["/py", "-u", "-m", "torch.distributed.run", "--nnodes", "4", "--nproc-per-node", "8",
                   "--node-rank", "2", "--master-addr", "job-0.job", "--master-port", "29555", "/code/train.py",
                   "--lr", "1e-4"]
    assert multinode.wrap(["bash", "/code/run.sh"], MULTI) == ["bash", "/code/run.sh"]  # not Python: as it is
    # Every other backend: nothing changes.
    assert multinode.rank_env({}) == {} and multinode.wrap(["/py", "-u", "/t.py"], {}) == ["/py", "-u", "/t.py"]
    assert multinode.log_name({}) == "log.txt" and multinode.log_name(MULTI) == "log-rank2.txt"


class _Pool:
    push_interval = 30.0

    def __init__(self):
        self.calls = []

    def pull_inputs(self, resume=()):
        self.calls.append("pull")

    def start_pushing(self, paths):
        self.calls.append("start")

    def final_push(self):
        self.calls.append("final")

    def push_file(self, path):
        self.calls.append(f"file {Path(path).name}")


def test_only_rank_0_pushes_outputs():
    pool = _Pool()
    assert multinode.datapool_for_rank(pool, {**MULTI, "JOB_COMPLETION_INDEX": "0"}, Path("log.txt")) is pool
    other = multinode.datapool_for_rank(pool, MULTI, Path("r/log-rank2.txt"))
    other.pull_inputs()
    other.start_pushing([Path("ckpt")])
    other.final_push()
    other.push_file(Path("r/result.json"))
    assert pool.calls == ["pull", "file log-rank2.txt"]  # its inputs, its log; no outputs, no result


def test_a_disruption_is_named_from_the_job_when_the_pod_is_gone():
    failed = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
              "message": "Pod ml/job-x-abcde has condition DisruptionTarget matching FailJob rule at index 0"}
    events = [event("Pod", "job-x-abcde", "Started", "Started container agent"),
              event("Pod", "job-x-abcde", "Preempted", "Preempted by pod 1234 on node node-1"),
              event("Pod", "other-abcde", "Preempted", "Preempted by pod 5678 on node node-1")]
    assert stuck.disrupted_job("job-x", failed, lambda: events) == (
        "Job job-x: Pod ml/job-x-abcde has condition DisruptionTarget matching FailJob rule at index 0; "
        "Preempted: Preempted by pod 1234 on node node-1")
    assert stuck.disrupted_job("job-x", failed, lambda: []).endswith("rule at index 0")  # events expire after 1 h
    on_exit = {**failed, "message": "Container agent for pod ml/job-x-abcde failed with exit code 3 matching FailJob "
                                    "rule at index 1"}
    assert stuck.disrupted_job("job-x", on_exit, lambda: events) is None
    assert stuck.disrupted_job("job-x", {**failed, "reason": "BackoffLimitExceeded"}, lambda: events) is None
