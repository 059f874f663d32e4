"""The default profile ($LAUNCHER_PROFILE, else $XDG_CONFIG_HOME/launcher/config.yaml) under --profile and flags, and
the one prefix of the variables users set (LAUNCHER_*, the old LAUNCH_* still read with a deprecation note)."""
from __future__ import annotations

import pytest
import yaml


@pytest.fixture
def defaults(launcher_env, project, tmp_path):
    """`launch(...)` with a default profile at $XDG_CONFIG_HOME/launcher/config.yaml (and no $LAUNCHER_PROFILE)."""
    (project / "hi.py").write_text("print('hi')\n")
    config = tmp_path / "xdg" / "launcher" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"experiment": "fromdefault", "max_runtime": "2h", "env": {"A": "1"},
                                      "ec2": {"region": "eu-west-1"}}))
    env = {k: v for k, v in launcher_env.items() if k != "LAUNCHER_PROFILE"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    return env, config


def _plan(env, project, *args) -> dict:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "launcher", *args], cwd=project, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def _run(env, project, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_default_profile_applies(defaults, project):
    env, _ = defaults
    plan = _plan(env, project, "--dry-run", "--full", "hi.py")
    assert plan["job"]["experiment"] == "fromdefault" and plan["job"]["max_runtime"] == 7200
    assert plan["job"]["env"]["A"] == "1"
    # The defaults' ec2: section is not this local job's: dropped, not named in a note.
    assert not any("ec2" in n for n in plan.get("notes") or [])


def test_profile_then_flags_override_it(defaults, project):
    env, _ = defaults
    (project / "p.yaml").write_text(yaml.safe_dump({"experiment": "fromprofile", "env": {"B": "2"}}))
    plan = _plan(env, project, "--profile", "p.yaml", "--dry-run", "--full", "hi.py")
    job = plan["job"]
    assert job["experiment"] == "fromprofile" and job["max_runtime"] == 7200  # the rest of the defaults stays
    assert job["env"]["A"] == "1" and job["env"]["B"] == "2"  # env merges
    plan = _plan(env, project, "--profile", "p.yaml", "--experiment", "fromflag", "--max-runtime", "30m",
                 "--dry-run", "--full", "hi.py")
    assert plan["job"]["experiment"] == "fromflag" and plan["job"]["max_runtime"] == 1800


def test_launcher_profile_names_the_file_or_none(defaults, project, tmp_path):
    env, _ = defaults
    other = tmp_path / "team.yaml"
    other.write_text("experiment: fromenv\n")
    plan = _plan({**env, "LAUNCHER_PROFILE": str(other)}, project, "--dry-run", "--full", "hi.py")
    assert plan["job"]["experiment"] == "fromenv"  # $LAUNCHER_PROFILE before config.yaml
    plan = _plan({**env, "LAUNCHER_PROFILE": ""}, project, "--dry-run", "--full", "hi.py")
    assert plan["job"]["experiment"] == "default"  # set empty: no default profile
    r = _run({**env, "LAUNCHER_PROFILE": str(tmp_path / "missing.yaml")}, project, "--dry-run", "hi.py")
    assert r.returncode == 2 and "LAUNCHER_PROFILE" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_a_job_of_its_own_does_not_belong_in_the_defaults(defaults, project):
    env, config = defaults
    config.write_text("script: hi.py\n")
    r = _run(env, project, "--dry-run", "hi.py")
    assert r.returncode == 2 and "script" in r.stderr and "--profile" in r.stderr, r.stderr
    config.write_text("- not a mapping\n")
    r = _run(env, project, "--dry-run", "hi.py")
    assert r.returncode == 2 and str(config) in r.stderr


# -- one prefix: LAUNCHER_* (the old LAUNCH_* read with a note) ----------------------------------------------------

def test_launcher_datapool_and_the_old_name(defaults, project, tmp_path):
    env, config = defaults
    config.unlink()
    new, old = (tmp_path / "new").as_uri(), (tmp_path / "old").as_uri()
    r = _run({**env, "LAUNCHER_DATAPOOL": new}, project, "--dry-run", "--full", "hi.py")
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["job"]["datapool"] == new and "deprecated" not in r.stderr
    r = _run({**env, "LAUNCH_DATAPOOL": old}, project, "--dry-run", "--full", "hi.py")
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["job"]["datapool"] == old
    notes = [ln for ln in r.stderr.splitlines() if "deprecated" in ln]
    assert notes == ["[launcher] note: LAUNCH_DATAPOOL is deprecated; set LAUNCHER_DATAPOOL instead (the old name "
                     "still works for now)"]
    r = _run({**env, "LAUNCH_DATAPOOL": old, "LAUNCHER_DATAPOOL": new}, project, "--dry-run", "--full", "hi.py")
    assert yaml.safe_load(r.stdout)["job"]["datapool"] == new and "deprecated" not in r.stderr


def test_every_renamed_variable_reads_both_names(monkeypatch, capsys):
    from launcher import envvars, images, snapshot

    envvars._noted.clear()
    monkeypatch.setenv("LAUNCH_IMAGE_REPO", "old.example.com/node")
    assert images.default_repo() == "old.example.com/node"
    assert "LAUNCH_IMAGE_REPO is deprecated" in capsys.readouterr().err
    monkeypatch.setenv("LAUNCHER_IMAGE_REPO", "new.example.com/node")
    assert images.default_repo() == "new.example.com/node"
    monkeypatch.setenv("LAUNCH_SNAPSHOT_LIMIT", "2Ki")
    assert snapshot._limit(snapshot.DEFAULT_LIMIT) == 2048
    assert capsys.readouterr().err.count("LAUNCH_SNAPSHOT_LIMIT is deprecated") == 1
    assert snapshot._limit(snapshot.DEFAULT_LIMIT) == 2048 and capsys.readouterr().err == ""  # once per process
    # What the launcher sets for scripts keeps its name and is never read as a user setting.
    monkeypatch.setenv("LAUNCH_BACKEND", "ec2")
    assert envvars.get("BACKEND") is None
