"""One pipeline, two backends: a step on the local backend, the next on ssh (a real sshd on 127.0.0.1), handing off
only through the datapool's S3 store (a moto server). Prepare pushes the raw data; the ssh node pulls the local
step's output (STEP_INPUTS) and its own env file; a re-run skips both steps."""
from __future__ import annotations

import json
import sys

import boto3
import pytest

from ..motoserver import MOTO_ENV, start_moto
from ..sshd import start_sshd
from .conftest import script_config, write_project

BUCKET = "pipeline"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    moto = start_moto(tmp_path_factory.mktemp("moto"))
    moto.client().create_bucket(Bucket=BUCKET)
    sshd = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield moto, sshd
    sshd.stop()
    moto.stop()


def test_local_then_ssh_through_the_store(servers, proj, pl, tmp_path, monkeypatch):
    moto, sshd = servers
    for key, value in MOTO_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    node = tmp_path / "node"
    node.mkdir()
    steps = [{"id": "tokenize_cpt_0", "type": "tokenize_cpt", "enabled": False},
             {"id": "script_0", "type": "script"},
             {"id": "script_1", "type": "script", "backend": "ssh"}]
    configs = {"tokenize_cpt_0.py": "RAW = ['raw/a.txt', 'raw/b.jsonl']\n",
               "script_0.py": script_config("script_0", "red"),
               "script_1.py": script_config("script_1", "green", prev="script_0")}
    path = write_project(proj, steps, configs, {
        "DATAPOOL": f"s3://{BUCKET}/{tmp_path.name}", "ENDPOINT_URL": moto.endpoint, "PUSH_INTERVAL": "1s",
        "SECRETS": ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
        "SSH": {"host": sshd.target, "identity": str(sshd.identity), "known_hosts": str(sshd.known_hosts),
                "python": sys.executable, "remote_dir": str(node)}})
    code, out, err = pl("-c", str(path))
    assert code == 0, err[-4000:]
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("script_")}
    assert rows["script_0"][1:3] == ["local", "succeeded"] and rows["script_1"][1:3] == ["ssh", "succeeded"], out
    assert rows["script_1"][-1].startswith("script-1-")  # its job, whose log `launch logs JOB` shows
    assert "logs: launch logs JOB" in out  # and where the logs are, once, under the table

    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="us-east-1")
    prefix = f"{tmp_path.name}/experiments/exp"

    def get(rel):
        return s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{rel}")["Body"].read().decode()

    # The ssh node got script_0's output and its own env file only through the store.
    assert get("model/hf/script_1/word.txt") == "red+green\n"
    seen = json.loads(get("model/hf/script_1/seen.json"))
    assert seen["backend"] == "ssh" and seen["env_path"].startswith(str(node))
    assert json.loads(get("model/hf/script_0/seen.json"))["raw_rows"] == 5  # prepare pushed, the local job pulled
    assert json.loads(get("reports/pipeline/script_1.json"))["state"] == "succeeded"

    code, out, err = pl("-c", str(path))
    assert code == 0 and err.count(": up to date (job") == 2, err[-2000:]
    code, out, _ = pl("status", "-c", str(path))
    assert code == 0 and [line.split()[2] for line in out.splitlines()[1:4]] == ["disabled", "succeeded", "succeeded"]
