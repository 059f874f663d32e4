"""Request signing at a real commander (`launch relay serve` on 127.0.0.1): every refused request is a 401, one log
line naming why, and no change to the run; a replay is refused also after a kill -9 and restart; TLS verifies."""
from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess
import time

import pytest

from launcher.relay.auth import sign
from launcher.relay.client import RelayAuthError, RelayCertificateError, RelayUnreachable

from .commander import Commander

RUN = "auth-run"
COMMIT = f"/v1/runs/{RUN}/commit"


# -- helpers -----------------------------------------------------------------------------------------------------

def send(commander: Commander, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """Exactly these bytes and headers, nothing added (a captured request, a forged one)."""
    conn = http.client.HTTPConnection("127.0.0.1", commander.port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers={"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def commit_body(checkpoint: str, epoch: int = 1, worker: str = "w1", step: int = 99) -> bytes:
    return json.dumps({"worker": worker, "epoch": epoch, "checkpoint": checkpoint, "step": step}).encode()


def signed(commander: Commander, body: bytes, *, secret: str | None = None, path: str = COMMIT,
           **kw) -> dict[str, str]:
    return sign(commander.secret if secret is None else secret, "POST", path, body, **kw)


def nonce_count(commander: Commander) -> int:
    db = sqlite3.connect(f"file:{commander.state_path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM nonces").fetchone()[0]
    finally:
        db.close()


def snapshot(commander: Commander) -> dict:
    """What a refused request must not change: lease, epoch, pointer, events (the view's clocks left out)."""
    view = commander.client().run(RUN, events=200)
    return {k: view[k] for k in ("holder", "epoch", "checkpoint", "finished", "events", "handoffs")} | {
        "checkpoint": {k: v for k, v in (view["checkpoint"] or {}).items() if k != "age_s"}}


def log_lines(commander: Commander) -> list[str]:
    return commander.log().splitlines()


@pytest.fixture
def held(commander):
    """A run whose lease w1 holds at epoch 1, with checkpoint ck-1 committed."""
    c = commander.client()
    c.register(RUN, {}, 60)  # no backends: the keeper launches nothing
    assert c.acquire(RUN, "w1")["epoch"] == 1
    c.commit(RUN, "w1", 1, "ck-1", 1)
    return commander


def assert_refused(commander: Commander, status: int, answer: dict, before: dict, lines_before: list[str],
                   nonces_before: int, reason: str) -> None:
    # A request that is not validly signed cannot even fill the nonce table.
    assert nonce_count(commander) == nonces_before
    assert status == 401, answer
    assert reason in answer["error"], answer
    new = log_lines(commander)[len(lines_before):]
    assert len(new) == 1, new
    assert "refused" in new[0] and reason in new[0], new
    assert snapshot(commander) == before
    assert before["checkpoint"]["path"] == "ck-1"


# -- refused requests ------------------------------------------------------------------------------------------

def _wrong_secret(c: Commander):
    body = commit_body("evil")
    return body, signed(c, body, secret="not-the-secret")


def _stale_timestamp(c: Commander):
    body = commit_body("evil")
    return body, signed(c, body, now=time.time() - 400)


def _future_timestamp(c: Commander):
    body = commit_body("evil")
    return body, signed(c, body, now=time.time() + 400)


def _body_swapped(c: Commander):
    harmless = commit_body("ck-1", step=1)
    return commit_body("evil"), signed(c, harmless)  # signed A, sent B


def _unsigned(c: Commander):
    return commit_body("evil"), {}


def _one_header_missing(c: Commander):
    body = commit_body("evil")
    headers = signed(c, body)
    del headers["X-Relay-Nonce"]
    return body, headers


def _other_path(c: Commander):
    body = commit_body("evil")
    return body, signed(c, body, path=f"/v1/runs/{RUN}/renew")  # a renew's signature on a commit


def _non_ascii_signature(c: Commander):
    return commit_body("evil"), {**signed(c, commit_body("evil")), "X-Relay-Signature": "\u00e9" * 64}


@pytest.mark.parametrize("forge, reason", [
    (_wrong_secret, "bad signature (wrong shared secret?)"),
    (_stale_timestamp, "s off the commander's clock"),
    (_future_timestamp, "s off the commander's clock"),
    (_body_swapped, "body changed after signing"),
    (_unsigned, "unsigned request"),
    (_one_header_missing, "unsigned request"),
    (_other_path, "bad signature"),
    (_non_ascii_signature, "malformed signature headers"),
], ids=["wrong-secret", "timestamp-400s-old", "timestamp-400s-ahead", "body-changed", "unsigned",
        "nonce-missing", "signed-for-another-path", "non-ascii-signature"])
def test_refused_request_is_401_one_log_line_and_changes_nothing(held, forge, reason):
    before, lines, nonces = snapshot(held), log_lines(held), nonce_count(held)
    body, headers = forge(held)
    status, answer = send(held, "POST", COMMIT, body, headers)
    assert_refused(held, status, answer, before, lines, nonces, reason)
    # The same commit, rightly signed, moves the pointer: the refusal above was the signature's, not the body's.
    body = commit_body("ck-2")
    assert send(held, "POST", COMMIT, body, signed(held, body))[0] == 200
    assert held.client().run(RUN)["checkpoint"]["path"] == "ck-2"


def test_signature_covers_the_query_string(held):
    path = f"/v1/runs/{RUN}?events=1"
    headers = sign(held.secret, "GET", path)
    lines = log_lines(held)
    status, answer = send(held, "GET", f"/v1/runs/{RUN}?events=200", b"", headers)
    assert status == 401 and "bad signature" in answer["error"], answer
    assert len(log_lines(held)) == len(lines) + 1
    status, answer = send(held, "GET", path, b"", headers)  # as signed: the refused one did not burn the nonce
    assert status == 200 and len(answer["events"]) == 1, answer


def test_signature_is_checked_over_the_path_as_sent(held):
    """A percent-escaped path is verified as the client sent and signed it, not as the server decoded it."""
    held.client().register("Ab", {}, 60)
    path = "/v1/runs/%41b?events=5"
    status, answer = send(held, "GET", path, b"", sign(held.secret, "GET", path))
    assert status == 200, answer
    assert answer["run_id"] == "Ab"


def test_wrong_secret_client_gets_auth_error(held):
    with pytest.raises(RelayAuthError) as err:
        held.client(secret="wrong").commit(RUN, "w1", 1, "evil", 5)
    assert err.value.status == 401
    assert held.client().run(RUN)["checkpoint"]["path"] == "ck-1"


def test_good_request_succeeds_and_the_secret_is_written_nowhere(held):
    body = commit_body("ck-2", step=2)
    status, answer = send(held, "POST", COMMIT, body, signed(held, body))
    assert status == 200, answer
    assert answer == {"checkpoint": "ck-2", "step": 2, "epoch": 1}
    assert held.client().run(RUN)["checkpoint"]["step"] == 2
    # Some refusals too, so the log has lines where a careless one could print it.
    with pytest.raises(RelayAuthError):
        held.client(secret="wrong").health()
    send(held, "POST", COMMIT, body, {})
    secret = held.secret.encode()
    files = [p for p in held.state_path.parent.iterdir() if p.name.startswith(held.state_path.name)]
    assert held.state_path in files
    for p in files:
        assert secret not in p.read_bytes(), p
    log = held.log_path.read_bytes()
    assert b"refused" in log
    assert secret not in log


# -- replays ---------------------------------------------------------------------------------------------------

def test_replayed_request_is_refused(held):
    body = commit_body("ck-2", step=2)
    headers = signed(held, body)
    assert send(held, "POST", COMMIT, body, headers)[0] == 200
    held.client().commit(RUN, "w1", 1, "ck-3", 3)
    before, lines = snapshot(held), log_lines(held)
    status, answer = send(held, "POST", COMMIT, body, headers)  # the very same bytes and headers
    assert status == 401 and "replayed nonce" in answer["error"], answer
    new = log_lines(held)[len(lines):]
    assert len(new) == 1 and "replayed nonce" in new[0], new
    assert snapshot(held) == before
    assert snapshot(held)["checkpoint"]["path"] == "ck-3"


def test_replay_after_kill_9_and_restart_is_refused(held):
    body = commit_body("ck-2", step=2)
    headers = signed(held, body)
    assert send(held, "POST", COMMIT, body, headers)[0] == 200
    held.client().commit(RUN, "w1", 1, "ck-3", 3)
    unsent_body = commit_body("ck-4", step=4)
    unsent = signed(held, unsent_body)  # signed before the crash, first sent after it
    held.kill()
    held.start()
    before, lines = snapshot(held), log_lines(held)
    status, answer = send(held, "POST", COMMIT, body, headers)
    assert status == 401 and "replayed nonce" in answer["error"], answer
    new = log_lines(held)[len(lines):]
    assert len(new) == 1 and "replayed nonce" in new[0], new
    assert snapshot(held) == before
    assert before["checkpoint"]["path"] == "ck-3"
    # Not a blanket refusal after the restart: a request never sent before goes through.
    assert send(held, "POST", COMMIT, unsent_body, unsent)[0] == 200
    assert held.client().run(RUN)["checkpoint"]["path"] == "ck-4"


# -- TLS ---------------------------------------------------------------------------------------------------------

def _self_signed(folder) -> tuple[str, str]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return str(cert), str(key)


def test_tls_commander_verifies_against_its_ca(tmp_path, relay_env, relay_secret, project, monkeypatch):
    cert, key = _self_signed(tmp_path)
    (tmp_path / "tls").mkdir()
    c = Commander(state_path=tmp_path / "tls" / "state.db", log_path=tmp_path / "tls.log", secret=relay_secret,
                  env=relay_env, cwd=project, extra=("--tls-cert", cert, "--tls-key", key), ca_file=cert)
    assert c.url.startswith("https://127.0.0.1:")
    monkeypatch.delenv("RELAY_CA_FILE", raising=False)
    c.start()
    try:
        good = c.client()
        assert good.health()["ok"] is True
        good.register("tls-run", {}, 60)
        assert good.acquire("tls-run", "w1")["epoch"] == 1
        with pytest.raises(RelayCertificateError, match="not trusted .*self.signed.*RELAY_CA_FILE"):
            c.client(ca_file=None).health()  # final: a worker stops asking instead of waiting for it to answer
        # Plain HTTP to the TLS port does not get an answer either.
        with pytest.raises(RelayUnreachable):
            from launcher.relay.client import RelayClient
            RelayClient(f"http://127.0.0.1:{c.port}", relay_secret, timeout=5).health()
        assert good.run("tls-run")["holder"] == "w1"
    finally:
        c.stop()


def test_a_worker_trusts_a_tls_commander_through_relay_ca_file_in_its_env(tmp_path, relay_env, relay_secret, project,
                                                                          monkeypatch, launch):
    """RELAY_CA_FILE set in the job's env, relative to the project (which travels with the job), reaches the
    agent's client: the worker holds and finishes a run on an HTTPS commander."""
    import shutil

    from .workers import mock_project

    cert, key = _self_signed(tmp_path)
    mock_project(project)
    (project / "certs").mkdir()
    shutil.copy(cert, project / "certs" / "relay.pem")
    (tmp_path / "tls").mkdir()
    c = Commander(state_path=tmp_path / "tls" / "state.db", log_path=tmp_path / "tls.log", secret=relay_secret,
                  env=relay_env, cwd=project, extra=("--tls-cert", cert, "--tls-key", key), ca_file=cert)
    monkeypatch.delenv("RELAY_CA_FILE", raising=False)
    c.start()
    try:
        c.client().register("tls-worker", {}, 30)
        untrusting = launch("--relay", c.url, "--run-id", "tls-worker", "--datapool", (tmp_path / "pool").as_uri(),
                            "runners/mock_run.py", "--steps", "3", env={"RELAY_SHARED_SECRET": relay_secret})
        assert untrusting.returncode == 1, untrusting.stderr  # at once, with the reason, not a wait for an answer
        assert "certificate is not trusted" in untrusting.stdout + untrusting.stderr
        out = launch("--relay", c.url, "--run-id", "tls-worker", "--env", "RELAY_CA_FILE=certs/relay.pem",
                     "--datapool", (tmp_path / "pool").as_uri(), "runners/mock_run.py", "--steps", "3",
                     "--checkpoint-every", "3", "--step-seconds", "0.05", env={"RELAY_SHARED_SECRET": relay_secret})
        assert out.returncode == 0, out.stderr
        assert c.client().run("tls-worker")["finished"]
    finally:
        c.stop()
