"""--dry-run: every step's plan (request, deadline, price) and the worst-case total, offline, nothing written."""
from __future__ import annotations

import subprocess
import sys

import yaml

from .conftest import REPO, clean_env, files_under, script_config, write_project

HEAVY = ["torch", "transformers", "boto3", "botocore", "kubernetes", "paramiko", "modal", "trl", "datasets"]
STEPS = [{"id": "script_0", "type": "script"},
         {"id": "script_1", "type": "script", "backend": "ec2", "gpu": "A10G", "max_runtime": "2h", "spot": True}]
CONFIGS = {"script_0.py": script_config("script_0", "red"),
           "script_1.py": script_config("script_1", "green", prev="script_0")}


def test_dry_run_prints_each_plan_and_the_total(proj, tmp_path):
    path = write_project(proj, STEPS, CONFIGS, {"DATAPOOL": "s3://no-such-bucket/pool", "EC2": {"region": "us-east-1"}})
    env = {**clean_env(), "LAUNCHER_HOME": str(tmp_path / "home"), "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "y", "PYTHONPATH": str(REPO)}
    code = ("import sys\nfrom launcher.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code, "pipeline", "-c", str(path), "--dry-run", "--full"],
                          cwd=proj, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text, heavy = proc.stdout.rsplit("HEAVY:", 1)
    assert heavy.strip() == "", heavy  # offline and light: no SDK imported
    docs = list(yaml.safe_load_all(text))
    local, ec2, total = docs
    assert local["step"] == "script_0" and local["backend"] == "local" and local["worst_case_usd"] == 0.0
    assert local["request"]["argv"][1:3] == ["-m", "launcher.node.agent"]
    assert ec2["step"] == "script_1" and ec2["backend"] == "ec2" and ec2["deadline"]
    assert ec2["price"]["instance_type"] == "g5.xlarge" and ec2["price"]["market"] == "spot"
    assert ec2["worst_case_usd"] == ec2["price"]["worst_case_usd"] > 0
    assert ec2["args"] == [] and ec2["env_file"] == "data/pipeline/script_1.env"
    assert "STEP_INPUTS" in yaml.safe_dump(ec2["request"])  # the node is told to pull model/hf/script_0
    assert total["worst_case_total_usd"] == ec2["worst_case_usd"]
    assert not (proj / "datapool").exists() and files_under(tmp_path / "home") == []


def test_dry_run_of_the_demo_names_each_runner(proj, pl, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    code, out, err = pl("-c", "configs/experiments/demo/pipeline.py", "--dry-run", "--full", "--datapool",
                        f"file://{tmp_path / 'pool'}")
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    assert [d.get("step") for d in docs[:-1]] == ["tokenize_sft_0", "train_sft_0", "train_rl_0", "eval_0"]
    assert docs[0]["script"] in ("runners/tokenize_run.py", "runners/tokenize.py")
    sft = docs[1]["args"]
    # Chained through the datapool: SFT reads the tokenized data and starts from the base model, GRPO from SFT.
    assert "data.pretokenized=data/tokenized/sft/tokenize_sft_0" in sft
    assert "model.name_or_path=model/base/tiny-smoke" in sft
    assert "model.name_or_path=model/hf/train_sft_0" in docs[2]["args"]
    assert "model.name_or_path=model/hf/train_rl_0" in docs[3]["args"] and docs[3]["outputs"] == [
        "reports/eval/eval_0.json"]
    assert docs[-1]["worst_case_total_usd"] == 0.0
    assert not (tmp_path / "pool").exists()


def test_the_default_profile_is_under_every_step(proj, tmp_path):
    """$LAUNCHER_PROFILE (the default profile) applies to pipeline steps as to `launch`: under the pipeline's own
    defaults and each step's placement; its backend sections reach the steps on those backends."""
    path = write_project(proj, STEPS, CONFIGS, {"DATAPOOL": "s3://no-such-bucket/pool"})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"max_runtime": "3h", "env": {"FROM_DEFAULTS": "1"},
                                      "ec2": {"region": "eu-west-1"}}))
    env = {**clean_env(), "LAUNCHER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO),
           "LAUNCHER_PROFILE": str(config)}
    proc = subprocess.run([sys.executable, "-m", "launcher", "pipeline", "-c", str(path), "--dry-run", "-o", "json"],
                          cwd=proj, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    from datetime import datetime

    local, ec2 = json.loads(proc.stdout)["steps"]
    assert "FROM_DEFAULTS" in json.dumps(local["request"]) and "FROM_DEFAULTS" in json.dumps(ec2["request"])
    assert "eu-west-1" in json.dumps(ec2["request"]) and "eu-west-1" not in json.dumps(local["request"])
    # The defaults' 3h max runtime where the step sets none; the ec2 step's own 2h over it.
    apart = datetime.fromisoformat(local["deadline"]) - datetime.fromisoformat(ec2["deadline"])
    assert abs(apart.total_seconds() - 3600) < 5, (local["deadline"], ec2["deadline"])
