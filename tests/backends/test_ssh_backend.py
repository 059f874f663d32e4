"""What only the ssh backend does: host-key checking, secrets over SFTP, a setup failure on the box, and a cancel
that reaches the node through the store alone. The shared scenarios are in test_contract.py."""
from __future__ import annotations

import json
import time
from pathlib import Path

from launcher.jobstore import JobStore
from launcher.registry import Registry

from ..sshd import write_wrong_known_hosts
from .conftest import ssh_target
from ..motoserver import free_port
from .test_contract import SLOW, TICKS, wait_for

SHOW_SECRET = """
import os
print("secret length", len(os.environ["MY_TOKEN"]), flush=True)
"""


def no_jobs(t) -> bool:
    return t.cli("jobs").stdout.startswith("no jobs yet")


def test_unknown_host_key_is_refused_before_anything_starts(tmp_path, sshd, moto):
    t = ssh_target(tmp_path, sshd, moto, known_hosts=str(tmp_path / "empty_known_hosts"))
    (tmp_path / "empty_known_hosts").write_text("")
    (t.project / "slow.py").write_text(SLOW)
    out = t.launch("slow.py")
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and f"ssh-keyscan -p {sshd.port} 127.0.0.1" in out.stderr
    assert no_jobs(t) and not (tmp_path / "node" / "code").exists()


def test_changed_host_key_is_refused(tmp_path, sshd, moto):
    wrong = write_wrong_known_hosts(tmp_path / "wrong_known_hosts", sshd)
    t = ssh_target(tmp_path, sshd, moto, known_hosts=str(wrong))
    (t.project / "slow.py").write_text(SLOW)
    out = t.launch("slow.py")
    assert out.returncode == 2 and "ssh-keygen -R" in out.stderr, out.stderr
    assert no_jobs(t)


def test_remote_backend_refuses_a_store_its_node_cannot_reach(tmp_path, sshd, moto):
    # No --datapool at all is fine now: the box itself is the store (tests/ssh/test_sftp_store.py).
    t = ssh_target(tmp_path, sshd, moto)
    (t.project / "slow.py").write_text(SLOW)
    flags = [f for f in t.run_flags]
    i = flags.index("--datapool")
    for bad, words in ((f"file://{tmp_path}/pool", "cannot be reached"),
                       ("sftp://someone@elsewhere/~/pool", "must be on the job's box")):
        argv = flags[:i] + ([ "--datapool", bad] if bad else []) + flags[i + 2:]
        argv = [a for a in argv if a not in ("--endpoint-url", moto.endpoint)]
        out = t.cli(*argv, "slow.py")
        assert out.returncode == 2 and words in out.stderr, out.stderr
    assert no_jobs(t)


def test_secret_reaches_the_script_and_nothing_else(tmp_path, sshd, moto):
    t = ssh_target(tmp_path, sshd, moto)
    (t.project / "show.py").write_text(SHOW_SECRET)
    value = "s3cr3t-value-" + "x" * 20
    t.env["MY_TOKEN"] = value
    dry = t.launch("--secret", "MY_TOKEN", "--dry-run", "show.py")
    assert dry.returncode == 0 and value not in dry.stdout
    out = t.launch("--secret", "MY_TOKEN", "show.py")
    assert out.returncode == 0, out.stderr
    assert f"secret length {len(value)}" in out.stdout
    job_dir = next((tmp_path / "node" / "jobs").iterdir())
    assert not (job_dir / "secrets.env").exists()  # read once by the bootstrap, then deleted
    for f in job_dir.iterdir():
        assert value not in f.read_text(errors="replace"), f
    assert value not in json.dumps(Registry(Path(t.env["LAUNCHER_HOME"])).list()[0].handle)


def test_setup_failure_is_reported_with_its_reason(tmp_path, sshd, moto):
    t = ssh_target(tmp_path, sshd, moto, python="/nonexistent/python3")
    (t.project / "slow.py").write_text(SLOW)
    out = t.launch("slow.py")
    assert out.returncode == 1, out.stderr
    job_id = Registry(Path(t.env["LAUNCHER_HOME"])).list()[0].id
    status = t.cli("status", job_id).stdout
    assert status.startswith("failed") and "setup failed at step 'python'" in status, status
    assert "/nonexistent/python3" in status


def test_cancel_marker_in_the_store_alone_stops_the_job(tmp_path, sshd, moto, monkeypatch):
    """`launch down` from a machine that cannot reach the box still ends the job: the agent polls the store."""
    t = ssh_target(tmp_path, sshd, moto)
    (t.project / "slow.py").write_text(SLOW)
    marker = tmp_path / "signal.txt"
    job_id = t.launch("--detach", "--env", f"MARKER={marker}", "slow.py").stdout.strip()
    assert wait_for(lambda: "started" in t.cli("logs", job_id).stdout)
    store = JobStore(f"s3://contract/{tmp_path.name}", None, "default", job_id, endpoint_url=moto.endpoint)
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)  # for this process's JobStore; restored after the test
    store.write("cancel-requested", str(time.time()).encode())
    assert wait_for(lambda: store.exists("result.json"), timeout=60)
    result = json.loads(store.read("result.json"))
    assert result["reason"] == "cancelled" and marker.read_text() == "SIGTERM"
    assert t.cli("status", job_id).stdout.startswith("cancelled")


