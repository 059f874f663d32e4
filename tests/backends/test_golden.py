"""Each backend's request as sent, kept as a golden file and reviewed in diffs: the plan (`--dry-run` prints it) with
its request's slots (what only `start` knows: launcher/backends/slots.py) filled with fixed values, as `start` fills
them, so the file holds the request that is sent, not a second rendering of it.

Regenerate after an intended change:  UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/backends/test_golden.py
Volatile values (job id, times, this machine's paths, the snapshot's hash) are replaced by placeholders.
"""
from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

import pytest
import yaml

from launcher.backends.slots import fill, slot, slots_in
from launcher.job import Job
from launcher.planner import make_plan

GOLDEN = Path(__file__).parent / "golden"

JOBS = {
    "local": dict(backend="local", max_runtime="2h", env={"WANDB_MODE": "offline"}, secrets=["HF_TOKEN"],
                  experiment="golden", gpu="A10G", cpus=8),
    "ssh": dict(backend="ssh", max_runtime="6h", env={"WANDB_MODE": "offline"}, secrets=["HF_TOKEN"],
                experiment="golden", gpu="H100:8", datapool="s3://team-bucket/pool",
                ssh={"host": "ubuntu@gpu-box:2222", "identity": "~/.ssh/gpu-box.pem"}),
    "ec2": dict(backend="ec2", max_runtime="6h", env={"WANDB_MODE": "offline"}, experiment="golden", gpu="A10G",
                spot=True, disk="200Gi", datapool="s3://team-bucket/pool", ec2={"region": "us-east-1"}),
    "modal": dict(backend="modal", max_runtime="6h", env={"WANDB_MODE": "offline"}, secrets=["HF_TOKEN"],
                  experiment="golden", gpu="A100", cpus=8, memory="32Gi", disk="100Gi", spot=True, max_restarts=1,
                  datapool="modal-volume://team-pool/pool", modal={"secrets": ["huggingface"]}),
    "k8s": dict(backend="k8s", max_runtime="6h", env={"WANDB_MODE": "offline"}, secrets=["HF_TOKEN"],
                experiment="golden", gpu="H100:8", num_nodes=2, cpus=16, memory="128Gi", disk="200Gi",
                datapool="s3://team-bucket/pool",
                k8s={"context": "gpu-cluster", "namespace": "ml", "image": "ghcr.io/team/node:0123456789ab"}),
    "slurm": dict(backend="slurm", max_runtime="6h", env={"WANDB_MODE": "offline"}, secrets=["HF_TOKEN"],
                  experiment="golden", gpu="A100-80GB:4", num_nodes=2, cpus=16, memory="128Gi", max_restarts=1,
                  datapool="s3://team-bucket/pool",
                  slurm={"host": "alice@login.cluster", "partition": "gpu", "account": "ml",
                         "gres_types": {"A100-80GB": "a100"}}),
}


# A slot's value in the golden files: SLOT-<NAME>, or a value of the type it has where that is no string.
FIXED = {"timeout": 21990}  # modal: seconds, from submit to the node's dead-man time (6 h + 30 s + 300 s + 60 s)


def fixed_values(request) -> dict:
    return {name: FIXED.get(name, "SLOT-" + name.upper().replace("_", "-")) for name in slots_in(request)}


def render(backend: str, project: Path) -> tuple[str, str, dict]:
    """The plan's text with its request filled (as sent), the same as `--dry-run` prints it (with its slots), and
    the values the slots got."""
    (project / "train.py").write_text("print('hi')\n")
    job = Job(script="train.py", args=["--config", "c.yaml"], workdir=str(project), **JOBS[backend])
    plan = make_plan(job)
    values = fixed_values(plan.request)
    dry = plan.to_yaml()
    rendered, plan.request = plan.request, fill(plan.request, values)
    sent = plan.to_yaml()
    plan.request = rendered
    subs = {plan.job_id: "JOB-ID", str(project.resolve()): "/PROJECT", sys.executable: "/PYTHON",
            os.environ["LAUNCHER_HOME"]: "/LAUNCHER_HOME"}
    if plan.snapshot:
        subs[plan.snapshot.sha256] = "SNAPSHOT-SHA"
        subs[f"size: {plan.snapshot.size}"] = "size: SNAPSHOT-BYTES"
        subs[f"files: {plan.snapshot.files}"] = "files: SNAPSHOT-FILES"
        subs[f"bytes: {plan.snapshot.size}\n"] = "bytes: SNAPSHOT-BYTES\n"
    subs[f"Value: {getpass.getuser()}\n"] = "Value: OWNER\n"  # the launcher:owner tag
    if backend == "modal":  # its owner tag; the image named by the lock's hash (the lock changes on its own)
        from launcher.images import lock_hash

        subs[f"launcher-owner: {getpass.getuser()}\n"] = "launcher-owner: OWNER\n"
        subs[f"lock_hash: {lock_hash()}\n"] = "lock_hash: LOCK-HASH\n"
    from launcher import nodesetup  # the node's venv by the lock's hash (the lock changes on its own)

    subs[nodesetup.lock_hash(project)] = "VENV-LOCK-HASH"
    subs[nodesetup.lock_hash(project, gpu=True)] = "VENV-LOCK-HASH-GPU"
    spec = plan.spec
    subs[repr(spec.deadline_at)] = "DEADLINE-AT"
    subs[str(int(spec.deadman_at))] = "DEADMAN-AT"
    subs[str(int(spec.deadline_at))] = "DEADLINE-EPOCH"  # the launcher:deadline tag
    subs[plan.to_dict()["deadline"]] = "DEADLINE-ISO"
    for old, new in sorted(subs.items(), key=lambda kv: -len(kv[0])):
        sent, dry = sent.replace(old, new), dry.replace(old, new)
    return sent, dry, values


@pytest.mark.parametrize("backend", sorted(JOBS))
def test_rendered_request_matches_golden(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATAPOOL_ROOT", raising=False)
    project = tmp_path / "project"
    project.mkdir()
    text, dry, values = render(backend, project)
    path = GOLDEN / f"{backend}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{backend} request changed; if intended: UPDATE_GOLDEN=1 and review the diff"
    # `--dry-run` prints the same request but for its slots: each one in place of its value gives the golden text.
    assert "SLOT-" not in dry and slots_in(yaml.safe_load(dry)["request"]) == set(values)
    for name, value in values.items():
        dry = dry.replace(slot(name), str(value))
    assert dry == text
