"""Job ids are ASCII `[a-z0-9-]`, alphanumeric at both ends, at most 63 characters: one id must be valid as a k8s
name, an EC2 tag and a Modal app name, whatever the script or --name is called."""
from __future__ import annotations

import re

import pytest

from launcher.job import build_job
from launcher.plan import new_job_id

VALID = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@pytest.mark.parametrize("fields,stem", [
    ({"script": "my-script-ü.py"}, "my-script-u"),
    ({"script": "Café Crème run.py"}, "cafe-creme-run"),
    ({"script": "train  with   spaces .py"}, "train-with-spaces"),
    ({"script": "日本語.py"}, "job"),
    ({"script": "—✓—.py"}, "job"),
    ({"script": "--Run_2²--.py"}, "run-22"),
    ({"script": "ü.py", "name": "Eval_v2.1"}, "eval-v2-1"),
    ({"script": "a" * 39 + "-" + "b" * 30 + ".py"}, "a" * 39),
    ({"script": "Z" * 200 + ".py"}, "z" * 40),
    ({"script": "sft_run.py"}, "sft-run"),
])
def test_job_id_is_a_valid_name_everywhere(fields, stem):
    job = build_job(**fields)
    ids = {new_job_id(job) for _ in range(20)}
    assert len(ids) > 1  # a random suffix tells reruns apart
    for job_id in ids:
        assert job_id.isascii() and VALID.match(job_id), job_id
        assert len(job_id) <= 63, job_id
        got_stem, suffix = job_id.rsplit("-", 1)
        assert got_stem == stem and re.fullmatch(r"[0-9a-f]{6}", suffix), job_id
