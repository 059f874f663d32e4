"""The slurm backend against the real two-node test cluster, through the real `launch` CLI: torchrun across both
nodes, GPUs through gres, a request the cluster can never run, a requeue that resumes from the pushed checkpoints,
the plan offline, a time limit over the partition's, and once through a login node over SSH."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from launcher.registry import Registry

from ..motoserver import MOTO_ENV, start_moto
from ..resumable import STEPS
from ..sshd import start_sshd
from ..waiting import wait_for
from .target import slurm_profile, slurm_target

pytestmark = pytest.mark.xdist_group("slurm")

PRINT_ENV = """
import os, sys
print(f"hello rank={os.environ.get('NODE_RANK', '-')} gpus={os.environ.get('CUDA_VISIBLE_DEVICES', '-')} "
      f"attempt={os.environ['LAUNCH_ATTEMPT']}", flush=True)
sys.exit(int(os.environ.get("EXIT_WITH", "0")))
"""

ALL_REDUCE = """
import os
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
print(f"rank {dist.get_rank()} of {dist.get_world_size()} on node {os.environ['NODE_RANK']}: sum {t.item():g}",
      flush=True)
dist.destroy_process_group()
"""


@pytest.fixture
def target(tmp_path, slurm_cluster):
    return slurm_target(tmp_path, slurm_cluster)


def last_job(target):
    rec = Registry(Path(target.env["LAUNCHER_HOME"])).list()[0]
    return rec.id, rec.handle.get("slurm_job")


def reports(tmp_path: Path, job_id: str) -> Path:
    return tmp_path / "store" / "experiments" / "default" / "reports" / "jobs" / job_id


def test_two_nodes_all_reduce_under_srun_and_torchrun(target, tmp_path):
    (target.project / "all_reduce.py").write_text(ALL_REDUCE)
    out = target.launch("--num-nodes", "2", "all_reduce.py", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rank 0 of 2 on node 0: sum 3" in out.stdout, out.stdout  # rank 0's log is the job's log
    job_id, _ = last_job(target)
    # The other node's agent pushed only its own log, beside rank 0's; only rank 0 wrote the result.
    assert "rank 1 of 2 on node 1: sum 3" in (reports(tmp_path, job_id) / "log-rank1.txt").read_text()
    assert json.loads((reports(tmp_path, job_id) / "result.json").read_text())["exit_code"] == 0
    # Each node had its own folder on the shared filesystem.
    assert (tmp_path / "node" / "nodes" / "0" / "jobs" / job_id / "spec.json").exists()
    assert (tmp_path / "node" / "nodes" / "1" / "jobs" / job_id / "spec.json").exists()


def test_gpus_come_through_gres(target, slurm_cluster):
    (target.project / "env.py").write_text(PRINT_ENV)
    out = target.launch("--gpu", f"A100:{slurm_cluster.gpus_per_node}", "env.py")
    assert out.returncode == 0, out.stderr
    assert "hello rank=- gpus=0,1 attempt=1" in out.stdout


def test_a_request_the_cluster_can_never_run_exits_2_with_its_reason(target, slurm_cluster):
    (target.project / "env.py").write_text(PRINT_ENV)
    out = target.launch("--num-nodes", "3", "env.py", timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out.stderr
    # Slurm takes such a job and says why it pends (then it is cancelled at once), or, with a node down or
    # drained at that moment, refuses it at submit: either way its own words, in one line.
    assert any(why in lines[0] for why in ("PartitionNodeLimit", "PartitionConfig", "Requested node configuration",
                                           "Node count specification")), lines[0]
    job_id, slurm_id = last_job(target)
    assert wait_for(lambda: slurm_cluster.job_ids() == [], timeout=30)  # cancelled, not left pending
    status = target.cli("status", job_id).stdout
    assert status.startswith("failed"), status
    if "cannot start" in lines[0]:
        assert lines[0].endswith("; cancelled") and "cannot start" in status, status


def test_waiting_for_nodes_longer_than_the_pending_timeout_exits_75(target, slurm_cluster):
    (target.project / "env.py").write_text(PRINT_ENV)
    blocker = slurm_cluster.run("sbatch", "--parsable", f"--nodes={len(slurm_cluster.nodes)}", "--exclusive",
                                "--wrap", "sleep 300")
    assert blocker.returncode == 0, blocker.stderr
    blocker_id = blocker.stdout.strip().split(";")[0]
    assert wait_for(lambda: slurm_cluster.run("squeue", "-h", "-j", blocker_id, "-o", "%T").stdout.strip()
                    == "RUNNING", timeout=30)
    out = target.launch("--pending-timeout", "5s", "env.py", timeout=120)
    assert out.returncode == 75, out.stdout + out.stderr  # capacity short: try later or elsewhere
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "still pending after" in errors[0] and "--pending-timeout 5s" in errors[0], out.stderr
    assert "Resources" in errors[0] or "Priority" in errors[0], errors[0]
    assert wait_for(lambda: slurm_cluster.job_ids() == [blocker_id], timeout=30)  # ours is cancelled, not left


def test_a_requeued_job_resumes_from_its_pushed_checkpoints(target, slurm_cluster, tmp_path):
    (target.project / "steps.py").write_text(STEPS)
    out = target.launch("--detach", "--max-restarts", "1", "steps.py")
    assert out.returncode == 0, out.stderr
    job_id, slurm_id = last_job(target)
    store_ckpts = tmp_path / "store" / "experiments" / "default" / "model" / "steps_checkpoints"
    assert wait_for(lambda: len(list(store_ckpts.glob("step-*.txt"))) >= 3, timeout=90), "nothing pushed"
    assert slurm_cluster.run("scontrol", "requeue", slurm_id).returncode == 0
    # Slurm holds a requeued job ~2 min (BeginTime) once its processes are gone: an admin's StartTime skips most of it.
    assert wait_for(lambda: slurm_cluster.run("squeue", "-h", "-j", slurm_id, "-o", "%T").stdout.strip()
                    == "PENDING", timeout=60)
    assert target.cli("status", job_id).stdout.startswith("pending")  # the attempt's record is not the job's end
    # The node's own copy goes: only the store can give the checkpoints back.
    for datapool in (tmp_path / "node" / "nodes").glob("*/datapool"):
        for p in sorted(datapool.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
    # Not `now`: slurmd refuses a launch whose credential is from the same second as the revocation of the last
    # one (the hold exists for that); two seconds on is what an admin's shortcut needs.
    assert slurm_cluster.run("scontrol", "update", f"JobId={slurm_id}", "StartTime=now+2").returncode == 0
    assert wait_for(lambda: target.cli("status", job_id).stdout.startswith("succeeded"), timeout=120), \
        target.cli("status", job_id).stdout
    folder = reports(tmp_path, job_id)
    assert json.loads((folder / "result.attempt-1.json").read_text())["reason"] == "preempted"
    assert json.loads((folder / "result.json").read_text())["reason"] == "exited"
    log = (folder / "log.txt").read_text()
    assert "attempt 1 starts at step 0" in log
    assert int(log.split("attempt 2 starts at step ")[1].split()[0]) >= 3, log
    assert log.index("attempt 1 starts") < log.index("attempt 2 starts") < log.index("all steps done")


def test_dry_run_prints_the_batch_script_and_sbatch_argv_offline(target, slurm_cluster, tmp_path):
    (target.project / "env.py").write_text(PRINT_ENV)
    # No cluster to reach: the plan is rendered from the job alone.
    env = {"SLURM_CONF": str(tmp_path / "no-such-slurm.conf")}
    out = target.cli(*target.run_flags, "--dry-run", "--full", "--num-nodes", "2", "--gpu", "A100-80GB:2", "--cpus", "2",
                     "--memory", "1Gi", "--partition", "debug", "--max-restarts", "1", "--max-runtime", "1h",
                     "env.py", env=env)
    assert out.returncode == 0, out.stderr
    plan = yaml.safe_load(out.stdout)
    request = plan["request"]
    job_id = plan["job_id"]
    assert request["submit"] == "sbatch on this machine"
    assert request["sbatch"] == [
        "sbatch", "--parsable", f"--job-name={job_id}",
        f"--comment=launcher:job={job_id},deadline={int(plan['deadline_at'])}",
        f"--output=jobs/{job_id}/slurm-%j.out", "--open-mode=append", "--export=NONE", "--nodes=2",
        "--ntasks-per-node=1", "--time=67", "--cpus-per-task=2", "--mem=1024M", "--gres=gpu:a100:2",
        "--partition=debug", "--requeue", f"jobs/{job_id}/batch.sh"]
    batch = request["batch_script"]
    assert "srun --export=ALL --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=2" in batch
    assert "NPROC_PER_NODE=2 WORLD_SIZE=4" in batch and "MAX_RESTARTS=1" in batch
    assert "trap '' TERM" in request["node_script"] and "launcher.node.agent" in request["bootstrap"]
    # Nothing was submitted, nothing placed.
    assert slurm_cluster.job_ids() == []
    assert list((tmp_path / "node").iterdir()) == []


def test_a_time_limit_over_the_partitions_max_time_is_one_line_and_nothing_is_submitted(target, slurm_cluster,
                                                                                        tmp_path):
    (target.project / "env.py").write_text(PRINT_ENV)
    out = target.launch("--partition", slurm_cluster.short_partition, "--max-runtime", "1h", "env.py")
    assert out.returncode == 2, out.stdout + out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out.stderr
    assert f"above partition {slurm_cluster.short_partition}'s MaxTime of {slurm_cluster.max_time_short // 60} min" \
        in errors[0] and "--max-runtime" in errors[0], errors[0]
    assert slurm_cluster.job_ids() == []
    assert not (tmp_path / "node" / "jobs").exists()
    # What fits is accepted.
    out = target.launch("--partition", slurm_cluster.short_partition, "--max-runtime", "2m", "env.py")
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def login_node(tmp_path_factory):
    """This machine as the cluster's login node: a private sshd; an s3 store on moto (a laptop that submits over SSH
    cannot read the cluster's disk, so no file:// datapool)."""
    sshd = start_sshd(tmp_path_factory.mktemp("sshd"))
    moto = start_moto(tmp_path_factory.mktemp("moto"))
    moto.client().create_bucket(Bucket="slurm")
    yield sshd, moto
    moto.stop()
    sshd.stop()


