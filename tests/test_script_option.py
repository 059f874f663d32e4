"""`launch --script PATH ...` (the Abstract Runners seed's spelling) is the positional SCRIPT: like it, it ends
launch's own options, and what follows is the script's."""
from __future__ import annotations

import json

ARGS = "import sys\nprint('ARGS', sys.argv[1:], flush=True)\n"


def test_script_option_is_the_positional_script(launch, project):
    (project / "show.py").write_text(ARGS)
    r = launch("--max-runtime", "1h", "--script", "show.py", "--lr", "3", "-d", "--script", "x")
    assert r.returncode == 0, r.stderr
    assert "ARGS ['--lr', '3', '-d', '--script', 'x']" in r.stdout  # -d and --script after it are the script's
    r = launch("--script=show.py", "--detach")
    assert r.returncode == 0 and "ARGS ['--detach']" in r.stdout, r.stderr


def test_the_seeds_cloud_line_plans_with_script(launch, project):
    (project / "train.py").write_text(ARGS)
    r = launch("--backend", "ec2", "--gpu", "A10G", "--spot", "--datapool", "s3://my-bucket/pool", "--dry-run",
               "-o", "json", "--script", "train.py", "--epochs", "3", "--output", "out/")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["job"]
    assert job["script"] == "train.py" and job["args"] == ["--epochs", "3", "--output", "out/"]
