"""Checks of rendered manifests: kubernetes-validate's schema check (strict, for the versions docs/backends/k8s.md
claims) and the semantic rules it does not make. Each rule returns a problem as one line; none means good."""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

# docs/backends/k8s.md claims these: podFailurePolicy and Indexed Jobs are GA from 1.31 on.
VERSIONS = ("1.31.0", "1.37.0")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RFC1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def docs_of(plan_yaml: str) -> list[dict]:
    plan = yaml.safe_load(plan_yaml)
    return list(yaml.safe_load_all(plan["request"]["manifests"]))


def validate_cli(docs: list[dict], version: str) -> subprocess.CompletedProcess:
    """The kubernetes-validate command itself, as a user would run it on `--dry-run`'s manifests."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifests.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        exe = Path(sys.executable).parent / "kubernetes-validate"
        return subprocess.run([str(exe), "--strict", "--quiet", "-k", version, str(path)], capture_output=True,
                              text=True, timeout=120)


def validate(docs: list[dict], version: str) -> list[str]:
    import kubernetes_validate

    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    return problems


def _labels(where: str, labels: dict) -> list[str]:
    out = []
    for k, v in (labels or {}).items():
        if not LABEL_NAME.match(k) or len(k.split("/")[-1]) > 63:
            out.append(f"{where}: bad label key {k!r}")
        if len(str(v)) > 63 or not LABEL_VALUE.match(str(v)):
            out.append(f"{where}: bad label value {k}={v!r}")
    return out


def semantic_problems(docs: list[dict]) -> list[str]:
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        name = d["metadata"]["name"]
        if len(name) > 63 or not DNS_LABEL.match(name):
            problems.append(f"{d['kind']}/{name}: not a DNS-1123 label of at most 63")
        problems += _labels(f"{d['kind']}/{name}", d["metadata"].get("labels"))
    (job,) = by_kind["Job"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    jname = job["metadata"]["name"]
    problems += _labels("pod template", job["spec"]["template"]["metadata"].get("labels"))
    if pod.get("restartPolicy") != "Never":
        problems.append("pod restartPolicy is not Never")
    if spec.get("backoffLimit") != 0:
        problems.append("backoffLimit is not 0")
    if not spec.get("activeDeadlineSeconds", 0) > 0 or "ttlSecondsAfterFinished" not in spec:
        problems.append("no activeDeadlineSeconds or ttlSecondsAfterFinished")
    if not str((job["metadata"].get("annotations") or {}).get("launcher/deadline", "")).isdigit():
        problems.append("no launcher/deadline annotation (epoch seconds)")
    for c in pod["containers"]:
        res = c.get("resources") or {}
        for key in set(res.get("requests") or {}) | set(res.get("limits") or {}):
            if key == "nvidia.com/gpu" and (res.get("requests") or {}).get(key) != (res.get("limits") or {}).get(key):
                problems.append("nvidia.com/gpu requests != limits")
        for p in c.get("ports") or []:
            if len(p.get("name", "")) > 15:
                problems.append(f"port name {p['name']!r} over 15")
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and not DNS_LABEL.match(ref["name"]):
                problems.append(f"secret ref {ref['name']!r} is not a name")
    if pod.get("terminationGracePeriodSeconds", 0) <= 10:
        problems.append("terminationGracePeriodSeconds leaves the agent no grace")
    n = spec.get("completions", 1)
    if n > 1:
        if spec.get("completionMode") != "Indexed" or spec.get("parallelism") != n:
            problems.append("more than one completion without Indexed mode and parallelism == completions")
        (svc,) = by_kind.get("Service", [None]) if by_kind.get("Service") else [None]
        if svc is None or svc["spec"].get("clusterIP") != "None":
            problems.append("no headless Service for the pods' DNS names")
        elif pod.get("subdomain") != svc["metadata"]["name"] or not RFC1035_LABEL.match(svc["metadata"]["name"]):
            problems.append("pod subdomain is not the Service's name (an RFC 1035 label)")
        elif any(job["spec"]["template"]["metadata"]["labels"].get(k) != v for k, v in svc["spec"]["selector"].items()):
            problems.append("the Service does not select the Job's pods")
        if len(f"{jname}-{n - 1}") > 63:
            problems.append("pod hostnames over 63")
    for d in docs:
        if d["kind"] != "Job":
            owners = d["metadata"].get("ownerReferences") or []
            if [o["name"] for o in owners if o["kind"] == "Job"] != [jname]:
                problems.append(f"{d['kind']}/{d['metadata']['name']} is not owned by the Job")
    return problems
