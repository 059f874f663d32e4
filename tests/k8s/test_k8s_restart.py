"""A node taken away under a k8s job (the simulator's `preempt`: DisruptionTarget, SIGTERM or nothing, the Job failed
by its podFailurePolicy): with `--max-restarts` the next look relaunches it as a new Job of the same id that resumes
from the checkpoints pushed before; with no restarts left it ends `preempted`, saying why."""
from __future__ import annotations

import json

import pytest

from launcher import api
from launcher.backends.k8s.backend import K8sBackend
from launcher.registry import Registry

from ..motoserver import MOTO_ENV
from ..resumable import STEPS
from ..waiting import wait_for
from .cluster import BUCKET, NAMESPACE, store_text


@pytest.fixture
def here(k8s, monkeypatch):
    """The test's own process as the client (api.status relaunches in-process: no `launch` import per look)."""
    for key in ("LAUNCHER_HOME", "KUBECONFIG", *MOTO_ENV):
        monkeypatch.setenv(key, k8s.env[key])
    monkeypatch.delenv("AWS_PROFILE", raising=False)  # KUBECONFIG is read per call, not once at import


@pytest.fixture
def project(tmp_path):
    path = tmp_path / "project"
    path.mkdir()
    (path / "steps.py").write_text(STEPS)
    return path


def jobs_of(cluster, job_id: str) -> list[dict]:
    return [j for j in cluster.objects("Job") if (j["metadata"].get("labels") or {}).get("launcher/job") == job_id]


def running_pod(cluster, job_id: str) -> str | None:
    for pod in cluster.objects("Pod"):
        if (pod["metadata"].get("labels") or {}).get("launcher/job") == job_id and \
                (pod.get("status") or {}).get("phase") == "Running":
            return pod["metadata"]["name"]
    return None


def failed_condition(cluster, job_id: str) -> dict | None:
    for job in jobs_of(cluster, job_id):
        for cond in (job.get("status") or {}).get("conditions") or []:
            if cond["type"] == "Failed" and cond["status"] == "True":
                return cond
    return None


def test_preempted_pod_relaunches_and_resumes_from_the_pushed_checkpoint(k8s, cluster, nodes, moto, here, project,
                                                                         tmp_path):
    k8s.env["LAUNCHER_WATCH"] = "0"  # this test looks itself, between the preemption and the relaunch
    out = k8s("--detach", "--spot", "--max-restarts", "1", "steps.py", cwd=project)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    assert not (k8s.home / "jobs" / job_id / "watch.log").exists()
    (first,) = [j["metadata"]["uid"] for j in jobs_of(cluster, job_id)]
    s3 = moto.client()
    ckpts = f"{tmp_path.name}/experiments/default/model/steps_checkpoints/"

    def pushed_steps():
        return s3.list_objects_v2(Bucket=BUCKET, Prefix=ckpts).get("Contents", [])

    assert wait_for(lambda: len(pushed_steps()) >= 3, timeout=90), "no checkpoint reached the store"
    pod = running_pod(cluster, job_id)
    assert nodes.preempt(job_id) == [pod]
    # The Job controller applies the Job's podFailurePolicy; the deleted pod goes once it is counted.
    assert wait_for(lambda: failed_condition(cluster, job_id) is not None)
    failed = failed_condition(cluster, job_id)
    assert (failed["reason"], failed["message"]) == (
        "PodFailurePolicy", f"Pod {NAMESPACE}/{pod} has condition DisruptionTarget matching FailJob rule at index 0")
    assert wait_for(lambda: f"Pod/{pod}" not in cluster.owned_by(job_id))
    # The backend's own view, with the pod gone: the Job's condition and the scheduler's event say preempted.
    handle = K8sBackend().handle(job_id, Registry().get(job_id).handle)
    state, _, why = K8sBackend().status(handle)
    assert state == "preempted" and why.startswith(f"Job {job_id}: Pod {NAMESPACE}/{pod} has condition "
                                                   "DisruptionTarget") and "; Preempted: Preempted by pod " in why
    # Looking only reads: status says preempted and relaunches nothing.
    assert api.status(job_id)[0] == "preempted" and api.attempts(job_id) == (1, 2)
    # The first reconcile with relaunch (what `launch watch` and the foreground wait do) relaunches it: same id,
    # attempt 2, a new Job (the preempted one deleted first).
    assert api.reconcile(job_id, relaunch=True)[0] in ("pending", "running")
    assert api.attempts(job_id) == (2, 2)
    assert wait_for(lambda: api.status(job_id)[0] == "succeeded", timeout=120), api.status(job_id)
    (second,) = jobs_of(cluster, job_id)
    assert second["metadata"]["name"] == job_id and second["metadata"]["uid"] != first
    assert len(nodes.pod_dirs(job_id)) == 2  # one pod per attempt ran
    status = k8s("status", job_id, run_flags=False, cwd=project).stdout
    assert status.startswith("succeeded") and "attempt: 2 of at most 2" in status, status
    # The first attempt's result is kept beside the new one; the log goes on across attempts.
    reports = f"experiments/default/reports/jobs/{job_id}"
    assert json.loads(store_text(moto, k8s.store, f"{reports}/result.attempt-1.json"))["reason"] == "preempted"
    assert json.loads(store_text(moto, k8s.store, f"{reports}/result.json"))["reason"] == "exited"
    log = store_text(moto, k8s.store, f"{reports}/log.txt")
    assert "attempt 1 starts at step 0" in log
    resumed = int(log.split("attempt 2 starts at step ")[1].split()[0])  # LAUNCH_ATTEMPT=2 on the new pod
    assert resumed >= 3, log  # it went on from the checkpoints pushed before the preemption
    assert log.index("attempt 1 starts") < log.index("attempt 2 starts") < log.index("all steps done")


