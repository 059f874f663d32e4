"""The slurm backend's pure parts, without a cluster: Slurm's records read, pending reasons sorted into "wait" and
"never", the request rendered from the job (gres, memory, time, tags), and bad options refused in one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from launcher.backends.slurm import reasons, script
from launcher.job import Job
from launcher.planner import make_plan

SCONTROL_JOB = ("JobId=42 JobName=train-1a2b3c UserId=alice(1000) GroupId=alice(1000) MCS_label=N/A "
                "Priority=4294901758 Nice=0 Account=(null) QOS=(null) JobState=PENDING "
                "Reason=ReqNodeNotAvail,_UnavailableNodes:n1 Dependency=(null) Requeue=0 Restarts=0 BatchFlag=1 "
                "SubmitTime=2026-12-07T13:04:55 EligibleTime=2026-12-07T13:04:56 "
                "Comment=launcher:job=train-1a2b3c,deadline=1796735875 Command=/home/alice/my jobs/batch.sh "
                "WorkDir=/home/alice")


def test_a_record_keeps_values_with_spaces_and_commas():
    rec = reasons.parse_record(SCONTROL_JOB)
    assert rec["JobState"] == "PENDING" and rec["Restarts"] == "0"
    assert rec["Command"] == "/home/alice/my jobs/batch.sh"
    assert script.parse_comment(rec["Comment"]) == ("train-1a2b3c", 1796735875.0)
    assert reasons.reason_name(rec["Reason"]) == "ReqNodeNotAvail"
    assert reasons.parse_time(rec["SubmitTime"]).minute == 4 and reasons.parse_time("Unknown") is None


@pytest.mark.parametrize("text, minutes", [("UNLIMITED", None), ("INFINITE", None), ("00:10:00", 10), ("10", 10),
                                           ("1-02:03:04", 1564), ("05:30", 6)])
def test_time_limits_in_whole_minutes(text, minutes):
    assert reasons.minutes(text) == minutes


@pytest.mark.parametrize("reason", ["PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidAccount",
                                    "InvalidQOS", "AccountNotAllowed", "QOSMaxGRESPerJob", "AssocMaxNodesPerJobLimit",
                                    "QOSMaxWallDurationPerJobLimit", "DependencyNeverSatisfied"])
def test_reasons_no_waiting_fixes(reason):
    assert reasons.permanent(reason, pended_s=0) is not None


@pytest.mark.parametrize("reason", ["Resources", "Priority", "ReqNodeNotAvail,_UnavailableNodes:n1", "Dependency",
                                    "BeginTime", "AssocGrpGRES", "QOSGrpCpuLimit", "PartitionDown", "JobHeldUser",
                                    "None"])
def test_reasons_that_wait(reason):
    assert reasons.permanent(reason, pended_s=3600) is None


def test_partition_config_counts_only_once_it_settles():
    # Slurm says PartitionConfig for a moment before it names the limit (PartitionNodeLimit, PartitionTimeLimit).
    assert reasons.permanent("PartitionConfig", pended_s=2) is None
    assert reasons.permanent("PartitionConfig", pended_s=60) is not None


def test_a_per_user_limit_is_permanent_only_for_a_job_alone_over_it():
    assert reasons.permanent("QOSMaxGRESPerUser", pended_s=0, alone=True) is not None
    assert reasons.permanent("QOSMaxGRESPerUser", pended_s=0, alone=False) is None
    assert reasons.is_quota("QOSMaxGRESPerUser") and reasons.is_quota("AssocGrpGRES")
    assert not reasons.is_quota("Resources")


def test_partitions_and_config():
    text = ("PartitionName=debug Default=YES MaxTime=UNLIMITED Nodes=n[1-2]\n"
            "PartitionName=short Default=NO MaxTime=00:10:00 Nodes=n[1-2]\n")
    parts = reasons.partition_limits(text)
    assert parts[""]["PartitionName"] == "debug" and reasons.minutes(parts["short"]["MaxTime"]) == 10
    config = "KillWait                = 30 sec\nMinJobAge               = 300 sec\n"
    assert reasons.seconds(reasons.config_value(config, "KillWait")) == 30


@pytest.fixture
def plan_of(tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('hi')\n")

    def make(**fields):
        fields.setdefault("datapool", "s3://bucket/pool")
        return make_plan(Job(script="train.py", backend="slurm", workdir=str(project), **fields))

    return make


def test_gpus_become_gres_of_the_clusters_type(plan_of):
    assert script.gres(plan_of(gpu="A100-80GB:4")) == "gpu:a100:4"
    assert script.gres(plan_of(gpu="H100:8")) == "gpu:h100:8"
    assert script.gres(plan_of(gpu="2")) == "gpu:2"  # a count alone: whatever type the nodes have
    assert script.gres(plan_of(gpu="A100-80GB:2", slurm={"gres_types": {"A100-80GB": "a100_80g"},
                                                         "gres": "nvme:1"})) == "gpu:a100_80g:2,nvme:1"
    assert script.gres(plan_of()) is None


def test_the_sbatch_argv(plan_of):
    plan = plan_of(cpus=3.5, memory="1500Mi", num_nodes=2, max_runtime="2h", grace_period="30s",
                   slurm={"partition": "gpu", "account": "ml", "qos": "high", "constraint": "a100&ib"})
    argv = plan.request["sbatch"]
    assert argv[:2] == ["sbatch", "--parsable"] and argv[-1] == f"jobs/{plan.job_id}/batch.sh"
    # 2 h + 30 s grace + 300 s push reserve (--push-timeout) + 60 s dead-man margin, in whole minutes
    for arg in ("--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=4", "--mem=1500M", "--time=127",
                "--partition=gpu", "--account=ml", "--qos=high", "--constraint=a100&ib", "--no-requeue",
                "--export=NONE"):
        assert arg in argv, (arg, argv)
    assert f"--comment=launcher:job={plan.job_id},deadline={int(plan.deadline_at)}" in argv
    assert "--requeue" in plan_of(max_restarts=2).request["sbatch"]


def test_the_batch_script_never_holds_a_secret(plan_of, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf-very-secret")
    plan = plan_of(secrets=["HF_TOKEN"])
    text = plan.to_yaml()
    assert "hf-very-secret" not in text
    upload = [u for u in plan.request["upload"] if u["path"].endswith("secrets.env")]
    assert upload == [{"path": f"~/.launcher-node/jobs/{plan.job_id}/secrets.env", "mode": "0600",
                       "holds": ["HF_TOKEN"]}]


def launch(tmp_path, *args):
    (tmp_path / "train.py").write_text("print('hi')\n")
    env = {"LAUNCHER_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "launcher", "--backend", "slurm", "--dry-run", *args, "train.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, says", [
    (["--partition", "gpu; rm -rf /"], "bad partition"),
    (["--gres", "gpu::2"], "bad gres"),
    (["--constraint", "a100 ib"], "bad constraint"),
    (["--host", "alice@@login"], "bad ssh target"),
    (["--datapool", "s3://b/p", "--gpu", "A100:2", "--gres", "gpu:a100:2"], "GPUs twice"),
    (["--datapool", "file:///scratch/pool", "--host", "login.cluster"], "cannot read the cluster's disk"),
])
def test_bad_options_are_one_line(tmp_path, args, says):
    out = launch(tmp_path, *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and says in out.stderr, out.stderr
