"""`launch sync up|down` as a real subprocess against moto: round trip, dry run, bad input, SIGKILL mid-sync."""
from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import time

from .helpers import BUCKET, REPO, bucket_tree, read_tree, write_tree
from ..waiting import wait_for

URL = f"s3://{BUCKET}/pool"
_wait_for = functools.partial(wait_for, timeout=60, poll=0.005)  # catch an upload mid-way


def _env(aws_env, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DATAPOOL_ROOT", "LAUNCH_DATAPOOL")}
    env.update(aws_env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def launch_sync(args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "launcher", "sync", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_up_down_roundtrip_with_experiment(s3, aws_env, tmp_path):
    root = tmp_path / "pool"
    tree = {"experiments/demo/data/raw/sft/a.jsonl": b"a\n", "experiments/demo/model/base/w.bin": os.urandom(3000),
            "experiments/other/x.txt": b"not this one"}
    write_tree(root, tree)
    env = _env(aws_env, DATAPOOL_ROOT=str(root))  # --root defaults to $DATAPOOL_ROOT
    r = launch_sync(["up", "--experiment", "demo", "--datapool", URL, "--endpoint-url", s3.endpoint], env)
    assert r.returncode == 0, r.stderr
    assert "copied 2 files" in r.stdout
    assert sorted(bucket_tree(s3, "pool/")) == ["experiments/demo/data/raw/sft/a.jsonl",
                                               "experiments/demo/model/base/w.bin"]
    # The endpoint from AWS_ENDPOINT_URL works as well as --endpoint-url.
    r = launch_sync(["down", "--experiment", "demo", "--datapool", URL, "--root", str(tmp_path / "node"),
                     "--dry-run"], {**env, "AWS_ENDPOINT_URL": s3.endpoint})
    assert r.returncode == 0, r.stderr
    assert "would copy  data/raw/sft/a.jsonl" in r.stdout and not (tmp_path / "node").exists()
    r = launch_sync(["down", "--experiment", "demo", "--datapool", URL, "--root", str(tmp_path / "node")],
                    {**env, "AWS_ENDPOINT_URL": s3.endpoint})
    assert r.returncode == 0, r.stderr
    assert read_tree(tmp_path / "node") == {k: v for k, v in tree.items() if "/demo/" in k}


def _assert_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in r.stderr


def test_bad_input_one_line_exit_2_nothing_changed(s3, aws_env, tmp_path):
    root = tmp_path / "pool"
    write_tree(root, {"a.txt": b"a"})
    before = read_tree(root)
    env = _env(aws_env)
    ep = ["--endpoint-url", s3.endpoint, "--root", str(root)]

    _assert_error(launch_sync(["up", "--datapool", "gs://bucket/x", *ep], env), "gs://", "s3://bucket/prefix")
    _assert_error(launch_sync(["up", "--datapool", "s3://no-such-bucket/x", *ep], env), "no-such-bucket",
                  "does not exist")
    _assert_error(launch_sync(["down", "--datapool", "s3://no-such-bucket/x", "--endpoint-url", s3.endpoint,
                               "--root", str(tmp_path / "fresh")], env), "does not exist")
    assert not (tmp_path / "fresh").exists()
    no_creds = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    _assert_error(launch_sync(["up", "--datapool", URL, *ep], no_creds), "credentials")
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    _assert_error(launch_sync(["up", "--datapool", URL, "--endpoint-url", s3.endpoint, "--root", str(a_file)],
                              env), "is a file")
    _assert_error(launch_sync(["down", "--datapool", f"file://{a_file}", "--root", str(root)], env), "is a file")
    _assert_error(launch_sync(["up", "--datapool", "file://relative/dir", "--root", str(root)], env))
    _assert_error(launch_sync(["up", "--datapool", URL, *ep, "--experiment", "../x"], env), "--experiment")
    _assert_error(launch_sync(["up", *ep], env), "--datapool")
    assert read_tree(root) == before and bucket_tree(s3) == {}
    assert not (root / ".launcher").exists()

    # An include that matches nothing is a warning, not a failure, and moves nothing.
    r = launch_sync(["up", "--datapool", URL, *ep, "--include", "nope/*"], env)
    assert r.returncode == 0, r.stderr
    assert "warning: --include 'nope/*' matches no file" in r.stderr
    assert bucket_tree(s3) == {}


def test_sigkill_mid_upload_then_rerun_converges(s3, aws_env, tmp_path):
    root = tmp_path / "pool"
    tree = {f"data/small/{i:04d}.txt": os.urandom(200) for i in range(300)}
    tree.update({f"model/big{i}.bin": os.urandom(20 * 1024 * 1024) for i in range(2)})
    write_tree(root, tree)
    env = _env(aws_env)
    args = ["up", "--datapool", URL, "--endpoint-url", s3.endpoint, "--root", str(root), "--workers", "4"]
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "sync", *args], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: sum(1 for m, _, _ in s3.requests(settle=False) if m == "PUT") >= 20), \
            "sync never started"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    time.sleep(0.5)  # requests the server had fully received before the kill still land
    landed = bucket_tree(s3, "pool/")
    assert 0 < len(landed) < len(tree)  # killed midway
    for rel, data in landed.items():  # whatever is visible is whole
        assert tree[rel] == data, rel
    r = launch_sync(args, env)
    assert r.returncode == 0, r.stderr
    assert bucket_tree(s3, "pool/") == tree
    unchanged = int(re.search(r"(\d+) unchanged", r.stdout)[1])
    assert unchanged == len(landed)  # the re-run only sent what was missing


def _big_partial(tmp) -> bool:
    try:
        return any(os.stat(p).st_size > 1024 * 1024 for p in tmp.iterdir())
    except FileNotFoundError:  # the dir or a temp file came or went while we looked
        return False


def test_sigkill_mid_download_then_rerun_converges(s3, aws_env, tmp_path):
    src = tmp_path / "src"
    tree = {f"data/small/{i:04d}.txt": os.urandom(200) for i in range(200)}
    tree.update({f"model/big{i}.bin": os.urandom(20 * 1024 * 1024) for i in range(3)})
    write_tree(src, tree)
    env = _env(aws_env)
    assert launch_sync(["up", "--datapool", URL, "--endpoint-url", s3.endpoint, "--root", str(src)], env).returncode == 0
    dst = tmp_path / "dst"
    args = ["down", "--datapool", URL, "--endpoint-url", s3.endpoint, "--root", str(dst), "--workers", "4"]
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "sync", *args], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = dst / ".launcher" / "tmp"
    try:
        # Kill while a big file is half written into its temp name.
        assert _wait_for(lambda: _big_partial(tmp)), "no download in flight"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert any(tmp.iterdir())  # the partial exists only under .launcher/tmp ...
    got = read_tree(dst)  # ... never in the tree: every visible file is whole
    assert len(got) < len(tree)
    for rel, data in got.items():
        assert tree[rel] == data, rel
    r = launch_sync(args, env)
    assert r.returncode == 0, r.stderr
    assert read_tree(dst) == tree


