"""The README's commands run as written, so the README cannot rot: every `launch` line that needs no cloud (its
bash blocks, in order, and the runners table) and its Python example.

They run from the repo root like a user who followed the setup line: a bare environment whose PATH starts with
this venv's bin (what `source .venv/bin/activate` does), a private LAUNCHER_HOME, and a private datapool
($LAUNCHER_DATAPOOL for the CLI, $DATAPOOL_ROOT for the Python API), so nothing lands in the repo.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The rules for what is not run here, each explicit:
# - needs a cloud, an account or a remote box: an s3:// store, another backend, an S3 endpoint, an ssh host
#   (and the box's host key);
CLOUD = re.compile(r"s3://|--endpoint-url|--host\b|^ssh-keyscan\b|(?:^|\s)(?:--backend|-b)[ =](?!local\b)")
# - the setup line made the venv this test runs in, and the test command is this suite;
SELF = ("bash scripts/setup.sh", "bash scripts/test.sh")
# - activating the venv is what this test's PATH already does.
ACTIVATE = "source .venv/bin/activate"
# - setting a variable for the lines after it (`export RELAY_SHARED_SECRET=...`) runs as written.
EXPORT = re.compile(r"^export [A-Z_][A-Z0-9_]*=")
# A command line starts with `launch` (bare, through the venv, or captured: `JOB=$(launch ...)`), or loads the
# bash completion script (`eval "$(launch completion bash)"`: it runs as written).
LAUNCH = re.compile(r"^(?:[A-Z_]+=\$\(|eval \"\$\()?(?:\.venv/bin/)?launch(?:\s|$)")


def _bash_lines(block: list[str]) -> list[str]:
    """The block's commands to run, continuation lines joined; any line no rule covers fails the collection."""
    joined, cur = [], ""
    for line in block:
        cur += line.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        joined.append(cur.strip())
        cur = ""
    out = []
    for line in filter(None, joined):
        if line.startswith("#") or line.startswith(ACTIVATE):
            continue
        for part in (p.strip() for p in line.split(" && ")):
            if part.startswith(SELF) or CLOUD.search(part):
                continue
            if not LAUNCH.match(part) and not EXPORT.match(part):
                raise AssertionError(f"README line {part!r}: no rule says whether to run it; add one to {__file__}")
            out.append(part)
    return out


def _same(command: str) -> str:
    """What makes two README lines the same command: not the venv prefix, spacing or a trailing comment."""
    return " ".join(re.sub(r"\s#.*$", "", command.replace(".venv/bin/launch", "launch", 1)).split())


def _units() -> list[pytest.param]:
    """One unit per bash block (its lines share a shell: `JOB=$(...)` feeds later lines), per table command not
    already run by a block, and per Python block."""
    units, seen, fence, block = [], set(), None, []
    lines = README.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if fence is None and line.startswith("```"):
            fence, block, start = line[3:].strip(), [], n
            continue
        if fence is not None:
            if line.startswith("```"):
                if fence == "bash" and (cmds := _bash_lines(block)):
                    units.append(pytest.param("bash", cmds, id=f"bash-block-line{start}"))
                    seen.update(map(_same, cmds))
                elif fence == "python":
                    units.append(pytest.param("python", ["\n".join(block)], id=f"python-block-line{start}"))
                fence = None
            else:
                block.append(line)
            continue
        if line.startswith("|"):
            for code in re.findall(r"`([^`]+)`", line):
                if LAUNCH.match(code) and not CLOUD.search(code) and _same(code) not in seen:
                    seen.add(_same(code))
                    script = next((w for w in code.split() if w.endswith(".py")), "launch")
                    units.append(pytest.param("bash", [code], id=f"table-{Path(script).name}"))
    assert units, "found no README commands: did the README's code fences change?"
    return units


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    return {
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PATH": f"{VENV_BIN}:{SYSTEM_PATH}",
        "LAUNCHER_HOME": str(tmp_path / "launcher-home"),
        # The CLI's store and the Python API's local root: the same private directory.
        "LAUNCHER_DATAPOOL": f"file://{tmp_path / 'pool'}", "DATAPOOL_ROOT": str(tmp_path / "pool"),
        # One thread and offline: the smoke runs build their tiny model locally and take seconds on a CPU.
        "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind, commands", _units())
def test_readme_command_runs_as_written(kind, commands, user_env, tmp_path):
    before = {p.name for p in REPO.iterdir()}
    if kind == "bash":
        # Each line is announced before it runs, so a failure names the README line that broke.
        # `.venv/bin/launch` means this venv's, wherever LAUNCHER_VENV put it.
        script = "set -euo pipefail\n" + "".join(
            f"echo {shlex.quote('README> ' + c)} >&2\n{c.replace('.venv/bin/', f'{VENV_BIN}/', 1)}\n"
            for c in commands)
        r = subprocess.run(["bash", "-c", script], cwd=REPO, env=user_env, capture_output=True, text=True)
    else:
        r = subprocess.run([sys.executable, "-c", commands[0]], cwd=REPO, env=user_env, capture_output=True,
                           text=True)
    out = (r.stdout + r.stderr)[-4000:]
    assert r.returncode == 0, out
    if kind == "python":
        assert r.stdout.strip().splitlines()[-1] == "0 succeeded", out
    # The runs used the private datapool and left nothing new in the repo (a ./datapool, reports, ...).
    assert not {p.name for p in REPO.iterdir()} - before - {"__pycache__"}, "a README command wrote into the repo"
    if any(" runners/" in c and "--dry-run" not in c for c in commands) or kind == "python":
        assert (tmp_path / "pool" / "experiments").is_dir(), out


def test_readme_rules_cover_the_examples():
    """The rules above keep the runnable examples in and the cloud ones out (a rule too broad would skip all)."""
    units = {p.id: p.values[1] for p in _units()}
    cmds = [c for cs in units.values() for c in cs]
    assert any(c.startswith("JOB=$(launch --detach") for c in cmds) and any("logs $JOB -f" in c for c in cmds)
    assert any("--dry-run" in c for c in cmds) and any("--profile" in c for c in cmds)
    assert not any("s3://" in c for c in cmds)
    assert any(i.startswith("python-block") for i in units)
    assert _bash_lines(["launch --backend modal --gpu A100 runners/rl_run.py", "launch --backend local x.py",
                        "launch --datapool s3://b/p x.py", "launch sync up --datapool s3://b/p"]) == [
        "launch --backend local x.py"]
    with pytest.raises(AssertionError, match="no rule"):
        _bash_lines(["rm -rf datapool"])
