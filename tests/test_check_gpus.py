"""`launch check` against the stand-ins (moto for ec2 and s3, kmock for k8s, the fake Modal server) and `launch gpus`:
each backend declares its checks and its GPU table; the core prints them."""
from __future__ import annotations

import pytest

from launcher.gpus import CATALOG

from .motoserver import moto_with_bucket

BUCKET = "check-pool"


def _lines(out: str, backend: str) -> list[str]:
    """The check lines printed under `backend`'s heading."""
    lines, on = [], False
    for line in out.splitlines():
        if not line.startswith(" "):
            on = line.strip() == backend
        elif on:
            lines.append(line.strip())
    return lines


def _line(out: str, backend: str, name: str) -> str:
    found = [ln for ln in _lines(out, backend) if ln[2:].startswith(name)]
    assert len(found) == 1, out
    return found[0]


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from moto_with_bucket(tmp_path_factory, BUCKET)


def without_aws(launcher_env: dict[str, str]) -> dict[str, str | None]:
    """For `launch(env=...)`: every AWS_* variable the tests' environment holds, removed (None), so only what a test
    sets is seen."""
    return {k: None for k in launcher_env if k.startswith("AWS_")}


def _aws(moto, tmp_path) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": moto.endpoint, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")}


def test_ec2_without_credentials_shows_the_fix_in_one_line(launch, launcher_env, tmp_path):
    env = {**without_aws(launcher_env), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    r = launch("check", "--backend", "ec2", env=env, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    line = _line(r.stdout, "ec2", "credentials")
    assert line.startswith("✗") and "AWS_PROFILE" in line and "AWS_ACCESS_KEY_ID" in line
    assert _line(r.stdout, "ec2", "client library").startswith("✓")
    assert r.stdout.splitlines()[-1] == "ready: none (0 of 1)"


def test_ec2_and_its_store_on_moto_are_ready(launch, launcher_env, moto, tmp_path):
    env = {**without_aws(launcher_env), **_aws(moto, tmp_path)}
    r = launch("check", "-b", "ec2", "--datapool", f"s3://{BUCKET}/pool", env=env, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("client library", "credentials", "region", "account", "EC2 API", "datapool"):
        assert _line(r.stdout, "ec2", name).startswith("✓"), r.stdout
    assert "us-east-1" in _line(r.stdout, "ec2", "region")
    # A bucket that does not exist: the store line says so, exit 1.
    r = launch("check", "-b", "ec2", "--datapool", "s3://no-such-bucket-here/pool", env=env, timeout=90)
    assert r.returncode == 1 and _line(r.stdout, "ec2", "datapool").startswith("✗"), r.stdout
    assert "no-such-bucket-here" in _line(r.stdout, "ec2", "datapool")


def test_the_default_profile_says_where_to_look(launch, launcher_env, moto, tmp_path):
    """The default profile's datapool and ec2: section are what `launch check` checks."""
    config = tmp_path / "config.yaml"
    config.write_text(f"datapool: s3://{BUCKET}/pool\nec2: {{region: eu-west-1}}\n")
    env = {**without_aws(launcher_env), **_aws(moto, tmp_path), "LAUNCHER_PROFILE": str(config)}
    r = launch("check", "--backend", "ec2", env=env, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _line(r.stdout, "ec2", "region") == "✓ region          eu-west-1"
    assert f"s3://{BUCKET}/pool" in _line(r.stdout, "ec2", "datapool")


def test_local_is_ready_and_ssh_without_a_host_says_how(launch):
    r = launch("check", "--backend", "local")
    assert r.returncode == 0 and _line(r.stdout, "local", "python").startswith("✓"), r.stdout + r.stderr
    r = launch("check", "--backend", "local", "--backend", "ssh")
    assert r.returncode == 1
    line = _line(r.stdout, "ssh", "host")
    assert line.startswith("✗") and "--host" in line
    assert r.stdout.splitlines()[-1] == "ready: local (1 of 2)"


def test_flags_go_with_one_backend_and_names_are_checked(launch):
    r = launch("check", "--region", "eu-west-1")
    assert r.returncode == 2 and "--backend ec2" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    r = launch("check", "--backend", "nope")
    assert r.returncode == 2 and "unknown backend 'nope'" in r.stderr


def test_k8s_on_kmock(launch, launcher_env, tmp_path):
    from .k8s.cluster import NAMESPACE, KmockCluster

    (tmp_path / "kmock").mkdir()
    cluster = KmockCluster(tmp_path / "kmock")
    try:
        r = launch("check", "--backend", "k8s", env=cluster.env(), timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr
        assert _line(r.stdout, "k8s", "context").startswith("✓ context") and "kmock" in r.stdout
        assert f"can list Jobs in namespace {NAMESPACE}" in _line(r.stdout, "k8s", "API server")
        # A context the kubeconfig does not have: the fix, one line, exit 1.
        r = launch("check", "--backend", "k8s", "--context", "nope", env=cluster.env(), timeout=90)
        assert r.returncode == 1 and _line(r.stdout, "k8s", "context").startswith("✗"), r.stdout
    finally:
        cluster.stop()
    r = launch("check", "--backend", "k8s", env={"KUBECONFIG": str(tmp_path / "none")})
    assert r.returncode == 1 and "KUBECONFIG" in _line(r.stdout, "k8s", "context")


def test_modal_on_the_fake_server_and_without_a_token(launcher_env, tmp_path):
    import subprocess
    import sys

    from .modal.fakeserver import start_fake_modal

    no_token = {"HOME": str(tmp_path), "MODAL_CONFIG_PATH": str(tmp_path / "none.toml")}
    env = {k: v for k, v in launcher_env.items() if not k.startswith("MODAL_")}
    r = subprocess.run([sys.executable, "-m", "launcher", "check", "--backend", "modal"], env={**env, **no_token},
                       capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "modal token new" in _line(r.stdout, "modal", "token")
    fake = start_fake_modal(tmp_path / "fake")
    try:
        r = subprocess.run([sys.executable, "-m", "launcher", "check", "--backend", "modal"],
                           env={**env, **no_token, **fake.env}, capture_output=True, text=True, timeout=90,
                           cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert _line(r.stdout, "modal", "token").startswith("✓")
        assert fake.url in _line(r.stdout, "modal", "workspace")
    finally:
        fake.stop()


# -- launch gpus --------------------------------------------------------------------------------------------------

def test_gpus_table_fits_80_columns_and_names_every_catalog_gpu(launch):
    r = launch("gpus")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80, r.stdout
    assert lines[0].split()[:2] == ["GPU", "MEMORY"]
    for gpu in CATALOG.values():
        row = next(ln for ln in lines if ln.split()[:1] == [gpu.name])
        assert f"{gpu.memory_gb}GB" in row
    a10g = next(ln for ln in lines if ln.startswith("A10G "))
    assert "g5.xlarge" in a10g and "NVIDIA-A10G" in a10g  # each backend's own name for it


def test_gpus_of_one_backend_show_instances_and_prices(launch):
    r = launch("gpus", "--backend", "ec2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    assert lines[0].split() == ["GPU", "MEMORY", "COUNT", "MACHINE", "$/HOUR"]
    assert ["A10G", "24GB", "4", "g5.12xlarge", "$5.67"] in [ln.split() for ln in lines]
    assert ["H100", "80GB", "8", "p5.48xlarge", "$55.04"] in [ln.split() for ln in lines]
    assert any(ln.startswith("prices:") and "2025-10-01" in ln for ln in lines)
    r = launch("gpus", "--backend", "local")
    assert r.returncode == 0 and "not checked" in r.stdout
    r = launch("gpus", "--backend", "nope")
    assert r.returncode == 2 and "unknown backend" in r.stderr


def test_ssh_on_a_real_sshd(launch, tmp_path):
    """The default profile's ssh: section names the box; the login checks its host key (never adds it)."""
    import yaml

    from .sshd import start_sshd, write_wrong_known_hosts

    (tmp_path / "sshd").mkdir()
    sshd = start_sshd(tmp_path / "sshd")
    try:
        config = tmp_path / "config.yaml"
        section = {"host": sshd.target, "identity": str(sshd.identity), "known_hosts": str(sshd.known_hosts)}
        config.write_text(yaml.safe_dump({"ssh": section}))
        r = launch("check", "--backend", "ssh", env={"LAUNCHER_PROFILE": str(config)}, timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr
        assert _line(r.stdout, "ssh", "login").startswith("✓") and _line(r.stdout, "ssh", "python").startswith("✓")
        wrong = write_wrong_known_hosts(tmp_path / "wrong_known_hosts", sshd)
        config.write_text(yaml.safe_dump({"ssh": {**section, "known_hosts": str(wrong)}}))
        r = launch("check", "--backend", "ssh", env={"LAUNCHER_PROFILE": str(config)}, timeout=90)
        assert r.returncode == 1 and _line(r.stdout, "ssh", "login").startswith("✗"), r.stdout
    finally:
        sshd.stop()
