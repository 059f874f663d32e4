"""The `slurm_cluster` fixture is a real two-node Slurm: jobs span both nodes, see fake GPUs, and Slurm's own
limits hold (too many nodes stays pending, too many GPUs or too long a time limit is refused or held)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ..waiting import wait_for
from .cluster import MARKER, _pids_with_env, start_cluster

pytestmark = pytest.mark.xdist_group("slurm")


def _sbatch(cluster, *args: str) -> str:
    r = cluster.run("sbatch", "--parsable", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(";")[0]


def _reason(cluster, job_id: str) -> str:
    return cluster.run("squeue", "-h", "-j", job_id, "-o", "%r").stdout.strip()


def test_srun_spans_both_nodes(slurm_cluster):
    r = slurm_cluster.run("srun", "-N2", "printenv", "SLURMD_NODENAME")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == ["n1", "n2"]


def test_batch_job_sees_two_fake_gpus(slurm_cluster, tmp_path):
    out = tmp_path / "gpu.out"
    job = _sbatch(slurm_cluster, f"--gres=gpu:{slurm_cluster.gpu_type}:2", "-o", str(out),
                  "--wrap", "echo CUDA=$CUDA_VISIBLE_DEVICES")
    assert wait_for(lambda: slurm_cluster.job(job).get("JobState") == "COMPLETED", timeout=30), slurm_cluster.job(job)
    assert out.read_text().split() == ["CUDA=0,1"]


def test_more_nodes_than_the_partition_has_stays_pending(slurm_cluster):
    job = _sbatch(slurm_cluster, "-N3", "--wrap", "true")
    assert wait_for(lambda: _reason(slurm_cluster, job) in ("PartitionConfig", "PartitionNodeLimit"), timeout=30), \
        _reason(slurm_cluster, job)
    assert slurm_cluster.job(job)["JobState"] == "PENDING"


def test_too_many_gpus_is_refused_at_submit(slurm_cluster):
    r = slurm_cluster.run("sbatch", "--parsable", f"--gres=gpu:{slurm_cluster.gpu_type}:3", "--wrap", "true")
    assert r.returncode != 0
    assert "Requested node configuration is not available" in r.stderr
    assert slurm_cluster.run("squeue", "-h").stdout == ""


def test_time_limit_over_the_short_partitions_max_time_stays_pending(slurm_cluster):
    minutes = slurm_cluster.max_time_short // 60 + 1
    job = _sbatch(slurm_cluster, "-p", slurm_cluster.short_partition, "-t", str(minutes), "--wrap", "true")
    assert wait_for(lambda: _reason(slurm_cluster, job) == "PartitionTimeLimit", timeout=30), \
        _reason(slurm_cluster, job)


def test_requeued_job_runs_again(slurm_cluster, tmp_path):
    out = tmp_path / "requeue.out"
    job = _sbatch(slurm_cluster, "-o", str(out), "--open-mode=append",
                  "--wrap", "echo run ${SLURM_RESTART_COUNT:-0}; sleep 300")
    assert wait_for(lambda: "run 0" in _text(out), timeout=30)
    assert slurm_cluster.run("scontrol", "requeue", job).returncode == 0
    assert wait_for(lambda: slurm_cluster.job(job).get("Reason") == "BeginTime", timeout=30), slurm_cluster.job(job)
    assert slurm_cluster.job(job)["Restarts"] == "1"
    # EligibleTime = requeue + requeue_delay (11 s); the scheduler's next pass starts it.
    assert wait_for(lambda: "run 1" in _text(out), timeout=slurm_cluster.requeue_delay + 30), \
        (_text(out), slurm_cluster.job(job))


def test_a_second_cluster_runs_beside_it(slurm_cluster, tmp_path):
    other = start_cluster(tmp_path / "other")
    try:
        assert other.conf != slurm_cluster.conf and other.ctld_port != slurm_cluster.ctld_port
        job = _sbatch(other, "--wrap", "sleep 300")
        assert slurm_cluster.run("squeue", "-h", "-o", "%i").stdout.split() == []
        assert other.run("squeue", "-h", "-o", "%i").stdout.split() == [job]
        r = slurm_cluster.run("srun", "-N2", "hostname")
        assert r.returncode == 0, r.stderr
    finally:
        other.stop()
    assert slurm_cluster.run("srun", "-N2", "true").returncode == 0
    # Its daemons, their slurmstepd and its job's processes are gone, found by their env (never by name).
    assert not _pids_with_env(f"{MARKER}={other.dir}".encode())
    assert not _pids_with_env(f"SLURM_CONF={other.conf}".encode())


def _text(p: Path) -> str:
    try:
        return p.read_text()
    except FileNotFoundError:
        return ""
