"""Every user mistake: one line naming the problem and the fix, exit 2, and nothing created anywhere."""
import pytest


def _assert_clean_refusal(out, expect, project, launcher_env):
    from pathlib import Path

    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert expect in lines[0], lines[0]
    home = Path(launcher_env["LAUNCHER_HOME"])
    assert not (home / "jobs.db").exists() and not (home / "jobs").exists(), "a job record was created"
    assert not (project / "datapool").exists(), "the datapool was touched"


@pytest.fixture
def script(project):
    (project / "train.py").write_text("print('ran')\n")
    return "train.py"


@pytest.mark.parametrize("args,expect", [
    (["missing.py"], "script not found: missing.py"),
    (["--backend", "lokal", "train.py"], "unknown backend 'lokal' (did you mean 'local'?)"),
    (["--backend", "k8s", "train.py"], "--backend k8s needs a datapool store that both this machine and the node "
                                       "reach (it is where logs and results meet): pass --datapool "
                                       "s3://my-bucket/pool or pvc://team-pool/datapool"),
    (["--gpu", "A1000", "train.py"], "unknown GPU 'A1000'"),
    (["--gpu", "H100:16", "train.py"], "impossible GPU count 16"),
    (["--env", "NOEQUALS", "train.py"], "bad --env 'NOEQUALS': use KEY=VALUE"),
    (["--env", "EXPERIMENT=x", "train.py"], "EXPERIMENT is set by launch; use --experiment"),
    (["--max-runtime", "2hours", "train.py"], "bad max-runtime '2hours'"),
    (["--memory", "lots", "train.py"], "bad memory 'lots'"),
    (["--datapool", "gs://bucket/x", "train.py"], "unsupported datapool URL"),
    (["--spot", "train.py"], "--spot needs a backend with spot capacity (ec2, k8s, modal)"),
    (["--max-restarts", "2", "train.py"], "--max-restarts relaunches a preempted job: --backend local is never"),
    (["--max-restarts", "-1", "train.py"], "max_restarts"),
    (["--secret", "LAUNCHER_TEST_UNSET_SECRET", "train.py"], "secret LAUNCHER_TEST_UNSET_SECRET is not set"),
    (["--profile", "nope.yaml", "train.py"], "profile not found: nope.yaml"),
    (["--bogus-flag", "train.py"], "No such option '--bogus-flag'; see `launch --help`"),
    (["logs", "no-such-job"], "unknown job 'no-such-job'"),
    (["down", "no-such-job"], "unknown job 'no-such-job'"),
    (["status", "no-such-job"], "unknown job 'no-such-job'"),
    (["down"], "give JOB ids, --all or --expired"),
    (["--script"], "--script needs the script's path, e.g. launch --script train.py --lr 3"),
    (["--backend", "ec2", "--key-name", "me", "--key-path", "no-such.pem", "--dry-run", "train.py"],
     "field 'ec2.key_path': no-such.pem: no such file; give the private key file of --key-name"),
])
def test_refused(args, expect, launch, script, project, launcher_env):
    _assert_clean_refusal(launch(*args), expect, project, launcher_env)


@pytest.mark.parametrize("profile,expect", [
    ("gpus: A100\n", "profile p.yaml: unknown field 'gpus' (did you mean 'gpu'?)"),
    ("spot: maybe\n", "profile p.yaml: field 'spot'"),
    ("max_runtime: forever\n", "profile p.yaml: field 'max_runtime': bad max-runtime 'forever'"),
    ("cpus: many\n", "profile p.yaml: field 'cpus'"),
    ("gpu: [A100\n", "profile p.yaml: not valid YAML"),
])
def test_bad_profile_refused(profile, expect, launch, script, project, launcher_env):
    (project / "p.yaml").write_text(profile)
    _assert_clean_refusal(launch("--profile", "p.yaml", script), expect, project, launcher_env)


def test_unknown_job_after_jobs_exist(launch, script, project):
    assert launch(script).returncode == 0
    out = launch("logs", "zzz-000000")
    assert out.returncode == 2 and out.stderr.startswith("error: unknown job 'zzz-000000'")


# The sweeper, asked about a cloud it cannot reach: no credentials anywhere (no env, no files, no instance metadata),
# and nothing on 127.0.0.1:9. Each is one line, never the cloud client's traceback.
_NO_CLOUD = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE":
             "/nonexistent", "MODAL_SERVER_URL": "http://127.0.0.1:9", "MODAL_CONFIG_PATH": "/nonexistent",
             "KUBECONFIG": "/nonexistent"}


@pytest.mark.parametrize("args,expect", [
    (["--backend", "ec2", "--region", "us-east-1", "--dry-run"], "no AWS credentials"),
    (["--backend", "modal"], "no usable Modal token"),
    (["--backend", "k8s"], "no usable kubeconfig ("),
    (["--region", "us-east-1"], "--region says where a backend looks: it goes with `launch down --expired --backend"),
    (["--backend", "k8s", "--region", "us-east-1"], "--region applies to --backend ec2, not k8s"),
])
def test_sweeper_without_a_cloud_to_ask(args, expect, project, launcher_env, tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in launcher_env.items() if not k.startswith(("AWS_", "MODAL_", "KUBE"))}
    out = subprocess.run([sys.executable, "-m", "launcher", "down", "--expired", *args], cwd=project,
                         env={**env, **_NO_CLOUD, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=120)
    _assert_clean_refusal(out, expect, project, launcher_env)
