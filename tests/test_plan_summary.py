"""The plan in ten seconds (issue 24, item 1): `--dry-run` prints a summary of at most 25 lines of at most 80
columns on every backend, warnings first; `--full` / `-o yaml` and `-o json` give the whole plan; a priced launch
from a terminal shows the summary and asks [Y/n] (never without a terminal, with CI set, with -y, or in the SDK)."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys

import pytest
import yaml

from launcher import summary
from launcher.job import Job
from launcher.planner import make_plan

from .motoserver import MOTO_ENV, moto_with_bucket
from .terminal import PRICED, in_pty as _in_pty

from .backends.test_golden import JOBS

# Everything a plan can note at once on ec2: each note wraps over several lines, more than fit.
NOISY_EC2 = dict(backend="ec2", max_runtime="6h", experiment="golden", gpu="A10G", spot=True, datapool="s3://b/pool",
                 secrets=["HF_TOKEN"], memory="64Gi", keep_on_failure=True, max_restarts=2,
                 ec2={"region": "us-east-1", "key_name": "me"})


def _plan(project, **fields):
    (project / "train.py").write_text("print('hi')\n")
    return make_plan(Job(script="train.py", args=["--config", "c.yaml"], workdir=str(project), **fields))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATAPOOL_ROOT", raising=False)
    return tmp_path / "home"


def _fits(lines):
    assert len(lines) <= summary.MAX_LINES, "\n".join(lines)
    assert all(len(line) <= summary.WIDTH for line in lines), "\n".join(line for line in lines if len(line) > 80)


# What each backend declares (Backend.where) shows up: where it runs, the machine, the image.
WHERE = {
    "local": ["on local", "this machine", "price     $0"],
    "ssh": ["host      ubuntu@gpu-box:2222", "price     none known"],
    "ec2": ["region    us-east-1, zone any; account checked at launch", "machine   g5.xlarge, 1x A10G",
            "spot      yes", "price     $1.006/h on-demand (spot: less); worst case $6.13 to the deadline",
            "image     base-oss-nvidia-driver-gpu-ubuntu-22.04, latest/ami-id (SSM parameter)"],
    "modal": ["workspace", "checked at launch", "machine   gpu A100-40GB", "image     ", "worst case $16.65"],
    "k8s": ["cluster   context gpu-cluster; namespace ml", "machine   2 pod(s), H100:8",
            "image     ghcr.io/team/node:0123456789ab"],
    "slurm": ["cluster   login node alice@login.cluster", "partition gpu, account ml", "machine   2 node(s)"],
}


@pytest.mark.parametrize("backend", sorted(JOBS))
def test_every_backends_summary_fits_80_columns_and_25_lines(backend, tmp_path, home):
    plan = _plan(tmp_path, **JOBS[backend])
    lines = summary.lines(plan)
    _fits(lines)
    text = "\n".join(lines)
    for words in WHERE[backend]:
        assert words in text, text
    assert "runtime   max 2h00m" in text or "runtime   max 6h00m" in text
    if plan.snapshot:
        assert f"snapshot  {plan.snapshot.sha256[:12]}" in text and "checked at launch" in text
        assert "  pull    data/, model/base/ (in experiments/golden/)" in text
    assert lines[-1].endswith("--full (YAML) or -o json")
    # The colours change no text: the same lines once the styles are taken out.
    import click

    assert [click.unstyle(x) for x in summary.lines(plan, color=True)] == lines


def test_notes_that_do_not_fit_are_counted_on_the_last_line(tmp_path, home):
    plan = _plan(tmp_path, **NOISY_EC2)
    lines = summary.lines(plan)
    _fits(lines)
    assert len(plan.notes) >= 4 and "more note(s)" in lines[-1] and "--full" in lines[-1]


def test_warnings_come_first(tmp_path, home):
    plan = _plan(tmp_path, backend="local", gpu="A100", cpus=8, max_runtime="1h")
    assert [w.split(":")[0] for w in plan.warnings] == ["gpu A100-40GB", "--cpus 8.0"] and plan.notes == []
    lines = summary.lines(plan)
    assert lines[0].startswith("warning: gpu A100-40GB:1: --backend local uses whatever GPUs")
    assert lines[2].startswith("warning: --cpus 8.0") and lines[4].startswith(f"{plan.job_id} on local")
    coloured = summary.lines(plan, color=True)
    assert coloured[0].startswith("\x1b[") and not coloured[4].startswith("warning")


def test_cli_summary_full_and_json(launch, project):
    (project / "hello.py").write_text("print('hi')\n")
    out = launch("--dry-run", "--gpu", "A100", "--max-runtime", "2h", "hello.py")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    _fits(lines)
    assert lines[0].startswith("warning: gpu A100-40GB:1") and "\x1b[" not in out.stdout  # no colour in a pipe
    assert any(line.startswith("price     $0") for line in lines)
    full = yaml.safe_load(launch("--dry-run", "--full", "hello.py").stdout)
    assert full["request"]["argv"][1:3] == ["-m", "launcher.node.agent"] and full["backend"] == "local"
    assert yaml.safe_load(launch("--dry-run", "-o", "yaml", "hello.py").stdout).keys() == full.keys()
    plan = json.loads(launch("--dry-run", "-o", "json", "--gpu", "A100", "hello.py").stdout)
    assert plan["request"]["argv"][1:3] == ["-m", "launcher.node.agent"] and plan["job"]["gpu"] == "A100-40GB:1"
    assert plan["price"]["usd_per_hour"] == 0.0 and plan["warnings"] and plan["datapool"]["root"]
    bad = launch("--full", "hello.py")
    assert bad.returncode == 2 and "--full goes with --dry-run" in bad.stderr


def test_cli_summary_of_a_remote_backend_offline(launch, project):
    (project / "hello.py").write_text("print('hi')\n")
    out = launch("--dry-run", "--backend", "ec2", "--region", "us-east-1", "--gpu", "A10G", "--spot", "--datapool",
                 "s3://b/pool", "hello.py", env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
    assert out.returncode == 0, out.stderr
    _fits(out.stdout.splitlines())
    assert "g5.xlarge, 1x A10G" in out.stdout and "worst case $" in out.stdout and "snapshot  " in out.stdout


def test_pipeline_dry_run_is_one_row_per_step(launcher_env, repo_root, tmp_path):
    def pl(*args):
        r = subprocess.run([sys.executable, "-m", "launcher", "pipeline", "-c", "configs/experiments/demo/pipeline.py",
                            "--dry-run", *args, "--datapool", f"file://{tmp_path / 'pool'}"], cwd=repo_root,
                           env=launcher_env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = pl()
    lines = out.splitlines()
    _fits(lines)
    assert lines[0].split() == ["STEP", "BACKEND", "MACHINE", "RUNTIME", "WORST"]
    assert [line.split()[0] for line in lines[1:5]] == ["tokenize_sft_0", "train_sft_0", "train_rl_0", "eval_0"]
    assert "worst case total: $0.00" in out
    data = json.loads(pl("-o", "json"))
    assert [s["step"] for s in data["steps"]][0] == "tokenize_sft_0" and data["worst_case_total_usd"] == 0.0
    assert list(yaml.safe_load_all(pl("--full")))[0]["step"] == "tokenize_sft_0" and not (tmp_path / "pool").exists()


# -- the confirmation -----------------------------------------------------------------------------------------------

@pytest.fixture
def priced_env(launcher_env, tmp_path):
    return {k: v for k, v in launcher_env.items() if k != "CI"}


def _jobs(env, cwd) -> str:
    return subprocess.run([sys.executable, "-m", "launcher", "jobs"], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60).stdout


def test_a_priced_launch_on_a_terminal_asks_and_no_creates_nothing(priced_env, project):
    (project / "hello.py").write_text("print('hello from the job')\n")
    code, out = _in_pty(["--max-runtime", "1h", "hello.py"], priced_env, project, b"n\n")
    # 1 h + the 30 s grace + the 5 min push reserve at $1.25/h
    assert "[Y/n]" in out and "price     $1.25/h; worst case $1.36 to the deadline" in out, out
    assert code == 1 and "not launched" in out and "hello from the job" not in out, out
    assert "dry run" not in out  # the confirmation's summary is the real launch's
    assert _jobs(priced_env, project).startswith("no jobs yet")
    code, out = _in_pty(["--max-runtime", "1h", "hello.py"], priced_env, project, b"\n")  # Enter: the default, yes
    assert code == 0 and "[Y/n]" in out and "hello from the job" in out, out


@pytest.mark.parametrize("how", ["-y", "--yes", "CI=1"])
def test_yes_and_ci_never_ask(how, priced_env, project):
    (project / "hello.py").write_text("print('hello from the job')\n")
    env = {**priced_env, "CI": "1"} if how == "CI=1" else priced_env
    args = ["hello.py"] if how == "CI=1" else [how, "hello.py"]
    code, out = _in_pty(args, env, project, None)
    assert code == 0 and "[Y/n]" not in out and "hello from the job" in out, out


def test_no_terminal_never_asks(priced_env, project):
    (project / "hello.py").write_text("print('hello from the job')\n")
    r = subprocess.run([sys.executable, "-c", PRICED, "hello.py"], env=priced_env, cwd=project, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "[Y/n]" not in r.stdout + r.stderr and "hello from the job" in r.stdout, r.stderr


def test_a_free_launch_on_a_terminal_does_not_ask(launcher_env, tmp_path, project):
    (project / "hello.py").write_text("print('hello from the job')\n")
    env = {k: v for k, v in launcher_env.items() if k != "CI"}
    master, slave = pty.openpty()
    r = subprocess.run([sys.executable, "-m", "launcher", "hello.py"], env=env, cwd=project, stdin=slave,
                       stdout=slave, stderr=subprocess.PIPE, timeout=120)
    os.close(slave)
    out = b""
    while select.select([master], [], [], 0.2)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert r.returncode == 0 and b"[Y/n]" not in out + r.stderr and b"hello from the job" in out


def test_the_sdk_never_asks(tmp_path, home, monkeypatch):
    from launcher import api
    from launcher.backends.local.backend import LocalBackend

    monkeypatch.setattr(LocalBackend, "price", lambda self, job: {"usd_per_hour": 9.0})
    (tmp_path / "train.py").write_text("print('hi')\n")
    job = Job(script="train.py", workdir=str(tmp_path), datapool=f"file://{tmp_path / 'pool'}")
    run = api.launch(job)  # no confirm argument: nothing to ask
    assert run.exit_code == 0


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from moto_with_bucket(tmp_path_factory, "summary-pool")


def test_what_needs_the_network_is_filled_in_at_the_confirmation(tmp_path, home, moto, monkeypatch):
    """Offline the account and whether the snapshot is in the store are "checked at launch"; at the confirmation
    (after preflight) the backend names the account and looks for the snapshot in the store."""
    from launcher.backends import get_backend
    from launcher.snapshot import build, upload

    for k, v in {**MOTO_ENV, "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto.endpoint,
                 "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")
                 }.items():
        monkeypatch.setenv(k, v)
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('hi')\n")
    snap = build(project, cache_dir=tmp_path / "snapshots")
    job = Job(script="train.py", workdir=str(project), backend="ec2", gpu="A10G", datapool="s3://summary-pool/p",
              ec2={"region": "us-east-1"})
    plan = make_plan(job, snapshot=snap)
    backend = get_backend("ec2")
    offline = summary.lines(plan, backend.where(plan))
    assert "account checked at launch" in "\n".join(offline)
    assert any(line.startswith("snapshot") and line.endswith("in the store? checked at launch") for line in offline)
    lines = summary.lines(plan, backend.where(plan, online=True), dry_run=False)
    _fits(lines)
    text = "\n".join(lines)
    assert "account 123456789012" in text and "checked at launch" not in text and "dry run" not in lines[0]
    assert any(line.startswith("snapshot") and line.endswith("; not in the store: to upload")
               for line in lines), text
    upload(snap, plan.spec.store_url, endpoint_url=plan.spec.endpoint_url)
    lines = summary.lines(plan, backend.where(plan, online=True), dry_run=False)
    assert any(line.startswith("snapshot") and line.endswith("; in the store already")
               for line in lines), "\n".join(lines)
