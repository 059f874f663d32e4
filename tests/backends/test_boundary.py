"""The backend boundary: a backend is one package plus one registry line, and the core never names one.

A toy backend from tests/ alone (tests/backends/plugins/toy_backend, registered by LAUNCHER_BACKENDS) takes its
flag, its profile section and its request through the core unchanged; it also runs the whole contract suite
(tests/backends/conftest.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launcher.backends import entries

from ..backend_names import backend_words

REPO = Path(__file__).resolve().parents[2]
PLUGINS = Path(__file__).resolve().parent / "plugins"
# The core: the launch path and the CLI, which ask the registry and never know a backend by name.
CORE = ["launcher/job.py", "launcher/plan.py", "launcher/planner.py", "launcher/api.py", "launcher/summary.py",
        *sorted(str(p.relative_to(REPO)) for p in (REPO / "launcher" / "cli").glob("*.py")),
        *sorted(str(p.relative_to(REPO)) for p in (REPO / "launcher" / "pipeline").glob("*.py"))]


named_backends = backend_words


def test_the_checker_finds_a_backend_name():
    assert sorted(named_backends('x = job.ec2\nif b == "k8s": pass\nfrom .backends.ssh import y\n')) == [
        "ec2", "k8s", "ssh"]
    assert named_backends('"""k8s in a docstring"""\n# ssh in a comment\nu = "modal-volume://v/p"\n') == []


@pytest.mark.parametrize("path", CORE)
def test_the_core_names_no_backend(path):
    assert named_backends((REPO / path).read_text()) == [], f"{path} names a backend: ask launcher.backends instead"


def test_every_entry_is_light_and_complete():
    for name, e in entries().items():
        assert e.name == name and e.cls.count(":") == 1 and e.summary
        for flag in e.flags:
            assert e.options is not None and flag.field in e.options.model_fields, (name, flag.name)


# -- the toy backend, from tests/ alone ---------------------------------------------------------------------------

@pytest.fixture
def toy_env(launcher_env):
    return {**launcher_env, "LAUNCHER_BACKENDS": "toy=toy_backend",
            "PYTHONPATH": os.pathsep.join([str(PLUGINS), launcher_env["PYTHONPATH"]])}


def _launch(env, project, *args):
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_toy_backend_plugs_in_with_its_flag_and_section(toy_env, project):
    (project / "hi.py").write_text("import os; print('hi from', os.environ['LAUNCH_BACKEND'])\n")
    helped = _launch(toy_env, project, "--help").stdout
    assert "toy (a test's toy)" in helped and "--toy-label WORD" in helped
    plan = yaml.safe_load(_launch(toy_env, project, "--backend", "toy", "--toy-label", "hello", "--dry-run",
                                  "--full", "hi.py").stdout)
    assert plan["request"]["label"] == "hello" and plan["job"]["toy"] == {"label": "hello", "short_restarts": 0}
    (project / "p.yaml").write_text(yaml.safe_dump({"backend": "toy", "toy": {"label": "fromprofile"}}))
    plan = yaml.safe_load(_launch(toy_env, project, "--profile", "p.yaml", "--dry-run", "--full", "hi.py").stdout)
    assert plan["request"]["label"] == "fromprofile"
    ran = _launch(toy_env, project, "--backend", "toy", "hi.py")
    assert ran.returncode == 0 and "hi from toy" in ran.stdout, ran.stderr


@pytest.mark.parametrize("args,expect", [
    (["--backend", "toy", "--toy-label", "x1"], "error: launch: field 'toy.label': bad label 'x1': letters only"),
    (["--toy-label", "x"], "error: --toy-label applies to --backend toy, not local; add --backend toy"),
    (["--backend", "toy", "--host", "box"], "error: --host applies to --backend ssh or slurm, not toy"),
])
def test_toy_refusals_are_one_line(toy_env, project, args, expect):
    (project / "hi.py").write_text("print('hi')\n")
    out = _launch(toy_env, project, *args, "hi.py")
    assert out.returncode == 2 and out.stderr.startswith(expect) and out.stderr.count("\n") == 1, out.stderr
    home = Path(toy_env["LAUNCHER_HOME"])
    assert not (home / "jobs.db").exists() and not (home / "jobs").exists()


def test_a_bad_plugin_list_is_one_line(toy_env, project):
    out = _launch({**toy_env, "LAUNCHER_BACKENDS": "toy"}, project, "hi.py")
    assert out.returncode == 2 and "bad LAUNCHER_BACKENDS item 'toy': use NAME=PACKAGE" in out.stderr, out.stderr


# -- a profile with every backend's section serves a pipeline step on another backend ----------------------------

def test_every_section_in_a_profile_leaves_a_local_step_alone(tmp_path, monkeypatch):
    """The bug this boundary fixed: a profile with a k8s: or modal: section failed every local step. Each section
    here is one its backend would refuse, so validating it anywhere but on its own backend would show."""
    from launcher.pipeline.run import check

    from ..pipeline.conftest import script_config, write_project

    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    for var in ("DATAPOOL_ROOT", "EXPERIMENT", "LAUNCH_DATAPOOL"):
        monkeypatch.delenv(var, raising=False)
    proj = tmp_path / "proj"
    proj.mkdir()
    monkeypatch.chdir(proj)
    sections = {name: {"not_a_field": True} for name, e in entries().items() if e.options is not None}
    assert {"ssh", "ec2", "k8s", "modal", "slurm"} <= set(sections)
    (proj / "prof.yaml").write_text(yaml.safe_dump(sections))
    path = write_project(proj, [{"id": "script_0", "type": "script"}],
                         {"script_0.py": script_config("script_0", "w")}, {"PROFILE": "prof.yaml"})
    [(sj, job)] = check(str(path)).steps
    assert job.backend == "local" and set(job.unused_sections) == set(sections)


# -- a relaunch short of capacity is retried by `launch watch` ------------------------------------------------------

PREEMPTIBLE = """
import os, signal, sys, time
attempt = os.environ.get("LAUNCH_ATTEMPT", "1")
print(f"attempt {attempt} started", flush=True)
if attempt == "1":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    time.sleep(300)
"""


def test_watch_retries_a_relaunch_short_of_capacity(toy_env, project):
    """The toy takes the job away (an unasked SIGTERM to the agent: a preemption); its first two relaunches are
    refused for capacity (CapacityError). `launch watch` says so, backs off, and the third relaunch runs."""
    import signal

    from launcher.proc import ProcRef

    from ..waiting import wait_for

    env = {**toy_env, "LAUNCHER_WATCH": "0", "LAUNCHER_WATCH_EVERY": "0.2"}
    (project / "job.py").write_text(PREEMPTIBLE)
    (project / "p.yaml").write_text(yaml.safe_dump({"backend": "toy", "toy": {"short_restarts": 2}}))
    job_id = _launch(env, project, "--profile", "p.yaml", "--detach", "--max-restarts", "1", "job.py").stdout.strip()
    state = Path(env["LAUNCHER_HOME"]) / "jobs" / job_id
    assert wait_for(lambda: "attempt 1 started" in _launch(env, project, "logs", job_id).stdout)
    assert ProcRef.load(state / "agent.pid").signal(signal.SIGTERM)  # nobody asked: the machine is taken away
    assert wait_for(lambda: _launch(env, project, "status", job_id).stdout.startswith("preempted"))
    watch = _launch(env, project, "watch", job_id)
    assert watch.returncode == 0, watch.stdout + watch.stderr
    assert watch.stderr.count("toy: no capacity for relaunch") == 2 and "retrying" in watch.stderr, watch.stderr
    assert "relaunched as attempt 2 of 2" in watch.stderr
    assert "attempt 2 started" in _launch(env, project, "logs", job_id).stdout
    assert _launch(env, project, "status", job_id).stdout.startswith("succeeded")


def test_the_old_node_paths_still_answer(launcher_env, tmp_path):
    """A client reaches a node started before launcher/node/ existed with `python -m launcher.nodectl` (the node's
    own code), and runners import `launcher.layout`: both still work, as thin shims over launcher/node/."""
    out = subprocess.run([sys.executable, "-m", "launcher.nodectl", "status", str(tmp_path)], env=launcher_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and '"alive": false' in out.stdout, out.stdout + out.stderr
    from launcher import layout
    from launcher.node import layout as node_layout

    assert layout.experiment_dir is node_layout.experiment_dir and layout.LAYOUT_DIRS == node_layout.LAYOUT_DIRS
