"""The manifests of three typical k8s jobs, kept in tests/backends/golden/k8s/ and reviewed in diffs: one CPU pod on
an s3 datapool, 2 x H100:8 under torchrun with a Secret from the environment, one GPU pod on a pvc datapool with an
existing Secret on GKE, as sent: their slots (what only `start` knows) filled with the fixed values of
tests/backends/test_golden.py. Each must also pass kubernetes-validate (strict) and the semantic checks.

Regenerate after an intended change:  UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/k8s/test_k8s_golden.py
The node bootstrap inside the ConfigMap is launcher/node/bootstrap.py's (its own golden is tests/backends/golden/*.yaml):
here it is a placeholder, so a bootstrap change does not rewrite these files.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from launcher.backends.k8s import request
from launcher.backends.slots import fill
from launcher.job import Job
from launcher.planner import make_plan

from ..backends.test_golden import fixed_values
from .manifests import VERSIONS, semantic_problems, validate

GOLDEN = Path(__file__).resolve().parents[1] / "backends" / "golden" / "k8s"
IMAGE = "ghcr.io/team/node:0123456789ab"
JOBS = {
    "cpu-s3": dict(cpus=4, memory="16Gi", datapool="s3://team-bucket/pool", max_runtime="2h"),
    "multinode-h100": dict(gpu="H100:8", num_nodes=2, cpus=96, memory="1800Gi", disk="500Gi", secrets=["HF_TOKEN"],
                           datapool="s3://team-bucket/pool", max_runtime="12h", grace_period="2m",
                           k8s={"namespace": "ml", "image": IMAGE, "ttl_after_finished": "6h"}),
    "gke-pvc": dict(gpu="L4", datapool="pvc://team-pool/pools/a", secrets=["HF_TOKEN"], max_runtime="1h",
                    k8s={"namespace": "ml", "image": IMAGE, "gpu_label_key": "cloud.google.com/gke-accelerator",
                         "secret_name": "team-secrets", "service_account": "trainer"}),
}


def render(name: str, project: Path) -> tuple[str, list[dict]]:
    (project / "train.py").write_text("print('hi')\n")
    fields = {"k8s": {"image": IMAGE}, **JOBS[name]}
    plan = make_plan(Job(script="train.py", args=["--config", "c.yaml"], backend="k8s", workdir=str(project),
                         experiment="golden", **fields))
    rendered = request.documents(plan.request)
    real = fill(rendered, fixed_values(rendered))
    docs = copy.deepcopy(real)
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            doc["data"]["bootstrap.sh"] = "<launcher/node/bootstrap.py, rendered from the AgentSpec>"
            doc["data"]["spec.json"] = "<the plan's agent_spec, as JSON>"
    text = request.to_yaml(docs)
    subs = {plan.job_id: "JOB-ID", plan.snapshot.sha256: "SNAPSHOT-SHA",
            str(int(plan.spec.deadline_at)): "DEADLINE-EPOCH"}
    for old, new in sorted(subs.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(old, new)
    return text, real


@pytest.mark.parametrize("name", sorted(JOBS))
def test_manifests_match_golden_and_validate(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    project = tmp_path / "project"
    project.mkdir()
    text, docs = render(name, project)
    assert validate(docs, VERSIONS[0]) == [] and validate(docs, VERSIONS[-1]) == []
    assert semantic_problems(docs) == []
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} manifests changed; if intended: UPDATE_GOLDEN=1 and review the diff"
