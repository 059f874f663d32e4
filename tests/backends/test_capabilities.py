"""A Job field a backend cannot honour is refused at plan time (exit 2) or named in the plan's notes and printed at
launch: never silently ignored."""
from __future__ import annotations

import yaml

HELLO = "print('hello')\n"


def test_local_names_what_it_does_not_enforce(launch, project):
    (project / "hello.py").write_text(HELLO)
    out = launch("--cpus", "64", "--memory", "512Gi", "--gpu", "H100:8", "--terminate-after", "hello.py")
    assert out.returncode == 0, out.stderr
    # Warnings (what the backend does not check or enforce) first, then notes.
    notes = [line for line in out.stderr.splitlines() if line.startswith(("[launcher] warning:", "[launcher] note:"))]
    assert len(notes) == 3, out.stderr
    assert "--cpus 64.0, --memory 512Gi" in notes[1] and "H100:8" in notes[0] and "--terminate-after" in notes[2]
    plan = yaml.safe_load(launch("--dry-run", "-o", "yaml", "--cpus", "64", "hello.py").stdout)
    assert any("--cpus 64.0" in n for n in plan["warnings"])


def test_what_a_backend_cannot_do_is_refused(launch, project):
    (project / "hello.py").write_text(HELLO)
    cases = [
        (["--spot"], "--spot needs a backend with spot capacity (ec2, k8s, modal)"),
        (["--backend", "ssh", "--host", "gpu-box", "--spot", "--datapool", "s3://b/p"], "--backend ssh has none; drop --spot"),
    ]
    for args, words in cases:
        out = launch(*args, "hello.py")
        assert out.returncode == 2 and words in out.stderr and out.stderr.count("\n") == 1, out.stderr
    out = launch("--backend", "ssh", "hello.py")
    assert out.returncode == 2 and "--host" in out.stderr
    out = launch("--host", "gpu-box", "hello.py")
    assert out.returncode == 2 and "--backend ssh" in out.stderr
    assert launch("jobs").stdout.startswith("no jobs yet")


def test_remote_jobs_get_a_default_max_runtime(launch, project):
    (project / "hello.py").write_text(HELLO)
    plan = yaml.safe_load(launch("--dry-run", "--full", "--backend", "ssh", "--host", "gpu-box", "--datapool", "s3://b/p",
                                 "hello.py").stdout)
    assert plan["job"]["max_runtime"] == 24 * 3600
    assert any("max runtime 24h00m" in n for n in plan["notes"])
    assert plan["snapshot"]["sha256"] and plan["snapshot"]["size"] > 0
    local = yaml.safe_load(launch("--dry-run", "--full", "hello.py").stdout)
    assert local["job"]["max_runtime"] is None and local["deadline_at"] is None