def test_in_the_foreground_the_output_goes_on_across_the_relaunch(k8s, cluster, nodes, moto, project, tmp_path):
    """The client that launched it is the one that looks: it relaunches and follows the new Job's pod. No --spot:
    a cluster takes on-demand pods away too (drain, node pressure, priority), and that is a preemption as well."""
    client = k8s("--max-restarts", "1", "steps.py", cwd=project, popen=True)
    try:
        ckpts = f"{tmp_path.name}/experiments/default/model/steps_checkpoints/"
        assert wait_for(lambda: moto.client().list_objects_v2(Bucket=BUCKET, Prefix=ckpts).get("KeyCount", 0) >= 3,
                     timeout=90), "no checkpoint reached the store"
        job_id = Registry(k8s.home).list()[0].id
        assert len(nodes.preempt(job_id)) == 1
        out, err = client.communicate(timeout=150)
    finally:
        client.kill()
    assert client.returncode == 0, out + err
    assert f"[launcher] {job_id} was preempted (attempt 1); relaunched as attempt 2 of 2" in err
    assert "attempt 1 starts at step 0" in out and "all steps done" in out, out  # both pods' output, in order
    assert int(out.split("attempt 2 starts at step ")[1].split()[0]) >= 3, out


def test_a_lost_node_with_no_restarts_left_ends_preempted_with_the_clusters_reason(k8s, cluster, nodes, moto, here,
                                                                                    project):
    out = k8s("--detach", "--spot", "steps.py", cwd=project)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    assert wait_for(lambda: running_pod(cluster, job_id) is not None and "starts at step" in (
        store_text(moto, k8s.store, f"experiments/default/reports/jobs/{job_id}/log.txt") or ""), timeout=90)
    pod = running_pod(cluster, job_id)
    # The node is gone: no kubelet runs the SIGTERM, so the agent pushes no result; the cluster says what happened.
    assert nodes.preempt(job_id, "DeletionByTaintManager", node_lost=True) == [pod]
    assert wait_for(lambda: api.reconcile(job_id)[0] == "preempted", timeout=60), api.status(job_id)
    assert store_text(moto, k8s.store, f"experiments/default/reports/jobs/{job_id}/result.json") is None
    assert api.attempts(job_id) is None
    assert api.reason(job_id) == (f"Job {job_id}: Pod {NAMESPACE}/{pod} has condition DisruptionTarget matching "
                                  f"FailJob rule at index 0; TaintManagerEviction: Marking for deletion Pod "
                                  f"{NAMESPACE}/{pod}")
    assert len(jobs_of(cluster, job_id)) == 1 and len(nodes.pod_dirs(job_id)) == 1  # nothing relaunched
    status = k8s("status", job_id, run_flags=False, cwd=project).stdout
    assert status.startswith("preempted") and "has condition DisruptionTarget" in status, status
