"""The node's side of the launch's progress: the agent copies setup.log (the bootstrap's steps, then its own) and
agent.log into the job's store folder, so they outlive the node, a setup failure's included. The bootstrap runs
here as a remote node would run it (tests/test_bootstrap.py's `node`)."""
from __future__ import annotations

from .test_bootstrap import HELLO, _corrupt_same_size, node  # noqa: F401 - node: the fixture


def store_folder(n):
    return n.store_result().parent


def test_a_node_brings_its_setup_log_and_agent_log_to_the_store(node, tmp_path):
    n = node("hello.py", HELLO, env={"RAN": str(tmp_path / "ran.txt")})
    n.place_snapshot()
    n.start()
    rc, out = n.finish()
    assert rc == 0, out
    setup = (store_folder(n) / "setup.log").read_text()
    steps = [line.split("] ", 1)[1] for line in setup.splitlines()]
    assert steps[0].startswith("arming the dead-man switch"), setup  # the bootstrap's first step, from the start
    for step in ("python", "agent", "pulling the datapool inputs", "starting the script",
                 "script ended (0); pushing the outputs"):
        assert step in steps, (step, setup)
    assert steps.index("agent") < steps.index("pulling the datapool inputs") < steps.index("starting the script")
    assert "hello from the node" in (store_folder(n) / "agent.log").read_text()


def test_a_setup_failure_still_brings_setup_log_to_the_store(node, tmp_path):
    n = node("hello.py", HELLO, env={"RAN": str(tmp_path / "ran.txt")})
    _corrupt_same_size(n.place_snapshot())
    n.start()
    rc, out = n.finish()
    assert rc == 1, out
    setup = (store_folder(n) / "setup.log").read_text()
    assert "step snapshot failed" in setup and "] step snapshot failed: reporting it" in setup, setup
    assert "pulling the datapool inputs" not in setup  # the agent never ran the job
