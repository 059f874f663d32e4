"""Lease fencing through a real commander's HTTP API: one holder, epochs that only grow, stale epochs refused,
the pointer a compare-and-set, a finished run closed, racing acquirers, and state that survives kill -9."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from launcher.relay.client import RelayClient, RelayRefused

from .commander import Commander

RUN = "state-run"


def register(commander: Commander, run: str = RUN, ttl: float = 60) -> RelayClient:
    c = commander.client()
    c.register(run, {}, ttl)  # no backends: the keeper launches nothing, the test plays every worker
    return c


def refused(call, *args) -> RelayRefused:
    with pytest.raises(RelayRefused) as err:
        call(*args)
    return err.value


def wait_expired(c: RelayClient, run: str, timeout: float = 15) -> dict:
    """Polls until the lease has lapsed on the commander's clock (no fixed sleep)."""
    end = time.time() + timeout
    while True:
        view = c.run(run)
        if view["holder"] is None:
            return view
        assert time.time() < end, f"the lease never expired: {view}"
        time.sleep(0.05)


def pointer(c: RelayClient, run: str = RUN) -> dict | None:
    ck = c.run(run)["checkpoint"]
    return ck and {k: v for k, v in ck.items() if k != "age_s"}


def test_acquire_grants_one_lease_and_the_holder_gets_its_own_back(commander):
    c = register(commander)
    a = c.acquire(RUN, "A")
    assert (a["worker"], a["epoch"], a["checkpoint"]) == ("A", 1, None)
    err = refused(c.acquire, RUN, "B")
    assert err.status == 409
    assert err.data["holder"] == "A"
    assert "held by A" in err.message
    again = c.acquire(RUN, "A")  # a retry after a lost answer
    assert again["epoch"] == 1
    view = c.run(RUN)
    assert (view["holder"], view["epoch"], view["handoffs"]) == ("A", 1, 0)
    assert refused(c.acquire, "no-such-run", "A").status == 404


def test_epoch_only_grows_across_handoffs_and_stale_epochs_are_fenced(commander):
    c = register(commander, ttl=1)
    assert c.acquire(RUN, "A")["epoch"] == 1
    c.commit(RUN, "A", 1, "ck-a", 10)
    wait_expired(c, RUN)
    b = c.acquire(RUN, "B")
    assert b["epoch"] == 2
    assert b["checkpoint"] == {"path": "ck-a", "step": 10, "epoch": 1}  # what B seeds its folder with
    assert c.run(RUN)["handoffs"] == 1

    # A, paused past its TTL, comes back with epoch 1: every call is refused and nothing moves.
    for call, args in ((c.renew, (RUN, "A", 1)), (c.commit, (RUN, "A", 1, "ck-stale", 11)),
                       (c.release, (RUN, "A", 1)), (c.finish, (RUN, "A", 1))):
        err = refused(call, *args)
        assert err.status == 409, (call.__name__, err.message)
        assert "stale epoch 1" in err.message
        assert err.data["epoch"] == 2
    view = c.run(RUN)
    assert view["epoch"] == 2 and not view["finished"]
    assert (view["holder"] or view["expired_holder"]) == "B"
    assert pointer(c) == {"path": "ck-a", "step": 10, "epoch": 1}
    kinds = [e["kind"] for e in c.run(RUN, events=100)["events"]]
    for kind in ("renew_refused", "commit_refused", "release_refused", "finish_refused"):
        assert kind in kinds

    # A future epoch is no better than a past one.
    assert refused(c.commit, RUN, "B", 3, "ck-future", 12).status == 409
    assert pointer(c)["path"] == "ck-a"

    # A third hand-off: the epoch keeps growing, each grant counted once.
    wait_expired(c, RUN)
    assert c.acquire(RUN, "C")["epoch"] == 3
    assert c.acquire(RUN, "C")["epoch"] == 3
    view = c.run(RUN)
    assert (view["epoch"], view["holder"], view["handoffs"]) == (3, "C", 2)
    epochs = [e["epoch"] for e in view["events"] if e["kind"] == "acquired"]
    assert epochs == [1, 2, 3]