def test_profile_credentials_and_unknown_profile(s3, aws_env, tmp_path):
    """No keys in the environment: credentials come from a named profile (botocore's chain)."""
    creds = tmp_path / "credentials"
    creds.write_text("[pool]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    env = {k: v for k, v in _env(aws_env).items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
    root = tmp_path / "pool"
    write_tree(root, {"a.txt": b"a"})
    args = ["up", "--datapool", URL, "--endpoint-url", s3.endpoint, "--root", str(root)]
    r = launch_sync([*args, "--aws-profile", "pool"], env)
    assert r.returncode == 0, r.stderr
    assert bucket_tree(s3, "pool/") == {"a.txt": b"a"}
    r = launch_sync([*args, "--aws-profile", "nope"], env)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "nope" in r.stderr, r.stderr


def test_launch_profile_names_the_store_and_experiment(s3, aws_env, tmp_path):
    root = tmp_path / "pool"
    write_tree(root, {"experiments/demo/data/a.txt": b"a", "experiments/other/b.txt": b"b"})
    profile = tmp_path / "p.yaml"
    profile.write_text(f"datapool: {URL}\nexperiment: demo\ngpu: A10G\n")
    r = launch_sync(["up", "--profile", str(profile), "--endpoint-url", s3.endpoint, "--root", str(root)],
                    _env(aws_env))
    assert r.returncode == 0, r.stderr
    assert bucket_tree(s3, "pool/") == {"experiments/demo/data/a.txt": b"a"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- not a mapping\n")
    r = launch_sync(["up", "--profile", str(bad), "--root", str(root)], _env(aws_env))
    assert r.returncode == 2 and r.stderr.startswith("error: profile") and len(r.stderr.splitlines()) == 1, r.stderr