def test_through_a_login_node_over_ssh(login_node, slurm_cluster, tmp_path):
    from ..backends.conftest import base_env

    sshd, moto = login_node
    project = tmp_path / "project"
    project.mkdir()
    (project / "env.py").write_text(PRINT_ENV)
    # The login shell has no SLURM_CONF of this test cluster: the profile gives it to the Slurm commands there.
    profile = slurm_profile(tmp_path, host=sshd.target, identity=str(sshd.identity), known_hosts=str(sshd.known_hosts),
                            slurm_env=slurm_cluster.env)
    env = {**{k: v for k, v in base_env(tmp_path).items() if not k.startswith("SLURM_")}, **MOTO_ENV}
    flags = ["--profile", str(profile), "--datapool", f"s3://slurm/{tmp_path.name}", "--endpoint-url",
             moto.endpoint, "--secret", "AWS_ACCESS_KEY_ID", "--secret", "AWS_SECRET_ACCESS_KEY",
             "--push-interval", "1s"]
    import subprocess

    out = subprocess.run([sys.executable, "-m", "launcher", *flags, "--env", "EXIT_WITH=3", "env.py"], cwd=project,
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "hello rank=- gpus=- attempt=1" in out.stdout
    assert "Accepted publickey for root" in sshd.log_tail(200)  # submitted there, not here (`host` wins)
    # The secrets file went with the job, read once and deleted (no restarts to keep it for).
    job_id = Registry(tmp_path / "home").list()[0].id
    assert not (tmp_path / "node" / "jobs" / job_id / "secrets.env").exists()
    assert (tmp_path / "node" / "jobs" / job_id / "batch.sh").exists()
    # A file:// datapool cannot be reached from this side of the SSH connection: one line, exit 2.
    bad = subprocess.run([sys.executable, "-m", "launcher", "--profile", str(profile), "--datapool",
                          (tmp_path / "pool").as_uri(), "env.py"], cwd=project, env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "cannot read the cluster's disk" in bad.stderr, bad.stderr


def test_the_sweeper_asks_the_cluster_for_tagged_jobs_past_their_deadline(target, slurm_cluster):
    """`launch down --expired --backend slurm` finds jobs no registry here knows (another laptop's), by their tag."""
    def sbatch(*args: str) -> str:
        r = slurm_cluster.run("sbatch", "--parsable", "--output=/dev/null", *args, "--wrap", "sleep 300")
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().split(";")[0]

    expired = sbatch("--job-name=other-1a2b3c", "--comment=launcher:job=other-1a2b3c,deadline=1000")
    fresh = sbatch("--job-name=other-4d5e6f", "--comment=launcher:job=other-4d5e6f,deadline=4102444800")
    untagged = sbatch("--job-name=someone-elses")
    listed = target.cli("down", "--expired", "--backend", "slurm", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip().startswith(f"other-1a2b3c (Slurm job {expired}, "), listed.stdout
    assert sorted(slurm_cluster.job_ids()) == sorted([expired, fresh, untagged])  # a dry run ends nothing
    swept = target.cli("down", "--expired", "--backend", "slurm")
    assert swept.returncode == 0 and f"other-1a2b3c (Slurm job {expired}, " in swept.stdout, swept.stderr
    assert wait_for(lambda: sorted(slurm_cluster.job_ids()) == sorted([fresh, untagged]), timeout=30)
