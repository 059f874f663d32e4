"""Pipeline tests: a throwaway project of tiny script steps (fast) and the demo on the tiny model (slow, once).

`pl(*args)` runs `launch pipeline ...` in this process (the steps' agents are real subprocesses): exit code, stdout,
stderr. Each test has its own LAUNCHER_HOME, project and file:// datapool.
"""
from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# Step scripts: read the step's env file (stdlib only, as any script could), write under the experiment.
MAKE = '''
import os, sys
from pathlib import Path
env = dict(l.split("=", 1) for l in Path(os.environ["STEP_ENV_PATH"]).read_text().splitlines() if "=" in l)
if env.get("FAIL") == "true":
    print("failing on purpose", file=sys.stderr)
    sys.exit(3)
exp = Path(os.environ["EXPERIMENT_DIR"])
raw = exp / "data/raw/cpt/tokenize_cpt_0.jsonl"
out = exp / "model/hf" / os.environ["STEP_ID"]
out.mkdir(parents=True, exist_ok=True)
prev = exp / env["PREV"] / "word.txt" if env.get("PREV") else None
word = (prev.read_text().strip() + "+" if prev else "") + env["WORD"]
(out / "word.txt").write_text(word + "\\n")
(out / "seen.json").write_text(__import__("json").dumps({
    "step": os.environ["STEP_ID"], "type": os.environ["STEP_TYPE"], "backend": os.environ["LAUNCH_BACKEND"],
    "model_prefix": os.environ.get("MODEL_PREFIX"),
    "raw_rows": len(raw.read_text().splitlines()) if raw.exists() else 0,
    "env_path": os.environ["STEP_ENV_PATH"], "args": sys.argv[1:]}))
print("made", word)
'''


def write_project(root: Path, steps: list[dict], configs: dict[str, str], extra: dict | None = None,
                  fmt: str = "yaml") -> Path:
    """A project with scripts/make.py, raw data, and configs/experiments/exp/pipeline.<fmt> + steps/*.py."""
    (root / "scripts").mkdir(parents=True, exist_ok=True)
    (root / "scripts" / "make.py").write_text(MAKE)
    (root / "raw").mkdir(exist_ok=True)
    (root / "raw" / "a.txt").write_text("one\ntwo\nthree\n")
    (root / "raw" / "b.jsonl").write_text('{"text": "four"}\n{"text": "five"}\n')
    exp = root / "configs" / "experiments" / "exp"
    (exp / "steps").mkdir(parents=True, exist_ok=True)
    for name, text in configs.items():
        (exp / "steps" / name).write_text(textwrap.dedent(text))
    data = {"STEPS": steps, **(extra or {})}
    if fmt == "yaml":
        path = exp / "pipeline.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    else:
        path = exp / "pipeline.py"
        path.write_text("".join(f"{k} = {v!r}\n" for k, v in data.items()))
    return path


def script_config(step: str, word: str, prev: str | None = None, **more) -> str:
    """A script step writing model/hf/<step>/word.txt: its WORD after the PREV step's word."""
    lines = ['SCRIPT = "scripts/make.py"', f"WORD = {word!r}", f'OUTPUTS = ["model/hf/{step}"]']
    if prev:
        lines.append(f'PREV = "model/hf/{prev}"')
    lines += [f"{k} = {v!r}" for k, v in more.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def proj(tmp_path, monkeypatch):
    """A fresh project as the cwd, its own LAUNCHER_HOME, no datapool from the environment."""
    for var in ("DATAPOOL_ROOT", "EXPERIMENT", "EXPERIMENT_DIR", "CHECKPOINT_DIR", "LAUNCH_DATAPOOL", "JOB_ID",
                "STEP_ENV_PATH", "STEP_ID", "MODEL_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def pl(capfd):
    """`launch pipeline ARGS` in this process -> (exit code, stdout, stderr)."""

    def run(*args: str):
        from launcher.cli import main

        try:
            main(["pipeline", *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        sys.stdout.flush()
        got = capfd.readouterr()
        return code, got.out, got.err

    return run


def record(pool: Path, step: str, experiment: str = "exp") -> dict:
    return json.loads((pool / "experiments" / experiment / "reports" / "pipeline" / f"{step}.json").read_text())


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("DATAPOOL_ROOT", "EXPERIMENT", "CHECKPOINT_DIR",
                                                               "LAUNCH_DATAPOOL")}
