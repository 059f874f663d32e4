"""Issue 26 item 2, the launch path's round trips: a foreground ssh launch talks to the box over one SSH connection
(preflight, snapshot check and upload, start, log follow and the status looks are channels on one transport), and
a job without inputs makes no pull from the store. Counted on the real parts: the private sshd's log and the moto
server's request log."""
from __future__ import annotations

import re

import pytest

from ..backends.conftest import BUCKET, ssh_target
from ..motoserver import moto_with_bucket

SLOW = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(1)\n"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from moto_with_bucket(tmp_path_factory, BUCKET)


def _logins(sshd) -> int:
    return sshd.log.read_text(errors="replace").count("Accepted publickey")


def test_a_foreground_launch_uses_one_connection(tmp_path, sshd, moto):
    t = ssh_target(tmp_path, sshd, moto)
    # Long enough for the foreground to look at the job (a status look a second) while it streams the log.
    (t.project / "slow.py").write_text(SLOW)
    before = _logins(sshd)
    run = t.launch("slow.py")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("tick") == 3, run.stdout
    assert _logins(sshd) - before == 1, sshd.log_tail()
    # A second launch of the same tree in another process is its own connection (the snapshot is reused).
    again = t.launch("slow.py")
    assert again.returncode == 0, again.stderr
    assert _logins(sshd) - before == 2, sshd.log_tail()


def test_a_job_without_inputs_is_not_pulled_and_one_with_inputs_is(tmp_path, sshd, moto):
    t = ssh_target(tmp_path, sshd, moto)
    (t.project / "reads.py").write_text(
        "import os, pathlib\n"
        "p = pathlib.Path(os.environ['EXPERIMENT_DIR'], 'data', 'in.txt')\n"
        "print('input:', p.read_text() if p.exists() else None)\n")
    experiment = f"{tmp_path.name}/experiments/default/"

    whole = re.compile(rf"[?&]prefix={re.escape(experiment)}(&|$)")

    def full_listings() -> int:  # a pull or a push: the sync lists the whole experiment (the client's probe of
        # the store asks for one key only)
        return sum(1 for method, path, _ in moto.requests()
                   if method == "GET" and whole.search(path) and "max-keys=" not in path)

    # No periodic push during the run: every listing below is one the job's steps make, whatever the timing.
    quiet = ("--push-interval", "1h")
    moto.mark()
    run = t.launch(*quiet, "reads.py")
    assert run.returncode == 0, run.stderr
    assert "input: None" in run.stdout
    # setup.log pushed as the script starts, the final push, result.json: one listing each, and no pull.
    without = full_listings()
    assert without == 3, "\n".join(map(str, moto.requests()))

    moto.client().put_object(Bucket=BUCKET, Key=f"{experiment}data/in.txt", Body=b"hello")
    moto.mark()
    run = t.launch(*quiet, "reads.py")
    assert run.returncode == 0, run.stderr
    assert "input: hello" in run.stdout  # pulled before the script
    # The pull's listing, and setup.log pushed once more, before the pull ("pulling the datapool inputs").
    assert full_listings() == without + 2, moto.requests()