def test_store_answers_when_the_box_is_unreachable(tmp_path, sshd, moto, monkeypatch):
    """status and logs read the store first: a finished job is known even when the box cannot be reached."""
    t = ssh_target(tmp_path, sshd, moto)
    (t.project / "ticks.py").write_text(TICKS)
    job_id = t.launch("--detach", "ticks.py").stdout.strip()
    store = JobStore(f"s3://contract/{tmp_path.name}", None, "default", job_id, endpoint_url=moto.endpoint)
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)  # for this process's JobStore; restored after the test
    assert wait_for(lambda: store.exists("result.json"), timeout=60)
    reg = Registry(Path(t.env["LAUNCHER_HOME"]))
    handle = reg.get(job_id).handle
    handle["ssh"]["host"] = f"root@127.0.0.1:{free_port()}"  # nothing listens there now
    reg.update(job_id, handle=handle)
    assert t.cli("status", job_id).stdout.startswith("succeeded")
    logs = t.cli("logs", job_id)
    assert logs.returncode == 0 and "tick 7" in logs.stdout, logs.stderr


def test_an_unreachable_box_is_a_state_never_an_ending(tmp_path, sshd, moto):
    """A running job whose box cannot be reached reads `unreachable` with the reason; nothing records, releases or
    relaunches it (it is not lost), and once the box answers again the job is followed to its end."""
    t = ssh_target(tmp_path, sshd, moto)
    (t.project / "slow.py").write_text(SLOW)
    marker = tmp_path / "signal.txt"
    job_id = t.launch("--detach", "--env", f"MARKER={marker}", "slow.py").stdout.strip()
    assert wait_for(lambda: "started" in t.cli("logs", job_id).stdout)
    reg = Registry(Path(t.env["LAUNCHER_HOME"]))
    handle = reg.get(job_id).handle
    real = handle["ssh"]["host"]
    handle["ssh"]["host"] = f"root@127.0.0.1:{free_port()}"  # nothing listens there now
    reg.update(job_id, handle=handle)
    status = t.cli("status", job_id)
    assert status.returncode == 0 and status.stdout.startswith("running (unreachable since "), status.stdout
    assert "connection refused" in status.stdout
    jobs = t.cli("jobs")
    assert jobs.returncode == 0 and "unreachable" in jobs.stdout
    assert reg.get(job_id).state == "running"  # recorded as it was: unreachable is never recorded as an end
    handle["ssh"]["host"] = real
    reg.update(job_id, handle=handle)
    assert t.cli("status", job_id).stdout.splitlines()[0] == "running"
    assert "unreachable" not in t.cli("jobs").stdout
    assert t.cli("down", job_id).stdout.strip() == f"{job_id}: cancelled"


def test_an_unchanged_tree_is_uploaded_once(tmp_path, sshd, moto):
    t = ssh_target(tmp_path, sshd, moto)
    (t.project / "ticks.py").write_text(TICKS)
    assert t.launch("ticks.py").returncode == 0
    (tar,) = (tmp_path / "node" / "code").glob("*.tar.gz")
    first = tar.stat()
    assert t.launch("ticks.py").returncode == 0
    assert list((tmp_path / "node" / "code").glob("*.tar.gz")) == [tar]
    assert (tar.stat().st_ino, tar.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # not sent again
    (t.project / "ticks.py").write_text(TICKS + "\n# changed\n")
    assert t.launch("ticks.py").returncode == 0
    assert len(list((tmp_path / "node" / "code").glob("*.tar.gz"))) == 2


def test_a_same_size_corrupt_tarball_on_the_box_is_uploaded_again(tmp_path, sshd, moto):
    import shutil

    t = ssh_target(tmp_path, sshd, moto)
    (t.project / "hi.py").write_text('print("hi from the box", flush=True)\n')
    first = t.launch("hi.py")
    assert first.returncode == 0, first.stderr
    code = tmp_path / "node" / "code"
    tar = next(code.glob("*.tar.gz"))
    sha = tar.name.removesuffix(".tar.gz")
    assert (code / sha / ".launcher-unpacked").is_file()  # stamped whole by the bootstrap
    good = tar.read_bytes()
    bad = bytearray(good)
    for i in range(len(bad) // 2, len(bad) // 2 + 16):
        bad[i] ^= 0xFF
    tar.write_bytes(bytes(bad))  # the same size: a size check alone would keep it
    shutil.rmtree(code / sha)  # and no unpacked copy to fall back on
    again = t.launch("hi.py")
    assert again.returncode == 0, again.stderr
    assert "hi from the box" in again.stdout
    assert tar.read_bytes() == good  # uploaded anew, never unpacked from the bad bytes
