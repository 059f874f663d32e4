import pytest

from launcher.errors import UserError
from launcher.job import build_job
from launcher.profile import load_profile, merge
from launcher.units import parse_duration, parse_size


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400),
                                          ("1d", 86400), (45, 45)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["2x", "h", "-5", "0", "1h-", "soon", ""])
def test_bad_durations(text):
    with pytest.raises(UserError):
        parse_duration(text)


def test_sizes():
    assert parse_size("16Gi") == 16 * 1024**3
    assert parse_size("100GB") == 100 * 1000**3
    assert parse_size("512Mi") == 512 * 1024**2
    with pytest.raises(UserError):
        parse_size("lots")


def test_job_fields_and_defaults():
    job = build_job(script="runners/sft_run.py", args=["--config", "a.yaml"], gpu="a100:2", max_runtime="2h",
                    memory="32Gi", env={"A": "1"}, secrets=["HF_TOKEN"])
    assert job.gpu == "A100-40GB:2" and job.gpu_request.count == 2
    assert job.max_runtime == 7200 and job.memory_bytes == 32 * 1024**3
    assert job.run_name == "sft_run" and job.backend == "local" and job.experiment == "default"


@pytest.mark.parametrize("fields,expect", [
    ({"gpu": "A1000"}, "field 'gpu': unknown GPU 'A1000'"),
    ({"backend": "lokal"}, "unknown backend 'lokal' (did you mean 'local'?)"),
    ({"backend": "ssh"}, "--backend ssh needs a box: pass --host"),
    ({"backend": "ssh", "ssh": {"host": "box", "remote_dir": "../x"}}, "field 'ssh.remote_dir': bad remote_dir"),
    ({"gpu": "0"}, "impossible GPU count 0"),
    ({"max_runtime": "2 hours"}, "bad max-runtime"),
    ({"env": {"1BAD": "x"}}, "bad env name '1BAD'"),
    ({"env": {"EXPERIMENT": "x"}}, "EXPERIMENT is set by launch"),
    ({"datapool": "gs://b/p"}, "unsupported datapool URL"),
    ({"datapool": "file://relative/p"}, "absolute path"),
    ({"experiment": "a/b"}, "bad experiment name"),
    ({"num_nodes": 0}, "field 'num_nodes': input should be greater than or equal to 1"),
    ({"pending_timeout": "soon"}, "bad pending-timeout"),
    ({"spot": "maybe"}, "field 'spot'"),
    ({"gpus": "A100"}, "unknown field 'gpus' (did you mean 'gpu'?)"),
])
def test_bad_fields_name_the_problem(fields, expect):
    with pytest.raises(UserError) as e:
        build_job(script="x.py", **fields)
    assert expect in str(e.value)
    assert "\n" not in str(e.value)


def test_a_section_of_another_backend_is_set_aside_unvalidated():
    """One profile serves steps on several backends: a section the job's backend does not use is never validated
    (even a broken one), and the plan names it as unused."""
    from launcher.backends import entries

    sections = {name: {"no_such_field": 1} for name, e in entries().items() if e.options is not None}
    assert {"ssh", "ec2", "k8s", "modal"} <= set(sections)
    job = build_job(script="x.py", backend="local", **sections)
    assert job.unused_sections == tuple(sections)
    assert all(getattr(job, name) is None for name in sections)
    with pytest.raises(UserError, match="unknown field 'no_such_field' in the k8s: section; valid fields: context, "):
        build_job(script="x.py", backend="k8s", k8s={"no_such_field": 1})


def test_the_gpu_is_parsed_once_and_kept():
    job = build_job(script="x.py", gpu="a100:2")
    assert job.gpu == "A100-40GB:2" and job.gpu_request is job.gpu_request
    assert (job.gpu_request.type.name, job.gpu_request.count) == ("A100-40GB", 2)
    bare = build_job(script="x.py", gpu="2")
    assert bare.gpu == "2" and bare.gpu_request.type is None and bare.gpu_request.count == 2


def test_profile_and_overrides(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("gpu: A10G\nmax_runtime: 1h\nenv: {A: '1', B: '2'}\nsecrets: [HF_TOKEN]\n")
    fields = merge(load_profile(p), {"gpu": "H100", "env": {"B": "3"}, "secrets": ["WANDB_API_KEY"], "spot": None})
    job = build_job(script="x.py", **fields)
    assert job.gpu == "H100:1" and job.max_runtime == 3600
    assert job.env == {"A": "1", "B": "3"} and job.secrets == ["HF_TOKEN", "WANDB_API_KEY"]


def test_profile_not_a_mapping(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_profile(p)


def test_shipped_profiles_are_valid(repo_root):
    for path in sorted((repo_root / "configs" / "launch").glob("*.yaml")):
        build_job(str(path), script="x.py", **load_profile(path))
