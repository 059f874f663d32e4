"""The commander's keeper: who gets relaunched, where, and when not.

The policy runs against the real state file, with the launch and the look at a worker's job passed in (a launch
that raises the real CapacityError, a look that answers `unreachable`): what is decided is the keeper's own
logic. The end-to-end relaunch through `launcher.api` is `test_stack.py`."""
from __future__ import annotations

import pytest

from launcher.errors import CapacityError, UserError
from launcher.relay.keeper import Keeper, merged_job
from launcher.relay.state import RelayState


class Fleet:
    """Launches that succeed, fail for capacity or are refused, per backend entry; and each job's state."""

    def __init__(self, outcomes: dict[str, list]):
        self.outcomes = outcomes  # backend name -> list of outcomes ("ok" | exception), consumed in order
        self.states: dict[str, str] = {}
        self.launched: list[tuple[str, str]] = []

    def launch(self, fields: dict) -> tuple[str, dict]:
        backend = fields["backend"]
        outcome = self.outcomes[backend].pop(0) if self.outcomes.get(backend) else "ok"
        if isinstance(outcome, Exception):
            raise outcome
        job_id = f"{backend}-{len(self.launched)}"
        self.launched.append((backend, job_id))
        self.states[job_id] = "running"
        return job_id, {"id": job_id}

    def look(self, job_id: str) -> str:
        return self.states[job_id]


def config(*backends: str, **extra) -> dict:
    return {"job": {"script": "runners/mock_run.py", "env": {"A": "1"}}, "workers": 1,
            "backends": [{"backend": b} for b in backends], "backoff_s": 60, "backoff_cap_s": 600, **extra}


@pytest.fixture
def state(tmp_path) -> RelayState:
    return RelayState(tmp_path / "state.db")


def test_a_lost_worker_is_replaced_once_its_lease_expired_and_its_job_ended(state):
    fleet = Fleet({})
    keeper = Keeper(state, launch=fleet.launch, look=fleet.look)
    state.register("r", config("local"), ttl=10, now=0)
    assert keeper.look_after("r", 1) == ["local-0"]
    assert keeper.look_after("r", 2) == []  # one worker alive: nothing more
    state.acquire("r", "local-0", now=3)
    fleet.states["local-0"] = "failed"  # its machine died ...
    assert keeper.look_after("r", 5) == []  # ... but the lease is still live: wait
    assert keeper.look_after("r", 14) == ["local-1"]  # expired and ended: replaced
    assert [w["state"] for w in state.view("r", 14)["workers"]] == ["failed", "submitted"]


def test_an_unreachable_worker_is_never_relaunched_over(state):
    fleet = Fleet({})
    keeper = Keeper(state, launch=fleet.launch, look=fleet.look)
    state.register("r", config("ec2"), ttl=10, now=0)
    keeper.look_after("r", 1)
    state.acquire("r", "ec2-0", now=2)
    fleet.states["ec2-0"] = "unreachable"  # a status read that timed out says nothing about the job
    for now in (20, 100, 1000):
        assert keeper.look_after("r", now) == []
    assert fleet.launched == [("ec2", "ec2-0")]
    fleet.states["ec2-0"] = "preempted"  # once the backend answers that it ended, the run gets a worker
    assert keeper.look_after("r", 1001) == ["ec2-1"]


def test_capacity_error_falls_to_the_next_backend_and_backs_off(state):
    fleet = Fleet({"ec2": [CapacityError("no spot capacity in us-east-1a"), CapacityError("still none")],
                   "modal": [UserError("modal refuses the request")]})
    keeper = Keeper(state, launch=fleet.launch, look=fleet.look)
    state.register("r", config("ec2", "modal", "k8s"), ttl=10, now=0)
    assert keeper.look_after("r", 1) == ["k8s-0"]  # ec2: capacity; modal: refused; k8s: launched
    kinds = [e["kind"] for e in state.events("r")]
    assert "capacity" in kinds and "launch_refused" in kinds
    assert state.backoff("r", 2) == {0: 61.0}  # ec2 skipped for 60 s
    fleet.states["k8s-0"] = "failed"
    assert keeper.look_after("r", 30) == ["modal-1"]  # ec2 still backed off: not even asked
    fleet.states["modal-1"] = "failed"
    assert keeper.look_after("r", 62) == ["modal-2"]  # ec2 asked again: capacity again (120 s now); modal takes it
    assert state.backoff("r", 63) == {0: 182.0}
    fleet.states["modal-2"] = "failed"
    assert keeper.look_after("r", 200) == ["ec2-3"]  # capacity came back: the top of the list again
    assert state.backoff("r", 201) == {}


def test_a_start_that_fails_on_the_way_backs_off_like_capacity(state):
    fleet = Fleet({"ssh": [ConnectionResetError("connection to box lost during upload")]})
    keeper = Keeper(state, launch=fleet.launch, look=fleet.look)
    state.register("r", config("ssh", "local"), ttl=10, now=0)
    assert keeper.look_after("r", 1) == ["local-0"]
    failed = [e for e in state.events("r") if e["kind"] == "launch_failed"]
    assert failed and "connection to box lost" in failed[0]["error"] and state.backoff("r", 2) == {0: 61.0}


def test_a_finished_run_is_never_relaunched(state):
    fleet = Fleet({})
    keeper = Keeper(state, launch=fleet.launch, look=fleet.look)
    state.register("r", config("local"), ttl=10, now=0)
    keeper.look_after("r", 1)
    lease = state.acquire("r", "local-0", now=2)
    state.finish("r", "local-0", lease.epoch, now=3)
    fleet.states["local-0"] = "succeeded"
    assert keeper.look_after("r", 100) == []
    assert fleet.launched == [("local", "local-0")]
    assert state.view("r", 100)["workers"][0]["state"] == "succeeded"  # still looked at until it ended


def test_launches_per_hour_are_capped(state):
    fleet = Fleet({})
    keeper = Keeper(state, launch=fleet.launch, look=fleet.look)
    state.register("r", config("local", max_launches_per_hour=3), ttl=10, now=0)
    for i in range(5):
        keeper.look_after("r", 10 + i)
        for job_id in fleet.states:
            fleet.states[job_id] = "failed"  # every worker crashes at once
    assert len(fleet.launched) == 3
    assert any(e["kind"] == "launch_cap" for e in state.events("r"))
    keeper.look_after("r", 3700)  # an hour later: one more
    assert len(fleet.launched) == 4


def test_standbys_are_kept_while_the_run_is_held(state):
    fleet = Fleet({})
    keeper = Keeper(state, launch=fleet.launch, look=fleet.look)
    state.register("r", config("local", workers=2), ttl=10, now=0)
    keeper.look_after("r", 1)
    keeper.look_after("r", 2)
    assert len(fleet.launched) == 2
    state.acquire("r", "local-0", now=3)
    fleet.states["local-1"] = "failed"  # the standby died while the holder works on
    assert keeper.look_after("r", 4) == ["local-2"]


def test_a_backend_entry_overrides_the_template_section_by_section():
    template = {"script": "s.py", "env": {"A": "1"}, "ec2": {"region": "us-east-1", "ami": "x"}}
    entry = {"backend": "ec2", "spot": True, "ec2": {"region": "us-west-2"}}
    assert merged_job(template, entry) == {"script": "s.py", "env": {"A": "1"}, "backend": "ec2", "spot": True,
                                           "ec2": {"region": "us-west-2", "ami": "x"}}
