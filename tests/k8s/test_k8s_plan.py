"""The k8s plan, with no cluster: `--dry-run` prints manifests that kubernetes-validate accepts (strict) and that keep
the rules it does not check; each bad input is one line and exit 2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launcher.job import Job
from launcher.planner import make_plan

from .manifests import VERSIONS, docs_of, semantic_problems, validate, validate_cli

REPO = Path(__file__).resolve().parents[2]


def dry_run(launcher_env, cwd, *args, env=None):
    return subprocess.run([sys.executable, "-m", "launcher", "--dry-run", "--full", "--backend", "k8s", *args],
                          cwd=cwd,
                          env={**launcher_env, **(env or {})}, capture_output=True, text=True, timeout=120)


def plan_docs(tmp_path, **fields) -> list[dict]:
    (tmp_path / "train.py").write_text("print('hi')\n")
    job = Job(script="train.py", backend="k8s", workdir=str(tmp_path), **{"datapool": "s3://bkt/pool", **fields})
    return docs_of(make_plan(job).to_yaml())


def test_the_issues_dry_run_prints_valid_manifests(launcher_env):
    """The issue's done-when command, checked with the kubernetes-validate command itself for each claimed version."""
    out = dry_run(launcher_env, REPO, "--gpu", "H100:8", "--num-nodes", "2", "--datapool", "s3://team/pool",
                  "--secret", "HF_TOKEN", "runners/hrm_lm_run.py", "--config", "configs/hrm_lm/default.yaml",
                  "--dataset", "synthetic", env={"HF_TOKEN": "hf_value_never_printed"})
    assert out.returncode == 0, out.stderr
    assert "hf_value_never_printed" not in out.stdout + out.stderr
    docs = docs_of(out.stdout)
    assert [d["kind"] for d in docs] == ["Job", "ConfigMap", "Secret", "Service"]
    for version in VERSIONS:
        checked = validate_cli(docs, version)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert semantic_problems(docs) == []
    job = docs[0]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert env["MASTER_ADDR"] == f"{job['metadata']['name']}-0.{docs[3]['metadata']['name']}"
    assert (env["NPROC_PER_NODE"], env["WORLD_SIZE"], env["LAUNCH_NUM_NODES"]) == ("8", "16", "2")
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": docs[2]["metadata"]["name"], "key": "HF_TOKEN"}}
    # The plan's AgentSpec is what the ConfigMap carries.
    plan = yaml.safe_load(out.stdout)
    spec_json = docs[1]["data"]["spec.json"]
    assert yaml.safe_load(spec_json) == plan["agent_spec"]


@pytest.mark.parametrize("key,value", [
    ("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB"),
    ("cloud.google.com/gke-accelerator", "nvidia-a100-80gb"),
    ("karpenter.k8s.aws/instance-gpu-name", "a100"),
])
def test_gpu_node_label_per_provider(tmp_path, key, value):
    docs = plan_docs(tmp_path, gpu="A100-80GB:2", cpus=8, memory="64Gi", disk="200Gi", k8s={"gpu_label_key": key})
    pod = docs[0]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {key: value}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    res = pod["containers"][0]["resources"]
    assert res["requests"] == res["limits"] == {"cpu": "8", "memory": str(64 * 1024**3),
                                                "ephemeral-storage": str(200 * 1024**3), "nvidia.com/gpu": "2"}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert validate(docs, VERSIONS[0]) == [] and semantic_problems(docs) == []


def test_single_node_cpu_job_and_pvc_datapool(tmp_path):
    docs = plan_docs(tmp_path, datapool="pvc://team-pool/pools/a", grace_period="50s", max_runtime="1h")
    assert [d["kind"] for d in docs] == ["Job", "ConfigMap"]
    job = docs[0]
    assert "completionMode" not in job["spec"] and "subdomain" not in job["spec"]["template"]["spec"]
    pod = job["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    assert job["spec"]["activeDeadlineSeconds"] == 3600 + 50 + 300 + 60  # the dead-man switch's time
    assert {"name": "datapool", "persistentVolumeClaim": {"claimName": "team-pool"}} in pod["volumes"]
    assert {"name": "datapool", "mountPath": "/datapool", "subPath": "pools/a"} in pod["containers"][0]["volumeMounts"]
    assert "snapshot.tar.gz" in docs[1]["binaryData"]  # no store for the code: it travels in the ConfigMap
    assert validate(docs, VERSIONS[0]) == [] and semantic_problems(docs) == []


def test_semantic_checks_catch_what_the_schema_allows(tmp_path):
    docs = plan_docs(tmp_path, gpu="H100:8", num_nodes=3)
    assert semantic_problems(docs) == []
    bad = yaml.safe_load(yaml.safe_dump(docs))
    pod = bad[0]["spec"]["template"]["spec"]
    pod["restartPolicy"] = "OnFailure"
    pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "4"
    del bad[0]["spec"]["completionMode"]
    bad[1]["metadata"]["labels"]["launcher/job"] = "x" * 64
    assert validate(bad, VERSIONS[0]) == []  # the schema takes all of it
    problems = semantic_problems(bad)
    for needle in ("restartPolicy", "requests != limits", "Indexed", "bad label value"):
        assert any(needle in p for p in problems), (needle, problems)


@pytest.mark.parametrize("args,message", [
    (["--num-nodes", "65", "--datapool", "s3://bkt/p"], "--num-nodes 65: --backend k8s runs at most 64 node(s)"),
    (["--backend", "local", "--num-nodes", "2"], "--backend local runs at most 1 node(s)"),
    (["--backend", "local", "--namespace", "ml"], "--namespace applies to --backend k8s, not local"),
    (["--namespace", "ML_jobs", "--datapool", "s3://bkt/p"], "bad namespace 'ML_jobs'"),
    (["--pending-timeout", "soon", "--datapool", "s3://bkt/p"], "pending-timeout"),
    (["--datapool", "pvc:///path"], "name the claim"),
    (["--datapool", "file:///tmp/pool"], "--datapool file:// cannot be reached from --backend k8s"),
    (["--gpu", "A10G", "--datapool", "s3://bkt/p", "--profile", "gke.yaml"], "no cloud.google.com/gke-accelerator"),
])
def test_bad_input_is_one_line_and_exit_2(launcher_env, project, args, message):
    (project / "train.py").write_text("print('hi')\n")
    (project / "gke.yaml").write_text("k8s:\n  gpu_label_key: cloud.google.com/gke-accelerator\n")
    out = dry_run(launcher_env, project, *args, "train.py")
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (Path(launcher_env["LAUNCHER_HOME"]) / "jobs.db").exists()


@pytest.mark.parametrize("backend, preemptible, noted", [("k8s", True, False), ("ec2", False, True)])
def test_an_unasked_stop_is_a_preemption_where_the_platform_takes_on_demand_jobs_too(tmp_path, backend,
                                                                                        preemptible, noted):
    """k8s drains and evicts pods spot or not: without --spot, the agent still reads a SIGTERM nobody asked for as a
    preemption, and --max-restarts is no dead letter. On EC2 on-demand capacity stays; the plan says so."""
    (tmp_path / "train.py").write_text("print('hi')\n")
    job = Job(script="train.py", backend=backend, workdir=str(tmp_path), datapool="s3://bkt/pool", max_restarts=2,
              **({"gpu": "A10G"} if backend == "ec2" else {}))
    plan = make_plan(job)
    assert plan.spec.preemptible is preemptible
    assert any("without --spot" in n for n in plan.warnings) is noted, plan.warnings
