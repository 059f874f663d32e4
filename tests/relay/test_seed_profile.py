"""The seed's run.yaml as a launch profile (commander_url, run_id, worker_id, mode, relay_shared_secret, hf_repo):
a foreground worker that runs the mock trainer, commits its checkpoints and uploads them to a fake Hub on
127.0.0.1; the inline secret is accepted with a warning and lands in no plan, record or log."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from .fake_hub import FakeHub
from .workers import mock_project

MOCK_ARGS = ["--steps", "10", "--checkpoint-every", "5", "--step-seconds", "0.3", "--run-name", "seed"]


def run_yaml(project: Path, commander, secret: str, **extra) -> Path:
    path = project / "run.yaml"
    path.write_text(yaml.safe_dump({
        "commander_url": commander.url, "run_id": "seed", "worker_id": "w1", "mode": "mock",
        "relay_shared_secret": secret, "args": MOCK_ARGS, "experiment": "seed", **extra}))
    return path


def test_seed_run_yaml_trains_commits_and_uploads_to_the_hub(tmp_path, project, launcher_env, commander,
                                                              relay_secret, launch):
    commander.client().register("seed", {}, ttl=30)
    mock_project(project)
    env = {k: v for k, v in launcher_env.items() if k != "RELAY_SHARED_SECRET"}  # the file is the only source
    with FakeHub() as hub:
        profile = run_yaml(project, commander, relay_secret, hf_repo="org/relay-seed",
                           env={"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}, datapool=(tmp_path / "pool").as_uri())
        dry = launch("--profile", str(profile), "--dry-run", "--full", env=env)
        assert dry.returncode == 0, dry.stderr
        assert "relay_shared_secret written in the file" in dry.stderr and dry.stderr.count("warning") == 1
        plan = yaml.safe_load(dry.stdout)
        assert plan["job"]["relay"]["run_id"] == "seed" and plan["job"]["script"] == "runners/mock_run.py"
        assert "RELAY_SHARED_SECRET" in plan["job"]["secrets"]
        out = launch("--profile", str(profile), env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "holding run seed at epoch 1" in out.stdout + out.stderr
        assert "org/relay-seed" in hub.repos, out.stdout + out.stderr
        files = hub.repos["org/relay-seed"]
        assert json.loads(files["checkpoints/checkpoint-10/trainer_state.json"]) == {"global_step": 10}
        assert "checkpoints/checkpoint-5/state.json" in files
    view = commander.client().run("seed")
    assert view["finished"] and view["checkpoint"]["step"] == 10
    assert view["checkpoint"]["path"] == "model/relay/seed/epoch-1/seed/checkpoint-10"
    assert view["workers"] == [] and view["handoffs"] == 0
    home = Path(launcher_env["LAUNCHER_HOME"])
    for text in (dry.stdout, dry.stderr, out.stdout, out.stderr, launch("jobs").stdout,
                 (home / "jobs.db").read_bytes().decode(errors="replace"), commander.log()):
        assert relay_secret not in text
    for path in (tmp_path / "pool").rglob("*"):
        if path.is_file():
            assert relay_secret.encode() not in path.read_bytes(), path


def test_hub_dry_run_and_final_only(tmp_path, project, relay_env, commander, relay_secret, launch):
    commander.client().register("seed", {}, ttl=30)
    mock_project(project)
    with FakeHub() as hub:
        profile = project / "run.yaml"
        profile.write_text(yaml.safe_dump({
            "commander_url": commander.url, "run_id": "seed", "mode": "mock", "relay_shared_secret_env":
            "RELAY_SHARED_SECRET", "args": MOCK_ARGS, "hf_repo": "org/final", "hf_sync": "final",
            "hf_dry_run": True, "env": {"HF_ENDPOINT": hub.url}, "datapool": (tmp_path / "pool").as_uri()}))
        out = launch("--profile", str(profile), env=relay_env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "warning" not in out.stderr
        text = out.stdout + out.stderr
        assert "hub (dry run): would upload checkpoint-10" in text and "at final/" in text
        assert "checkpoints/checkpoint-5" not in text  # final only
        assert hub.requests == []