def test_commit_under_the_current_epoch_moves_the_pointer(commander):
    c = register(commander)
    assert pointer(c) is None
    c.acquire(RUN, "A")
    assert c.commit(RUN, "A", 1, "ck-1", 5) == {"checkpoint": "ck-1", "step": 5, "epoch": 1}
    assert pointer(c) == {"path": "ck-1", "step": 5, "epoch": 1}
    assert refused(c.commit, RUN, "A", 0, "ck-0", 6).status == 409
    assert pointer(c) == {"path": "ck-1", "step": 5, "epoch": 1}
    c.commit(RUN, "A", 1, "ck-2", 7)
    assert pointer(c) == {"path": "ck-2", "step": 7, "epoch": 1}
    assert c.renew(RUN, "A", 1)["checkpoint"] == {"path": "ck-2", "step": 7, "epoch": 1}


def test_release_lets_the_next_worker_in_at_a_higher_epoch(commander):
    c = register(commander)
    c.acquire(RUN, "A")
    assert refused(c.acquire, RUN, "B").status == 409
    c.release(RUN, "A", 1)
    assert c.run(RUN)["holder"] is None
    assert c.acquire(RUN, "B")["epoch"] == 2
    assert refused(c.renew, RUN, "A", 1).status == 409


def test_finished_run_refuses_everything_after(commander):
    c = register(commander)
    c.acquire(RUN, "A")
    c.commit(RUN, "A", 1, "ck-final", 100)
    c.finish(RUN, "A", 1)
    view = c.run(RUN)
    assert view["finished"] and view["holder"] is None
    for worker in ("B", "A"):
        err = refused(c.acquire, RUN, worker)
        assert err.status == 410 and err.data.get("finished") is True
    assert refused(c.commit, RUN, "A", 1, "ck-after", 101).status == 410
    assert refused(c.renew, RUN, "A", 1).status == 410
    assert refused(c.register, RUN, {}, 60).status == 410
    assert pointer(c) == {"path": "ck-final", "step": 100, "epoch": 1}


def test_racing_acquirers_exactly_one_wins(commander):
    workers = 8
    for round_ in range(4):
        run = f"race-{round_}"
        register(commander, run)
        barrier = threading.Barrier(workers)
        results: list = [None] * workers

        def grab(i: int) -> None:
            client = commander.client()  # each its own connection
            barrier.wait()
            try:
                results[i] = ("won", client.acquire(run, f"w{i}")["epoch"])
            except RelayRefused as exc:
                results[i] = ("lost", exc.status, exc.data.get("holder"))

        threads = [threading.Thread(target=grab, args=(i,)) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        won = [i for i, r in enumerate(results) if r and r[0] == "won"]
        assert len(won) == 1, results
        assert results[won[0]] == ("won", 1)
        holder = f"w{won[0]}"
        assert all(r == ("lost", 409, holder) for i, r in enumerate(results) if i != won[0]), results
        view = commander.client().run(run)
        assert (view["holder"], view["epoch"], view["handoffs"]) == (holder, 1, 0)


def _nonces(commander: Commander) -> set[str]:
    db = sqlite3.connect(f"file:{commander.state_path}?mode=ro", uri=True)
    try:
        return {r[0] for r in db.execute("SELECT nonce FROM nonces")}
    finally:
        db.close()


def test_lease_pointer_events_and_nonces_survive_kill_9(commander):
    c = register(commander)
    c.acquire(RUN, "A")
    c.commit(RUN, "A", 1, "ck-1", 5)
    refused(c.acquire, RUN, "B")
    refused(c.commit, RUN, "A", 7, "ck-bad", 6)  # an event of its own (commit_refused)
    c.commit(RUN, "A", 1, "ck-2", 6)
    before = c.run(RUN, events=100)
    nonces = _nonces(commander)
    assert len(nonces) >= 6

    commander.kill()
    commander.start()

    after = c.run(RUN, events=100)
    assert (after["holder"], after["epoch"], after["handoffs"]) == ("A", 1, 0)
    assert pointer(c) == {"path": "ck-2", "step": 6, "epoch": 1}
    assert after["events"] == before["events"]
    assert [e["kind"] for e in after["events"]] == ["registered", "acquired", "committed", "commit_refused",
                                                    "committed"]
    assert nonces <= _nonces(commander)
    # The lease is live after the restart: B is still kept out, A renews under its epoch.
    assert refused(c.acquire, RUN, "B").data["holder"] == "A"
    assert c.renew(RUN, "A", 1)["epoch"] == 1
    c.commit(RUN, "A", 1, "ck-3", 7)
    assert pointer(c)["path"] == "ck-3"
