"""The box itself as the datapool store (`sftp://`): `--backend ssh` with no --datapool, `launch sync up/down`
against it, and `launch sync down --from-job`. A real OpenSSH sshd on 127.0.0.1 (this machine is the box, so the
box's files are read here directly to check what landed)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from launcher.registry import Registry

from ..backends.conftest import Target, base_env, ssh_profile
from ..motoserver import free_port

TRAIN = """
import os, pathlib
ck = pathlib.Path(os.environ["CHECKPOINT_DIR"])
ck.mkdir(parents=True, exist_ok=True)
(ck / "step-1.bin").write_bytes(bytes(range(256)) * 4000)
print("trained to", ck.name, flush=True)
"""


def box_target(tmp_path: Path, sshd, **ssh_overrides) -> Target:
    """An ssh launch with no --datapool: the profile names the box and nothing else."""
    project, profile = ssh_profile(tmp_path, sshd, **ssh_overrides)
    env = base_env(tmp_path)
    env.pop("LAUNCHER_DATAPOOL", None)
    env["LAUNCHER_PROFILE"] = ""  # the user's own default profile stays out
    return Target("ssh", project, env, ["--profile", str(profile), "--push-interval", "1s"])


def store_url(sshd, folder: Path, known_hosts: Path | None = None) -> str:
    return (f"sftp://{sshd.target}{folder}?identity={sshd.identity}"
            f"&known_hosts={known_hosts or sshd.known_hosts}")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha(p) for p in sorted(root.rglob("*"))
            if p.is_file() and ".launcher" not in p.relative_to(root).parts}


def one_job(t: Target) -> str:
    jobs = Registry(Path(t.env["LAUNCHER_HOME"])).list()
    assert len(jobs) == 1, jobs
    return jobs[0].id


def test_ssh_with_no_datapool_uses_the_box_as_the_store(tmp_path, sshd):
    t = box_target(tmp_path, sshd)
    (t.project / "train.py").write_text(TRAIN)
    dry = t.launch("--dry-run", "-o", "json", "train.py")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["datapool"]["store"].startswith(f"sftp://{sshd.target}{tmp_path}/node/pool?identity=")
    assert plan["agent_spec"]["store_url"] is None and plan["datapool"]["push"] == []  # the node's root is the store

    out = t.launch("train.py")
    assert out.returncode == 0, out.stderr
    assert "trained to" in out.stdout
    job = one_job(t)
    pool = tmp_path / "node" / "pool"
    exp = pool / "experiments" / "default"
    result = json.loads((exp / "reports" / "jobs" / job / "result.json").read_text())
    assert result["exit_code"] == 0
    [ckpt] = list((exp / "model").rglob("step-1.bin"))
    assert ckpt.read_bytes() == bytes(range(256)) * 4000
    assert not (tmp_path / "node" / "datapool").exists()  # nothing was synced: the agent wrote into the store

    status = t.cli("status", job)
    assert status.returncode == 0 and status.stdout.startswith("succeeded (exit code 0)"), status.stdout + status.stderr
    assert "?identity" not in status.stdout  # the log's location is the store's path, without the key files
    logs = t.cli("logs", job)
    assert logs.returncode == 0 and "trained to" in logs.stdout, logs.stderr

    # The job's outputs come back here, verified, and a second run moves nothing.
    local = tmp_path / "local"
    down = t.cli("sync", "down", "--from-job", job, "--root", str(local))
    assert down.returncode == 0, down.stderr
    [back] = list((local / "experiments" / "default" / "model").rglob("step-1.bin"))
    assert sha(back) == sha(ckpt) and back.relative_to(local) == ckpt.relative_to(pool)
    assert (local / "experiments" / "default" / "reports" / "jobs" / job / "result.json").is_file()
    again = t.cli("sync", "down", "--from-job", job, "--root", str(local))
    assert again.returncode == 0 and "copied 0 files" in again.stdout + again.stderr, again.stdout + again.stderr

    # --from-job takes the job's own store and experiment.
    bad = t.cli("sync", "down", "--from-job", job, "--experiment", "other", "--root", str(local))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "drop --experiment" in bad.stderr


def test_sftp_store_on_another_box_is_refused_for_ssh(tmp_path, sshd):
    t = box_target(tmp_path, sshd)
    (t.project / "train.py").write_text(TRAIN)
    out = t.launch("--datapool", "sftp://someone@other-box/~/pool", "train.py")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "must be on the job's box" in out.stderr, out.stderr
    assert not Registry(Path(t.env["LAUNCHER_HOME"])).list()


def _seed(root: Path) -> dict[str, bytes]:
    files = {"data/raw/sft/a.jsonl": b'{"q": 1}\n' * 100, "data/raw/sft/weird name.txt": b"x",
             "model/base/weights.bin": os.urandom(9 * 1024 * 1024 + 17),  # more than one 8 MiB part
             "reports/empty.txt": b""}
    for rel, data in files.items():
        p = root / "experiments" / "demo" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def sync(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher", "sync", *args], env=env, capture_output=True, text=True,
                          timeout=180)


def test_sync_up_and_down_over_sftp_round_trip(tmp_path, sshd):
    env = base_env(tmp_path)
    env["LAUNCHER_PROFILE"] = ""
    box = tmp_path / "box" / "pool"
    url = store_url(sshd, box)
    up_root, down_root = tmp_path / "up", tmp_path / "down"
    files = _seed(up_root)

    up = sync(env, "up", "--datapool", url, "--root", str(up_root), "--experiment", "demo")
    assert up.returncode == 0, up.stderr
    assert "copied 4 files" in up.stdout + up.stderr
    assert tree(box) == tree(up_root)
    assert not list((box / ".launcher" / "tmp").iterdir())  # no part file left behind
    again = sync(env, "up", "--datapool", url, "--root", str(up_root), "--experiment", "demo")
    assert again.returncode == 0 and "copied 0 files" in again.stdout + again.stderr and "4 unchanged" in again.stdout

    down = sync(env, "down", "--datapool", url, "--root", str(down_root), "--experiment", "demo")
    assert down.returncode == 0, down.stderr
    assert tree(down_root) == tree(up_root)
    again = sync(env, "down", "--datapool", url, "--root", str(down_root), "--experiment", "demo")
    assert again.returncode == 0 and "copied 0 files" in again.stdout + again.stderr, again.stdout

    # Same size, other bytes, changed on the box by something else: the box's hash cache notices (mtime) and the
    # changed file comes down, verified.
    changed = box / "experiments" / "demo" / "data" / "raw" / "sft" / "a.jsonl"
    changed.write_bytes(b'{"q": 2}\n' * 100)
    os.utime(changed, (time.time() + 5, time.time() + 5))
    down = sync(env, "down", "--datapool", url, "--root", str(down_root), "--experiment", "demo")
    assert down.returncode == 0 and "copied 1 files" in down.stdout + down.stderr, down.stdout + down.stderr
    assert (down_root / "experiments" / "demo" / "data" / "raw" / "sft" / "a.jsonl").read_bytes() == \
        b'{"q": 2}\n' * 100

    # --delete mirrors: a file gone here goes on the box too.
    (up_root / "experiments" / "demo" / "reports" / "empty.txt").unlink()
    up = sync(env, "up", "--datapool", url, "--root", str(up_root), "--experiment", "demo", "--delete")
    assert up.returncode == 0, up.stderr
    assert not (box / "experiments" / "demo" / "reports" / "empty.txt").exists()
    assert files  # seeded


def test_bad_sftp_input_is_one_line_and_writes_nothing(tmp_path, sshd):
    env = base_env(tmp_path)
    env["LAUNCHER_PROFILE"] = ""
    root = tmp_path / "local"
    empty_kh = tmp_path / "empty_known_hosts"
    empty_kh.write_text("")
    dead_port = free_port()
    cases = [
        ("sftp://somebox", "name a folder"),
        ("sftp://bad host/~/pool", "bad ssh target"),
        (f"sftp://{sshd.target}/~/pool?colour=red", "identity=FILE"),
        (store_url(sshd, tmp_path / "box", known_hosts=empty_kh), "ssh-keyscan"),
        (f"sftp://{sshd.user}@127.0.0.1:{dead_port}/~/pool?identity={sshd.identity}&known_hosts={sshd.known_hosts}",
         "cannot connect"),
    ]
    for url, words in cases:
        out = sync(env, "down", "--datapool", url, "--root", str(root), "--experiment", "demo")
        assert out.returncode == 2, (url, out.stderr)
        assert out.stderr.count("\n") == 1 and words in out.stderr and "Traceback" not in out.stderr, (url, out.stderr)
        assert not root.exists(), url  # nothing written here
    assert not (tmp_path / "box").exists()  # nor there


def test_launch_check_names_the_box_as_the_default_store(tmp_path, sshd):
    t = box_target(tmp_path, sshd)
    env = {"LAUNCHER_PROFILE": t.run_flags[1]}  # the ssh: section as the default profile: check reads it there
    out = t.cli("check", "-b", "ssh", env=env)
    pool = f"sftp://{sshd.target}{tmp_path}/node/pool"
    assert "default store" in out.stdout and pool in out.stdout and "created on first launch" in out.stdout, \
        out.stdout + out.stderr
    assert not (tmp_path / "node" / "pool").exists()  # check only looks
    (tmp_path / "node" / "pool").mkdir()
    out = t.cli("check", "-b", "ssh", env=env)
    assert pool in out.stdout and "(there;" in out.stdout, out.stdout + out.stderr


LOOP = """
import time
print("looping", flush=True)
while True:
    time.sleep(0.2)
"""


def test_a_detached_job_on_the_box_store_follows_and_goes_down(tmp_path, sshd):
    t = box_target(tmp_path, sshd)
    (t.project / "loop.py").write_text(LOOP)
    out = t.launch("--detach", "loop.py")
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().splitlines()[-1]
    follow = subprocess.Popen([sys.executable, "-m", "launcher", "logs", job, "-f"], cwd=t.project, env=t.env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout.readline().strip() == "looping"
        down = t.cli("down", job)
        assert down.returncode == 0, down.stdout + down.stderr
        follow.wait(timeout=60)
    finally:
        follow.kill()
    status = t.cli("status", job)
    assert status.stdout.startswith("cancelled"), status.stdout + status.stderr
    marker = tmp_path / "node" / "pool" / "experiments" / "default" / "reports" / "jobs" / job / "cancel-requested"
    assert marker.exists()  # `down` wrote it into the store over SFTP
