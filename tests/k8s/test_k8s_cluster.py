"""The k8s backend against a real client and API (kmock) with the node simulator running the pods here: the smoke
runner and a 2-node torch.distributed job end to end, stuck pods reported with the cluster's reason, nothing left
behind, and every later command acting on the cluster the job was started on."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime

import yaml

from launcher.registry import Registry

from ..motoserver import MOTO_ENV, free_port
from ..waiting import wait_for
from .cluster import BUCKET, IMAGE, NAMESPACE, store_text

GLOO = """
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
line = (f"rank {rank} world {world} master {os.environ['MASTER_ADDR']} node_rank {os.environ['NODE_RANK']} "
        f"sum {t.item():g}")
print(line, flush=True)
os.makedirs(os.path.join(os.environ["EXPERIMENT_DIR"], "reports"), exist_ok=True)
with open(os.path.join(os.environ["EXPERIMENT_DIR"], "reports", f"rank{rank}.txt"), "w") as f:
    f.write(line)
dist.destroy_process_group()
"""


def last_job(k8s) -> str:
    return Registry(k8s.home).list()[0].id


def wait_waiting(cluster, job_id: str, reason: str, timeout: float = 60) -> None:
    """Until the job's pod shows `reason` as its container's waiting reason (read with the test's own client:
    each `launch status` pays the kubernetes client's import, seconds on a busy machine)."""
    end = time.time() + timeout
    while time.time() < end:
        for pod in cluster.objects("Pod"):
            if (pod["metadata"].get("labels") or {}).get("launcher/job") == job_id:
                for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                    if ((cs.get("state") or {}).get("waiting") or {}).get("reason") == reason:
                        return
        time.sleep(0.3)
    raise AssertionError(f"{job_id}: no pod waiting with {reason}")


def profile(tmp_path, **k8s_section) -> str:
    path = tmp_path / "k8s.yaml"
    path.write_text(yaml.safe_dump({"k8s": k8s_section}))
    return str(path)


def test_smoke_runner_end_to_end_then_nothing_left(k8s, cluster, moto, tmp_path):
    out = k8s("--profile", profile(tmp_path, ttl_after_finished="2s"), "--cpus", "1", "--memory", "2Gi",
              "runners/hrm_lm_run.py", "--config", "configs/hrm_lm/smoke.yaml", "--run_name", "k8s", "--steps", "4",
              "--val_every", "2", "--log_steps", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done: step 4" in out.stdout  # streamed from the pod's log
    job_id = last_job(k8s)
    result = json.loads(store_text(moto, k8s.store, f"experiments/default/reports/jobs/{job_id}/result.json"))
    assert (result["exit_code"], result["reason"], result["backend"]) == (0, "exited", "k8s")
    moto.client().head_object(Bucket=BUCKET, Key=f"{tmp_path.name}/experiments/default/model/hrm_lm/k8s/final.pt")
    # The TTL takes the Job; the garbage collector takes its pods, ConfigMap and Secret with it.
    assert cluster.wait_gone(job_id) == []
    logs = k8s("logs", job_id, run_flags=False)  # from the store's copy now
    assert logs.returncode == 0 and "done: step 4" in logs.stdout
    assert k8s("status", job_id, run_flags=False).stdout.startswith("succeeded")
    secret_values = {MOTO_ENV["AWS_SECRET_ACCESS_KEY"]}
    record = Registry(k8s.home).get(job_id)
    assert record.handle["context"] == "kmock" and record.handle["namespace"] == NAMESPACE
    assert not any(v in json.dumps(record.handle) for v in secret_values if len(v) > 4)


def test_two_node_gloo_all_reduce(k8s, cluster, moto, tmp_path, nodes):
    project = tmp_path / "project"
    project.mkdir()
    (project / "allreduce.py").write_text(GLOO)
    port = free_port()
    out = k8s("--profile", profile(tmp_path, master_port=port), "--num-nodes", "2", "allreduce.py", cwd=project)
    assert out.returncode == 0, out.stdout + out.stderr
    job_id = last_job(k8s)
    svc = job_id if job_id[0].isalpha() else f"j-{job_id}"
    master = f"{job_id}-0.{svc}"
    assert f"rank 0 world 2 master {master} node_rank 0 sum 3" in out.stdout  # pod 0's log, streamed
    reports = f"experiments/default/reports/jobs/{job_id}"
    rank1_log = store_text(moto, k8s.store, f"{reports}/log-rank1.txt")
    assert f"rank 1 world 2 master {master} node_rank 1 sum 3" in rank1_log  # every rank writes its log
    assert store_text(moto, k8s.store, "experiments/default/reports/rank0.txt") is not None
    assert store_text(moto, k8s.store, "experiments/default/reports/rank1.txt") is None  # only rank 0 pushes
    assert json.loads(store_text(moto, k8s.store, f"{reports}/result.json"))["exit_code"] == 0
    hostnames = sorted(p["spec"]["hostname"] for p in cluster.objects("Pod") if p["metadata"]["labels"].get(
        "launcher/job") == job_id)
    assert hostnames == [f"{job_id}-0", f"{job_id}-1"]


def test_unschedulable_gpu_is_reported_at_once_and_the_job_deleted(k8s, cluster, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('never runs')\n")
    started = time.time()
    out = k8s("--gpu", "H100:8", "train.py", cwd=project)
    assert out.returncode != 0
    assert time.time() - started < 120  # well within the default 10 min pending timeout
    job_id = last_job(k8s)
    # The follower says it (stdout) unless the foreground's own look recorded it first (its reason line, stderr).
    said = out.stdout + out.stderr
    assert (f"[launcher] {job_id} failed: pod {job_id}-" in out.stdout or f"[launcher] reason: pod {job_id}-" in said) \
        and "cannot be scheduled" in said, said
    status = k8s("status", job_id, run_flags=False).stdout
    assert status.startswith("failed")
    assert "cannot be scheduled: 0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector" \
        in status
    assert cluster.wait_gone(job_id) == []


def test_image_pull_backoff_is_reported_with_the_clusters_message(k8s, cluster, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('never runs')\n")
    job_id = k8s("--detach", "--image", "ghcr.io/nobody/nothing:1", "train.py", cwd=project).stdout.strip()
    wait_waiting(cluster, job_id, "ImagePullBackOff")
    state = k8s("status", job_id, run_flags=False).stdout
    assert state.startswith("failed")
    assert "ImagePullBackOff: Back-off pulling image \"ghcr.io/nobody/nothing:1\"" in state
    assert cluster.wait_gone(job_id) == []


def test_missing_secret_before_and_after_submit(k8s, cluster, nodes, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('never runs')\n")
    prof = profile(tmp_path, secret_name="team-secrets")
    # Before: preflight names the Secret that is not there, and nothing is created.
    out = k8s("--profile", prof, "--detach", "--secret", "HF_TOKEN", "train.py", cwd=project)
    assert out.returncode == 2 and "Secret team-secrets does not exist in namespace ml" in out.stderr, out.stderr
    assert Registry(k8s.home).list() == []
    # After: deleted between submit and the pod's start -> CreateContainerConfigError, with the kubelet's message.
    import base64

    values = {"HF_TOKEN": "x", **{k: MOTO_ENV[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}}
    cluster.core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": "team-secrets"}, "data": {
        k: base64.b64encode(v.encode()).decode() for k, v in values.items()}})
    nodes.hold.add("train-")
    try:
        out = k8s("--profile", prof, "--detach", "--secret", "HF_TOKEN", "train.py", cwd=project)
        job_id = out.stdout.strip()
        assert job_id.startswith("train-"), out.stderr
        cluster.core.delete_namespaced_secret("team-secrets", NAMESPACE)
    finally:
        nodes.hold.discard("train-")
    wait_waiting(cluster, job_id, "CreateContainerConfigError")
    state = k8s("status", job_id, run_flags=False).stdout
    assert 'CreateContainerConfigError: secret "team-secrets" not found' in state, state
    assert cluster.wait_gone(job_id) == []


def test_pending_timeout_and_keep_on_failure(k8s, cluster, nodes, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "waits.py").write_text("print('never runs')\n")
    nodes.hold.add("waits-")
    try:
        job_id = k8s("--detach", "--pending-timeout", "2s", "--keep-on-failure", "waits.py",
                     cwd=project).stdout.strip()
        (job,) = [j for j in cluster.objects("Job") if j["metadata"]["name"] == job_id]
        created = datetime.fromisoformat(job["metadata"]["creationTimestamp"].replace("Z", "+00:00")).timestamp()
        time.sleep(max(0.0, created + 4 - time.time()))
        state = k8s("status", job_id, run_flags=False).stdout
        assert state.startswith("failed") and "still Pending after" in state and "--pending-timeout 2s" in state
        assert f"Job/{job_id}" in cluster.owned_by(job_id)  # kept for kubectl describe
        assert k8s("down", job_id, run_flags=False).returncode == 0
        assert cluster.wait_gone(job_id) == []
    finally:
        nodes.hold.discard("waits-")


def test_unknown_claim_is_refused_before_anything_is_created(k8s, cluster, tmp_path, moto):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('hi')\n")
    before = cluster.objects("Job")
    out = subprocess.run([sys.executable, "-m", "launcher", "--backend", "k8s", "--image", IMAGE, "--datapool",
                          "pvc://no-such-claim/pool", "train.py"], cwd=project, env=k8s.env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert "unknown PersistentVolumeClaim no-such-claim in namespace ml" in out.stderr
    assert cluster.objects("Job") == before


def test_pvc_datapool_runs_with_nothing_synced(k8s, cluster, nodes, tmp_path):
    claim_dir = tmp_path / "claim"
    nodes.claims["team-pool"] = claim_dir
    cluster.core.create_namespaced_persistent_volume_claim(NAMESPACE, {
        "metadata": {"name": "team-pool"}, "spec": {"accessModes": ["ReadWriteMany"],
                                                    "resources": {"requests": {"storage": "1Gi"}}}})
    project = tmp_path / "project"
    project.mkdir()
    (project / "write.py").write_text("import os\nopen(os.path.join(os.environ['EXPERIMENT_DIR'], 'reports', "
                                      "'out.txt'), 'w').write('on the claim')\nprint('wrote', flush=True)\n")
    out = subprocess.run([sys.executable, "-m", "launcher", "--backend", "k8s", "--image", IMAGE, "--datapool",
                          "pvc://team-pool/pools/a", "write.py"], cwd=project, env=k8s.env, capture_output=True,
                         text=True, timeout=150)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "wrote" in out.stdout
    assert (claim_dir / "pools/a/experiments/default/reports/out.txt").read_text() == "on the claim"
    job_id = last_job(k8s)
    assert k8s("status", job_id, run_flags=False).stdout.startswith("succeeded")


def test_down_and_sweeper_act_on_the_cluster_the_job_was_started_on(k8s, cluster, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "sleep.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    job_id = k8s("--detach", "--grace-period", "2s", "sleep.py", cwd=project).stdout.strip()
    # A leak no registry knows: a Job with our label, past its deadline (another laptop's, say).
    cluster.batch.create_namespaced_job(NAMESPACE, {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "leaked-abc123", "labels": {"launcher/job": "leaked-abc123"},
                     "annotations": {"launcher/deadline": str(int(time.time()) - 60)}},
        "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never",
                                                        "containers": [{"name": "agent", "image": IMAGE}]}}}})
    # The current context now points at another cluster: the job's own context is still the one acted on.
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["clusters"].append({"name": "other", "cluster": {"server": "http://127.0.0.1:9"}})
    config["contexts"].append({"name": "other", "context": {"cluster": "other", "user": "tester"}})
    config["current-context"] = "other"
    other = tmp_path / "kubeconfig"
    other.write_text(yaml.safe_dump(config))
    env = {**k8s.env, "KUBECONFIG": str(other)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=project, env=env, capture_output=True,
                              text=True, timeout=120)

    down = cli("down", job_id)
    assert down.returncode == 0 and down.stdout.strip() == f"{job_id}: cancelled", down.stdout + down.stderr
    assert cluster.wait_gone(job_id) == []
    swept = subprocess.run([sys.executable, "-m", "launcher", "down", "--expired", "--backend", "k8s"], cwd=project,
                           env=k8s.env, capture_output=True, text=True, timeout=120)
    assert swept.returncode == 0, swept.stderr
    assert "leaked-abc123 (kmock/ml)" in swept.stdout
    assert [j["metadata"]["name"] for j in cluster.objects("Job") if j["metadata"]["name"] == "leaked-abc123"] == []


def test_a_hung_pod_past_its_active_deadline_is_a_timeout(k8s, cluster, nodes, tmp_path):
    """The agent stops the script well before activeDeadlineSeconds, so the Job's own deadline fires only when the
    node hangs: then the Job's DeadlineExceeded condition is what says timeout (there is no result)."""
    import os
    import signal

    project = tmp_path / "project"
    project.mkdir()
    (project / "sleep.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    job_id = k8s("--detach", "--grace-period", "2s", "sleep.py", cwd=project).stdout.strip()

    def mine():
        return [j for j in cluster.objects("Job") if (j["metadata"].get("labels") or {}).get("launcher/job") == job_id]

    end = time.time() + 60
    while time.time() < end and not [r for j in mine() for r in list(nodes.pods.values())
                                     if r.job_uid == j["metadata"]["uid"] and r.stage == "running"]:
        time.sleep(0.3)
    job = mine()[0]
    runs = [r for r in list(nodes.pods.values()) if r.job_uid == job["metadata"]["uid"]]
    assert runs and runs[0].proc is not None
    os.killpg(runs[0].proc.pid, signal.SIGSTOP)  # the node hangs: no agent, no result.json, ever
    cluster.batch.patch_namespaced_job(job["metadata"]["name"], NAMESPACE, {"spec": {"activeDeadlineSeconds": 1}})
    end = time.time() + 60
    while time.time() < end:
        out = k8s("status", job_id, run_flags=False, cwd=project)
        if not out.stdout.startswith(("running", "pending")):
            break
        time.sleep(1)
    assert out.stdout.startswith("timeout"), out.stdout + out.stderr
    assert "DeadlineExceeded" in out.stdout


def test_what_start_creates_is_the_rendered_request_filled(k8s, cluster, nodes, moto, project, monkeypatch):
    """One render: the objects in the cluster are `plan.request`'s manifests (what --dry-run prints) with the slots
    start filled (context, namespace, the Job's uid, presigned URLs, the secrets' values); nothing rendered again."""
    from launcher import api
    from launcher.backends.k8s import backend, request
    from launcher.backends.k8s.kube import Kube
    from launcher.backends.slots import fill
    from launcher.job import Job

    for key in ("LAUNCHER_HOME", "KUBECONFIG", *MOTO_ENV):
        monkeypatch.setenv(key, k8s.env[key])
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    fills = []
    monkeypatch.setattr(backend, "fill", lambda req, values: fills.append(values) or fill(req, values))
    (project / "hi.py").write_text("print('hi')\n")
    run = api.launch(Job(script="hi.py", workdir=str(project), backend="k8s", datapool=k8s.store,
                         endpoint_url=moto.endpoint, secrets=["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
                         k8s={"image": IMAGE, "ttl_after_finished": "10m"}), detach=True)
    values = fills[-1]  # the Job first (its own slots), then the whole request with the Job's uid
    assert set(values) == {"context", "namespace", "job_uid", "snapshot_url", "result_url",
                           "secret_aws_access_key_id", "secret_aws_secret_access_key"}
    sent = fill({**run.plan.request, "manifests": request.documents(run.plan.request)}, values)
    assert (sent["context"], sent["namespace"]) == ("kmock", NAMESPACE)
    kube = Kube("kmock")
    for doc in sent["manifests"]:
        got = kube._get(doc["kind"], NAMESPACE, doc["metadata"]["name"])
        for key in ("uid", "creationTimestamp", "resourceVersion"):
            got["metadata"].pop(key)
        got.pop("status", None)
        if doc["kind"] == "Job":  # created suspended, then resumed: the one change after create
            assert (doc["spec"].pop("suspend"), got["spec"].pop("suspend")) == (True, False)
        assert got == doc
    assert wait_for(lambda: api.status(run.job_id)[0] == "succeeded", timeout=90)
