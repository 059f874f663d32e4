"""`launch --help` must not import the heavy SDKs: it is the first thing a user runs."""
import subprocess
import sys

import pytest

HEAVY = ["torch", "transformers", "boto3", "botocore", "kubernetes", "paramiko", "modal", "trl", "datasets"]

CHECK = """
import sys
from launcher.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["jobs", "--help"], ["sync", "--help"]])
def test_help_imports_no_heavy_module(argv, launcher_env):
    out = subprocess.run([sys.executable, "-c", CHECK.format(argv=argv, heavy=HEAVY)],
                         capture_output=True, text=True, env=launcher_env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout
    assert out.stdout.strip().endswith("HEAVY:"), out.stdout[-300:]


def test_import_launcher_is_light(launcher_env):
    code = f"import sys, launcher; launcher.Job; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=launcher_env, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
