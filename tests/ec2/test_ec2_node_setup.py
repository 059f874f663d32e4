"""Node setup on EC2, its three ways, each run by the node simulator (nodesim.py) executing the user-data against a
moto server:

* `ec2.python`: an AMI whose Python already has the lock: no venv, no uv, no Docker;
* `ec2.image`: the lock's image with `docker run --gpus all` (a `docker` stub records its arguments and runs the
  command here, as if this Python were the image's);
* neither: the node builds the venv with the uv wheel the client put in the store (tools/uv-<sha>.whl, a presigned
  GET), pushes the packed venv after the job (a presigned PUT), and the next fresh instance unpacks it instead of
  installing. Packages come from a find-links folder made from this venv's installed ones (no network).
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launcher import nodesetup
from launcher.registry import Registry

from ..waiting import wait_for
from ..wheelhouse import agent_wheelhouse, repack, uv_wheel
from .ec2moto import GPU_AMI_PARAM, seed_ami_parameter
from .nodesim import NodeSimulator

BUCKET = "ec2-setup"
IMAGE = "registry.example.com/team/node:0123456789ab"
HELLO = "import os\nprint('hello from', os.environ['LAUNCH_BACKEND'], flush=True)\n"
# The agent on an s3 store also needs botocore (the instance role's credentials).
S3_DISTS = ("botocore", "jmespath", "python-dateutil", "six", "urllib3")
_wait = functools.partial(wait_for, timeout=90, poll=0.3)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ec2-setup-parts")
    wheels, lock = agent_wheelhouse(root / "wheels")
    import importlib.metadata

    for name in S3_DISTS:
        repack(name, wheels)
    lock += "".join(f"{importlib.metadata.distribution(n).metadata['Name'].lower()}=="
                    f"{importlib.metadata.distribution(n).version}\n" for n in S3_DISTS)
    bare = root / "bare"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    nodebin = root / "nodebin"
    nodebin.mkdir()
    for name in ("python3", "python3.11"):  # scripts, not symlinks: see tests/test_node_setup.py
        (nodebin / name).write_text(f'#!/bin/sh\nexec {bare / "bin" / "python3"} "$@"\n')
        (nodebin / name).chmod(0o755)
    return {"wheels": wheels, "lock": lock, "uv": uv_wheel(root / "uvwheel"), "nodebin": nodebin}


@pytest.fixture(scope="module")
def cloud(ec2_moto, tmp_path_factory, parts):
    """Hosts whose PATH has a bare Python 3.11 (so the venv path has to build) and whose uv and pip install from the
    wheelhouse only; the `python` and `image` tests name what they run on."""
    ec2_moto.client("s3").create_bucket(Bucket=BUCKET)
    seed_ami_parameter(ec2_moto.client("ec2"), ec2_moto.client("ssm"))
    scratch = tmp_path_factory.mktemp("hosts")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PIP_", "UV_", "PYTHON"))},
           **ec2_moto.aws_env(scratch), "PATH": f"{parts['nodebin']}:/usr/bin:/bin",
           "UV_OFFLINE": "1",
           "UV_DEFAULT_INDEX": "http://127.0.0.1:9/simple", "UV_FIND_LINKS": str(parts["wheels"]), "UV_NO_CONFIG": "1",
           "UV_PYTHON_DOWNLOADS": "never", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(parts["wheels"]),
           "PIP_CONFIG_FILE": os.devnull}
    with NodeSimulator(ec2_moto.endpoint, ec2_moto.region, scratch, env) as sim:
        yield sim


@pytest.fixture
def run(cloud, ec2_moto, ec2_env, project, tmp_path, parts):
    (project / "hello.py").write_text(HELLO)
    (project / "images").mkdir()
    (project / "images" / "requirements.lock").write_text(parts["lock"])
    seen: set[str] = set()

    def _run(ec2: dict, *flags: str):
        """A foreground launch; its output, record (the newest) and the simulated host's folder."""
        profile = tmp_path / "ec2.yaml"
        profile.write_text(yaml.safe_dump({"backend": "ec2", "ec2": {"region": "us-east-1", "ami": GPU_AMI_PARAM,
                                                                     **ec2}}))
        argv = [sys.executable, "-m", "launcher", "--profile", str(profile), "--gpu", "A10G", "--datapool",
                f"s3://{BUCKET}/{tmp_path.name}", "--endpoint-url", ec2_moto.endpoint, "--push-interval", "1s",
                *flags, "hello.py"]
        env = {**ec2_env, "LAUNCHER_UV_WHEEL": str(parts["uv"])}  # the client never downloads uv here
        out = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=300)
        new = [r for r in Registry(Path(ec2_env["LAUNCHER_HOME"])).list() if r.id not in seen]
        if not new:
            return out, None, None
        rec = new[0]
        seen.add(rec.id)
        node = cloud.node_dir(rec.handle["instance"]) if rec.handle.get("instance") else None
        return out, rec, node

    return _run


def _keys(ec2_moto, prefix: str) -> list[str]:
    pages = ec2_moto.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _setup_log(node: Path | None) -> str:
    return "".join(p.read_text() for p in node.glob("base/jobs/*/setup.log")) if node else ""


