"""How a launch's phases are printed (launcher/progress.py): plain lines when stderr is not a terminal, rich status
lines on one, nothing unless a launch asked, nothing after the job's first output. The phases of real launches on
each remote backend: tests/backends/test_launch_progress.py."""
from __future__ import annotations

import io
import subprocess
import sys

from launcher import progress
from launcher.progress import PLAIN_LINE, Reporter, phase_names


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_the_stream_is_not_a_terminal():
    out, clock = io.StringIO(), Clock()
    shown = Reporter(out, clock=clock)
    shown.report(progress.SNAPSHOT, "abc, 3 files, 1.0 KiB")
    clock.now += 2.25
    shown.report(progress.REQUEST_SENT, "instance i-1")
    shown.report(progress.REQUEST_SENT, "instance i-1")  # said once
    clock.now += 10
    shown.report(progress.FIRST_LOG_LINE)
    shown.report(progress.NODE_SETUP, "late")  # after the output began: nothing
    assert out.getvalue().splitlines() == ["[launcher] +0.0s snapshot: abc, 3 files, 1.0 KiB",
                                           "[launcher] +2.2s request sent: instance i-1",
                                           "[launcher] +12.2s first log line"]
    assert all(PLAIN_LINE.match(line) for line in out.getvalue().splitlines())
    assert phase_names(out.getvalue()) == ["snapshot", "request sent", "first log line"]


def test_rich_status_lines_on_a_terminal(capsys):
    out = Tty()
    shown = Reporter(out)
    assert shown.rich
    shown.report(progress.SNAPSHOT, "already in store")
    shown.report(progress.REQUEST_SENT, "instance i-1")
    print("job-1")  # the job id while the status line runs: a piped stdout keeps it (JOB=$(launch --detach ...))
    shown.report(progress.FIRST_LOG_LINE)
    text = out.getvalue()
    assert "✓" in text and "snapshot: already in store" in text and "first log line" in text
    assert text.index("snapshot: already") < text.index("request sent: instance i-1") < text.index("first log line")
    assert not any(PLAIN_LINE.match(line) for line in text.splitlines())
    assert shown._status is None  # the spinner is gone before the job's output prints
    assert capsys.readouterr().out == "job-1\n" and "job-1" not in text


def test_nothing_is_printed_unless_a_launch_asked(capsys):
    progress.report(progress.SNAPSHOT, "anything")  # the SDK's default: no reporter
    with progress.showing(False):
        progress.report(progress.SNAPSHOT, "anything")
    out = io.StringIO()
    with progress.showing(Reporter(out)) as shown:
        progress.report(progress.SNAPSHOT, "seen")
    progress.report(progress.REQUEST_SENT, "after the launch")
    assert shown.seen == [("snapshot", "seen")] and progress.current() is None
    assert capsys.readouterr() == ("", "")


def test_the_backend_view_is_the_wait_until_the_node_speaks():
    out = io.StringIO()
    shown = Reporter(out)
    shown.job_id = "job-1"
    shown.observed("job-2", "pending", "someone else's job")
    shown.observed("job-1", "pending", None)  # no words from the backend: nothing to show
    shown.observed("job-1", "pending", "instance i-1 pending")
    shown.observed("job-1", "failed", "a final state is not a wait")
    data = b"[bootstrap 10:00:00] python\n[bootstrap 10:00:01] ven"
    shown.follow_node(lambda offset: data[offset:])
    shown.node_lines()
    data += b"v from images/requirements.lock\n[agent 10:00:09] pulling the datapool inputs\n"
    shown.node_lines()
    shown.observed("job-1", "running", "instance i-1 running")  # the node is up: no more waiting
    assert shown.seen == [("waiting for the machine", "instance i-1 pending"), ("node setup", "python"),
                          ("node setup", "venv from images/requirements.lock"),
                          ("node setup", "pulling the datapool inputs")]


def test_the_first_output_ends_the_phases_after_the_setup_lines_left(tmp_path):
    shown = Reporter(io.StringIO())
    shown.follow_node(lambda offset: b"[agent 10:00:09] starting the script\n"[offset:])
    chunks = list(shown.until_first_output(iter([b"", b"hello\n", b"more\n"])))
    assert chunks == [b"", b"hello\n", b"more\n"]  # the output itself unchanged
    assert [p for p, _ in shown.seen] == ["node setup", "first log line"]


def test_a_store_that_does_not_answer_costs_a_look_not_the_launch():
    shown = Reporter(io.StringIO())

    def down(offset):
        raise OSError("connection refused")

    shown.follow_node(down)
    shown.node_lines()
    assert shown.seen == []


def test_a_local_launch_prints_no_phases(tmp_path, launcher_env):
    (tmp_path / "hello.py").write_text("print('hi')\n")
    out = subprocess.run([sys.executable, "-m", "launcher", "hello.py"], cwd=tmp_path, env=launcher_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hi\n"
    assert phase_names(out.stderr) == [], out.stderr
