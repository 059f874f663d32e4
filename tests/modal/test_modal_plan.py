"""The modal plan, offline: `--dry-run` prints the function spec without importing `modal`; what Modal would refuse
(or what cannot work there) is exit 2 before any call; the real client's objects built from the plan say what the
plan says."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launcher.backends.modal.request import timeout_s
from launcher.backends.slots import fill
from launcher.images import lock_hash
from launcher.job import Job
from launcher.planner import make_plan

REPO = Path(__file__).resolve().parents[2]

DRY_RUN_IS_OFFLINE = """
import sys
from launcher.cli import main
try:
    main({argv!r})
except SystemExit as exc:
    code = exc.code
print("HEAVY:" + ",".join(m for m in ("modal", "grpclib", "boto3", "kubernetes") if m in sys.modules))
"""


def test_headline_dry_run_prints_the_function_offline(launcher_env):
    """The issue's command, from the repo itself: spec, image (lock hash), volume, timeout, deadline and price."""
    argv = ["--dry-run", "--full", "--backend", "modal", "--gpu", "A100", "runners/rl_run.py", "--config",
            "configs/rl/wordle.yaml", "--task", "tasks/wordle_task.py"]
    env = {**launcher_env, "LAUNCH_DATAPOOL": "modal-volume://team-pool/pool", "MODAL_SERVER_URL": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", DRY_RUN_IS_OFFLINE.format(argv=argv)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text, heavy = out.stdout.rsplit("HEAVY:", 1)
    assert heavy.strip() == "", f"--dry-run imported {heavy.strip()}"
    plan = yaml.safe_load(text)
    fn = plan["request"]["function"]
    assert fn["gpu"] == "A100-40GB"  # Modal's name for the 40 GB A100, as `A100` means there
    assert plan["request"]["image"]["lock_hash"] == lock_hash()
    assert plan["request"]["image"]["requirements"] == ["images/requirements.lock", "images/requirements-gpu.lock"]
    assert fn["volumes"] == {"/launcher-node/volume": {"volume": "team-pool", "create_if_missing": True}}
    assert plan["agent_spec"]["datapool_root"] == "/launcher-node/volume/pool"
    assert fn["timeout"] == "<<slot:timeout>>"  # counted from submit: filled then, capped at Modal's limit
    assert any("capped at 24 h" in n for n in plan["notes"])  # the default 24 h max runtime plus the grace
    assert plan["deadline_at"] == plan["agent_spec"]["deadline_at"]
    assert plan["request"]["app"]["tags"]["launcher-deadline"] == str(int(plan["deadline_at"]))
    assert plan["price"]["gpu_usd_per_hour"] == 2.1 and plan["price"]["worst_case_usd"] > 0
    assert plan["request"]["spawn"]["spec"]["job_id"] == plan["job_id"]
    assert "python -m launcher.node.agent" in plan["request"]["spawn"]["bootstrap"] \
        or "-m launcher.node.agent" in plan["request"]["spawn"]["bootstrap"]


def _plan(tmp_path, **fields):
    (tmp_path / "train.py").write_text("print('hi')\n")
    job = Job(script="train.py", workdir=str(tmp_path), backend="modal",
              datapool=fields.pop("datapool", "modal-volume://pool"), **fields)
    return make_plan(job)


@pytest.mark.parametrize("gpu, want", [("A100", "A100-40GB"), ("a100-80gb:2", "A100-80GB:2"), ("H100:8", "H100:8"),
                                       ("L4", "L4"), ("A10G:4", "A10G:4")])
def test_gpu_strings_are_modals_and_modal_parses_them(tmp_path, gpu, want):
    from modal._resources import convert_fn_config_to_resources_config

    fn = _plan(tmp_path, gpu=gpu).request["function"]
    assert fn["gpu"] == want
    # Modal's own parser (the one the client runs before sending) takes it; the type and count survive.
    res = convert_fn_config_to_resources_config(cpu=None, memory=None, gpu=fn["gpu"], ephemeral_disk=None)
    assert res.gpu_config.gpu_type == want.split(":")[0]
    assert res.gpu_config.count == (int(want.split(":")[1]) if ":" in want else 1)


def test_resources_timeout_retries_and_secret_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "value-never-in-the-plan")
    plan = _plan(tmp_path, gpu="H100", cpus=4, memory="16Gi", disk="50Gi", max_runtime="30h", max_restarts=1,
                 spot=True, secrets=["HF_TOKEN"], modal={"secrets": ["wandb"]})
    fn = plan.request["function"]
    assert (fn["cpu"], fn["memory"], fn["ephemeral_disk"]) == (4.0, 16 * 1024, 50 * 1024)
    assert timeout_s(plan, plan.created) == 24 * 3600 and fn["retries"] == 1  # 30 h = two attempts of at most 24 h
    assert any("up to 2 attempts" in n for n in plan.notes)
    assert fn["secrets"] == [{"from_dict": {"HF_TOKEN": "<<slot:secret_hf_token>>"}}, {"from_name": "wandb"}]
    assert "value-never-in-the-plan" not in plan.to_yaml()