def test_an_ami_whose_python_has_the_lock_runs_the_job_as_it_is(run, ec2_moto, tmp_path):
    out, rec, node = run({"python": sys.executable})
    assert out.returncode == 0, out.stderr
    assert "hello from ec2" in out.stdout
    assert not list(node.glob("base/venvs/*/")) and not (node / "docker.log").exists()
    assert not [k for k in _keys(ec2_moto, tmp_path.name) if "/tools/" in k or "/venvs/" in k]  # nothing offered
    user_data = (node / "user-data.sh").read_text()
    assert "LAUNCHER_UV_SHA=''" in user_data and "IMAGE=''" in user_data


def test_the_locks_image_runs_the_agent_with_docker_and_every_gpu(run, ec2_moto, tmp_path):
    out, rec, node = run({"image": IMAGE})
    assert out.returncode == 0, out.stderr + _setup_log(node)
    assert "hello from ec2" in out.stdout
    calls = (node / "docker.log").read_text().splitlines()
    assert calls[0] == f"pull -q {IMAGE}", calls
    agent = [c for c in calls if c.startswith("run ") and "launcher.node.agent --spec" in c]
    assert agent, calls
    words = agent[0].split()
    assert words[:4] == ["run", "--rm", "--init", "-i"] and "--gpus all" in agent[0]
    base = str(node / "base")
    assert f"-v {base}:{base}" in agent[0] and words[words.index(IMAGE) + 1] == "python3"
    assert "-e PYTHONPATH" in agent[0]
    assert not list(node.glob("base/venvs/*/"))
    assert not [k for k in _keys(ec2_moto, tmp_path.name) if "/tools/" in k or "/venvs/" in k]
    result = json.loads(ec2_moto.client("s3").get_object(
        Bucket=BUCKET, Key=f"{tmp_path.name}/experiments/default/reports/jobs/{rec.id}/result.json")["Body"].read())
    assert result["reason"] == "exited" and result["exit_code"] == 0


def test_python_and_image_together_are_refused_in_one_line(run):
    out, rec, _ = run({"python": sys.executable, "image": IMAGE}, "--dry-run")
    assert out.returncode == 2 and rec is None, out.stderr
    assert out.stderr.count("\n") == 1 and "python and image" in out.stderr and "drop one" in out.stderr


def test_a_fresh_node_builds_with_uv_pushes_the_venv_and_the_next_unpacks_it(run, ec2_moto, tmp_path, parts,
                                                                              project):
    out, rec, node = run({})
    assert out.returncode == 0, out.stderr + _setup_log(node)
    assert "hello from ec2" in out.stdout
    log = _setup_log(node)
    assert "venv with uv on" in log and "built with uv" in log, log
    sha = nodesetup.sha256_file(parts["uv"])
    pack = nodesetup.venv_pack(project, gpu=True)
    assert f"{tmp_path.name}/tools/uv-{sha}.whl" in _keys(ec2_moto, tmp_path.name)
    # After the job, before the node goes: the pack reaches the store.
    assert _wait(lambda: "packed and pushed" in _setup_log(node)), _setup_log(node)
    assert f"{tmp_path.name}/venvs/{pack}.tar" in _keys(ec2_moto, tmp_path.name)

    # The next job on a fresh instance, same store: the venv comes unpacked, nothing is installed.
    out2, rec2, node2 = run({})
    assert out2.returncode == 0, out2.stderr + _setup_log(node2)
    assert node2 != node and "hello from ec2" in out2.stdout
    log2 = _setup_log(node2)
    assert f"venv {pack} unpacked from the store" in log2 and "built with" not in log2, log2


def test_user_data_over_16_kb_with_its_urls_goes_gzip_compressed(tmp_path):
    """Presigned URLs with a session token run over 1 KB each: the filled script is sent gzip-compressed (cloud-init
    unpacks it), and is byte for byte the script with its slots filled."""
    import gzip

    from launcher.backends.ec2 import request
    from launcher.backends.slots import fill, slots_in
    from launcher.job import Job
    from launcher.planner import make_plan

    (tmp_path / "train.py").write_text("print('hi')\n")
    job = Job(script="train.py", workdir=str(tmp_path), backend="ec2", gpu="A10G", datapool="s3://b/p",
              ec2={"region": "us-east-1"})
    plan = make_plan(job)
    url = "https://b.s3.amazonaws.com/p/x?X-Amz-Security-Token=" + "T" * 1400
    values = {name: url for name in slots_in(plan.request)} | {"uv_sha": "0" * 64, "image_id": "ami-0123456789abcdef0",
                                                               "security_group": "sg-0123456789abcdef0"}
    sent = request.sent(plan, values, "us-east-1a")
    script = fill(plan.request, {**values, "zone": "us-east-1a"})["RunInstances"]["UserData"]
    assert len(script.encode()) > request.USER_DATA_LIMIT
    assert isinstance(sent["UserData"], bytes) and len(sent["UserData"]) <= request.USER_DATA_LIMIT
    assert gzip.decompress(sent["UserData"]).decode() == script
    assert request.sent(plan, values, "us-east-1a")["UserData"] == sent["UserData"]  # the same bytes each try
