"""The SDK (issue 24, item 8): `Run.wait/logs/down/status`, typed `JobStatus`, `launcher.jobs()`, on real local runs
of tiny scripts; docs/api.md's example run as written and type-checked by mypy together with every public name;
`py.typed` shipped; the public names static for type checkers and still lazy at runtime."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
API_DOC = REPO / "docs" / "api.md"

TRAIN = textwrap.dedent("""\
    import sys, time
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 3
    for i in range(steps):
        print(f"step {i}", flush=True)
        time.sleep(0.5 if steps > 10 else 0.05)
    print("caf\\u00e9 done", flush=True)
    sys.exit(int(sys.argv[sys.argv.index("--code") + 1]) if "--code" in sys.argv else 0)
    """)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATAPOOL_ROOT", "EXPERIMENT", "CHECKPOINT_DIR",
                                                            "LAUNCH_DATAPOOL", "LAUNCHER_DATAPOOL")}
    env.update(LAUNCHER_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p))
    return env


def _python(code: str, tmp_path: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "train.py").write_text(TRAIN)
    return subprocess.run([sys.executable, "-c", code], cwd=project, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=timeout)


def _doc_example() -> str:
    (block,) = re.findall(r"```python\n(.*?)```", API_DOC.read_text(), re.S)
    return block


SDK_RUN = textwrap.dedent("""\
    import json
    import launcher
    from launcher import Job, JobStatus, Run, launch

    run = launch(Job(script="train.py", args=["--steps", "3", "--code", "3"]), detach=True)
    assert isinstance(run, Run)
    final = run.wait(timeout=120)
    assert isinstance(final, JobStatus), final
    assert (final.state, final.exit_code, run.exit_code) == ("failed", 3, 3), final
    assert not final.active and final.backend == "local" and final.summary == "failed (exit code 3)"
    assert final.started is not None and final.ended is not None and final.ended >= final.started
    assert final.duration_s is not None and final.cost_usd == 0.0 and final.where.startswith("this machine")
    assert final.log.endswith(f"reports/jobs/{run.job_id}/log.txt") and os.path.exists(final.log)
    lines = list(run.logs())
    assert lines == ["step 0", "step 1", "step 2", "caf\\u00e9 done"], lines
    assert list(run.logs(tail=2)) == ["step 2", "caf\\u00e9 done"]
    assert list(launcher.logs(run.job_id, tail=1)) == ["caf\\u00e9 done"]
    assert run.status() == launcher.status(run.job_id)

    slow = launch(Job(script="train.py", args=["--steps", "1000"]), detach=True)
    try:
        run.wait(timeout=0.01)  # already ended: returns at once
        slow.wait(timeout=1.0)
        raise AssertionError("wait() did not time out")
    except TimeoutError as exc:
        assert slow.job_id in str(exc)
    assert slow.status().state == "running" and slow.status().active
    ended = slow.down()
    assert isinstance(ended, JobStatus) and ended.state == "cancelled", ended

    every = launcher.jobs()
    assert [j.job_id for j in every] == [slow.job_id, run.job_id]
    assert all(isinstance(j, JobStatus) for j in every)
    assert [j.job_id for j in launcher.jobs(state="failed")] == [run.job_id]
    assert [j.job_id for j in launcher.jobs(state=["cancelled", "failed"], limit=1)] == [slow.job_id]
    assert launcher.jobs(backend="ssh") == []
    d = every[1].to_dict()
    assert json.loads(json.dumps(d))["exit_code"] == 3 and d["submitted"].endswith("+00:00")
    try:
        launcher.jobs(state="nope")
        raise AssertionError("unknown state taken")
    except launcher.UserError as exc:
        assert "unknown job state 'nope'" in str(exc)
    print("ok")
    """)


def test_run_wait_logs_down_status_and_jobs_on_local_runs(tmp_path):
    r = _python("import os\n" + SDK_RUN, tmp_path)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "ok", r.stdout + r.stderr


def test_logs_followed_yield_str_lines_until_the_end(tmp_path):
    r = _python(textwrap.dedent("""\
        from launcher import Job, launch
        run = launch(Job(script="train.py", args=["--steps", "12"]), detach=True)
        got = list(run.logs(follow=True))
        assert all(isinstance(line, str) for line in got)
        assert got[0] == "step 0" and got[-1] == "caf\\u00e9 done" and len(got) == 13, got
        assert run.wait(timeout=30).exit_code == 0
        print("ok")
        """), tmp_path)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "ok", r.stdout + r.stderr


def test_docs_api_example_runs_as_written(tmp_path):
    r = _python(_doc_example(), tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "train: step 2" in r.stdout and "cancelled" in r.stdout, out
    assert r.stdout.strip().splitlines()[-1] == "0 succeeded", out


PUBLIC_USE = textwrap.dedent("""\
    from typing import Iterator
    import launcher
    from launcher import Job, JobStatus, NotConfirmed, Plan, Run, UserError, down, dry_run, jobs, launch, logs, status

    job: Job = Job(script="x.py", max_runtime="1h", gpu="A100:2")
    plan: Plan = dry_run(job)
    run: Run = launch(job, detach=True)
    st: JobStatus = status(run.job_id)
    code: int | None = st.exit_code
    cost: float | None = st.cost_usd
    lines: Iterator[str] = logs(run.job_id, follow=True, tail=10)
    gone: JobStatus = down(run.job_id)
    listed: list[JobStatus] = jobs(limit=None, state="failed", backend="local")
    waited: JobStatus = run.wait(timeout=1.5)
    mine: Iterator[str] = run.logs(follow=False)
    errors: tuple[type[Exception], ...] = (UserError, NotConfirmed)
    version: str = launcher.__version__
    """)

# What must fail: a misspelt name and a wrong type, so the check above is not vacuous (`Any` passes everything).
PUBLIC_MISUSE = textwrap.dedent("""\
    import launcher
    from launcher import status
    bad: int = status("x").state
    launcher.no_such_name
    """)


def _mypy(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess:
    if not os.environ.get("CI"):  # in CI a missing mypy fails the test instead
        pytest.importorskip("mypy", reason="mypy is in the dev extras (scripts/setup.sh installs it)")
    paths = []
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "launcher-tests" / "mypy"
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                           "--cache-dir", str(cache), "--no-error-summary", *paths,
                           str(REPO / "launcher" / "__init__.py")],  # the public names' own declarations
                          cwd=REPO, env={**os.environ, "MYPYPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=300)


def test_mypy_passes_on_the_docs_example_and_every_public_name(tmp_path):
    r = _mypy(tmp_path, {"api_example.py": _doc_example(), "public_use.py": PUBLIC_USE})
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_catches_a_wrong_type_and_an_unknown_name(tmp_path):
    r = _mypy(tmp_path, {"misuse.py": PUBLIC_MISUSE})
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'expression has type "str", variable has type "int"' in r.stdout, r.stdout
    assert 'Module has no attribute "no_such_name"' in r.stdout, r.stdout


def test_public_names_are_static_for_type_checkers_and_lazy_at_runtime():
    source = (REPO / "launcher" / "__init__.py").read_text()
    tree = ast.parse(source)
    static = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "__all__")
    names = ast.literal_eval(static.value)
    checked = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    seen = {a.asname or a.name for n in checked.body if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    seen |= {n.name for n in checked.body if isinstance(n, ast.ClassDef)}  # Job: the model built at import
    assert set(names) <= seen and seen - set(names) <= {"Any", "JobFields"}, set(names) ^ seen
    # Lazy: importing the package loads none of the modules behind the names; each name resolves when asked.
    code = ("import sys, launcher\n"
            "assert not {'launcher.api', 'launcher.job', 'pydantic'} & set(sys.modules), sorted(sys.modules)\n"
            f"for n in {names!r}: getattr(launcher, n)\n"
            "from launcher import *\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (REPO / "launcher" / "py.typed").exists()


def test_py_typed_ships_with_the_package():
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["launcher"]
    assert any(d.startswith("mypy") for d in meta["project"]["optional-dependencies"]["dev"])