def test_short_job_timeout_is_its_deadline(tmp_path):
    plan = _plan(tmp_path, max_runtime="1h", grace_period="10s")
    # Modal's timeout is the node's dead-man time: the deadline (runtime + grace + push reserve) plus its margin.
    # (the push reserve is the job's --push-timeout, 300 s by default)
    assert timeout_s(plan, plan.created) in (3600 + 10 + 300 + 60, 3600 + 10 + 300 + 61)
    # Counted from submit (it fills the request's slot then): submitted ten minutes on, ten minutes less.
    assert timeout_s(plan, plan.created + 600) in (3600 + 10 + 300 + 60 - 600, 3600 + 10 + 300 + 61 - 600)


def test_real_client_objects_match_the_plan(tmp_path, monkeypatch):
    """Built offline by the real client: the function's spec, image and volumes are what the plan says."""
    from modal._image import _Image  # the spec holds the client's internal objects

    from launcher.backends.modal import app as modal_app

    monkeypatch.setenv("HF_TOKEN", "x")
    plan = _plan(tmp_path, gpu="A100-80GB:2", cpus=8, memory="64Gi", secrets=["HF_TOKEN"],
                 datapool="modal-volume://team/pool", modal={"secrets": ["hf"]})
    values = {**modal_app.slot_values(plan, plan.created), "snapshot_file": str(tmp_path / "snapshot.tar.gz")}
    app, fn = modal_app.build(fill(plan.request, values))
    assert app.name == plan.job_id
    got = fn._spec_  # what `modal shell` reads back: the function's definition as the client holds it
    assert got.gpus == "A100-80GB:2" and got.cpu == 8.0 and got.memory == 64 * 1024
    assert list(got.volumes) == ["/launcher-node/volume"] and got.volumes["/launcher-node/volume"].name == "team"
    assert len(got.secrets) == 2
    assert isinstance(got.image, _Image)
    assert len(got.mounts) == 1  # the snapshot rides as a mount, beside the image: no rebuild per code change


@pytest.mark.parametrize("args, expect", [
    (["--gpu", "A10G:8"], "Modal gives at most 4 A10G per container"),
    (["--gpu", "H100:16"], "impossible GPU count 16"),
    (["--max-runtime", "48h"], "over Modal's 24 h limit per attempt"),
    (["--max-runtime", "72h", "--max-restarts", "1", "--spot"], "--max-restarts 2"),
    (["--datapool", "modal-volume:///pool"], "name the volume"),
    (["--datapool", "gs://b/p"], "unsupported datapool URL"),
])
def test_refused_before_any_call(launch, project, launcher_env, args, expect):
    """No server is reachable (MODAL_SERVER_URL points nowhere): these never get that far."""
    (project / "train.py").write_text("print('never runs')\n")
    env = {**launcher_env, "MODAL_SERVER_URL": "http://127.0.0.1:9", "MODAL_TOKEN_ID": "ak-x",
           "MODAL_TOKEN_SECRET": "as-x"}
    datapool = [] if any(a == "--datapool" for a in args) else ["--datapool", "modal-volume://pool"]
    out = launch("--backend", "modal", *datapool, *args, "train.py", env=env)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], out.stderr
    assert not (Path(launcher_env["LAUNCHER_HOME"]) / "jobs.db").exists()


def test_modal_section_only_with_the_modal_backend(tmp_path):
    from launcher.job import build_job

    job = build_job(script="x.py", backend="local", modal={"secrets": ["hf"]})
    assert job.modal is None and job.unused_sections == ("modal",)
    assert build_job(script="x.py", backend="modal", modal={"secrets": ["hf"]}).modal.secrets == ["hf"]


def test_function_body_writes_the_agents_cancel_marker():
    """node.py cannot import launcher (it runs before the snapshot is unpacked): its marker name is checked here."""
    import inspect

    from launcher.backends.modal import node
    from launcher.spec import CANCEL_MARKER

    assert f'"{CANCEL_MARKER}"' in inspect.getsource(node.run_node)
