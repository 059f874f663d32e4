"""`launch relay ...` and `launch --relay ...` on bad input: one `error:` line, exit code 2, nothing created.
And the good path of `launch relay status` (plain and --json) against a real commander."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from ..motoserver import free_port


def assert_one_error(res, *needles: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def home(env: dict) -> Path:
    return Path(env["LAUNCHER_HOME"])


def nothing_listens(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


# -- launch relay status ---------------------------------------------------------------------------------------

def test_status_with_nothing_listening(launch, relay_env):
    port = free_port()
    res = launch("relay", "status", "--commander-url", f"http://127.0.0.1:{port}", env=relay_env)
    assert_one_error(res, f"http://127.0.0.1:{port}", "did not answer")
    assert not home(relay_env).exists()


def test_status_of_an_unknown_run(launch, relay_env, commander):
    res = launch("relay", "status", "--commander-url", commander.url, "no-such-run", env=relay_env)
    assert_one_error(res, "unknown run 'no-such-run'")
    assert commander.client().runs() == []
    assert not (home(relay_env) / "relay").exists()


def test_status_with_a_wrong_secret(launch, relay_env, commander):
    lines = commander.log().splitlines()
    wrong = "a-wrong-secret-0123456789"
    res = launch("relay", "status", "--commander-url", commander.url, env={**relay_env, "RELAY_SHARED_SECRET": wrong})
    assert_one_error(res, "refused", "shared secret")
    assert wrong not in res.stderr and commander.secret not in res.stderr
    new = commander.log().splitlines()[len(lines):]
    assert len(new) == 1 and "bad signature" in new[0], new


def test_status_shows_holder_epoch_and_checkpoint(launch, relay_env, commander):
    c = commander.client()
    c.register("shown", {}, 60)
    c.acquire("shown", "worker-a")
    c.commit("shown", "worker-a", 1, "/ckpt/step-30", 30)
    c.register("idle", {}, 45)

    res = launch("relay", "status", "--commander-url", commander.url, "--json", env=relay_env)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["commander_url"] == commander.url
    runs = {r["run_id"]: r for r in data["runs"]}
    assert set(runs) == {"shown", "idle"}
    assert (runs["shown"]["holder"], runs["shown"]["epoch"]) == ("worker-a", 1)
    assert runs["shown"]["checkpoint"]["path"] == "/ckpt/step-30"
    assert runs["shown"]["checkpoint"]["step"] == 30
    assert (runs["idle"]["holder"], runs["idle"]["epoch"], runs["idle"]["checkpoint"]) == (None, 0, None)

    res = launch("relay", "status", "--commander-url", commander.url, env=relay_env)
    assert res.returncode == 0, res.stderr
    lines = {line.split(":", 1)[0]: line for line in res.stdout.splitlines()}
    assert "held by worker-a" in lines["shown"]
    assert "epoch 1" in lines["shown"]
    assert "checkpoint step 30" in lines["shown"] and "epoch 1)" in lines["shown"]
    assert "hand-offs 0" in lines["shown"]
    assert "waiting for a worker" in lines["idle"] and "checkpoint none yet" in lines["idle"]
    assert "lease 45s" in lines["idle"]

    res = launch("relay", "status", "--commander-url", commander.url, "shown", "--json", env=relay_env)
    assert res.returncode == 0, res.stderr
    assert [r["run_id"] for r in json.loads(res.stdout)["runs"]] == ["shown"]


# -- launch relay up -------------------------------------------------------------------------------------------

STACKS = {
    "missing-run": ("commander:\n  local: {{host: 127.0.0.1, port: {port}}}\n", "field 'run' is missing"),
    "unknown-field": ("run: r1\nbogus_field: 3\ncommander:\n  local: {{host: 127.0.0.1, port: {port}}}\n",
                      "unknown field 'bogus_field'"),
    "two-commanders": ("run: r1\ncommander:\n  local: {{host: 127.0.0.1, port: {port}}}\n"
                       "  url: http://127.0.0.1:{port}\n", "exactly one of local:, ssh: or url:"),
    "no-commander-kind": ("run: r1\ncommander: {{public_url: 'http://127.0.0.1:{port}'}}\n",
                          "exactly one of local:, ssh: or url:"),
}


@pytest.mark.parametrize("name", [*STACKS, "not-there"])
def test_up_with_a_bad_stack_starts_nothing(launch, relay_env, project, name):
    port = free_port()
    path = project / f"{name}.yaml"
    if name in STACKS:
        text, needle = STACKS[name]
        path.write_text(text.format(port=port))
    else:
        needle = "stack file not found"
    res = launch("relay", "up", str(path), "--wait", "5", env=relay_env)
    assert_one_error(res, needle, str(path) if name == "not-there" else name)
    assert nothing_listens(port)
    assert not home(relay_env).exists()
    assert sorted(p.name for p in project.iterdir()) == ([path.name] if name in STACKS else [])


def test_good_stack_shape_is_accepted_by_the_same_check(launch, relay_env, project):
    """The control for the bad stacks: a well-formed one gets past loading (to the unreachable commander)."""
    port = free_port()
    (project / "runners").mkdir()
    (project / "runners" / "mock_run.py").write_text("print('mock')\n")  # the stack's mock trainer plans offline
    path = project / "ok.yaml"
    path.write_text(f"run: r1\ncommander:\n  url: http://127.0.0.1:{port}\n")
    res = launch("relay", "up", str(path), "--wait", "5", env=relay_env)
    assert res.returncode == 2, res.stderr
    assert "backends[0] (local): relay worker of run r1" in res.stderr  # it got as far as planning the workers
    error = res.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and f"http://127.0.0.1:{port}" in error and "did not answer" in error
    assert not (home(relay_env) / "relay").exists()


# -- launch relay serve ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["absent", "empty"])
def test_serve_without_a_secret(launch, launcher_env, relay_env, tmp_path, how):
    if how == "absent" and "RELAY_SHARED_SECRET" in launcher_env:
        pytest.skip("this environment sets RELAY_SHARED_SECRET: only an empty one can be tried")
    env = {k: v for k, v in relay_env.items() if k != "RELAY_SHARED_SECRET"}
    if how == "empty":
        env["RELAY_SHARED_SECRET"] = "  "
    port = free_port()
    state = tmp_path / "serve" / "state.db"
    res = launch("relay", "serve", "--port", str(port), "--state-path", str(state), env=env, timeout=30)
    assert_one_error(res, "no relay shared secret", "RELAY_SHARED_SECRET")
    assert not state.parent.exists()
    assert nothing_listens(port)
    assert not home(relay_env).exists()


def test_serve_with_an_unreadable_secret_file(launch, relay_env, tmp_path):
    port = free_port()
    state = tmp_path / "serve" / "state.db"
    res = launch("relay", "serve", "--port", str(port), "--state-path", str(state), "--shared-secret-file",
                 str(tmp_path / "missing.secret"), env=relay_env, timeout=30)
    assert_one_error(res, "cannot read the shared secret file", "missing.secret")
    assert not state.parent.exists()


# -- launch --relay ----------------------------------------------------------------------------------------------

@pytest.fixture
def script(project) -> str:
    (project / "train.py").write_text("print('hi')\n")
    return "train.py"


def test_relay_without_run_id(launch, relay_env, script):
    res = launch("--relay", "http://x:1", script, env=relay_env)
    assert_one_error(res, "--relay URL and --run-id ID go together")
    assert not home(relay_env).exists()


def test_run_id_without_relay(launch, relay_env, script):
    res = launch("--run-id", "r1", script, env=relay_env)
    assert_one_error(res, "--relay URL and --run-id ID go together")
    assert not home(relay_env).exists()


def test_grace_period_over_a_third_of_the_lease(launch, relay_env, script):
    res = launch("--dry-run", "--relay", "http://127.0.0.1:1", "--run-id", "r", "--grace-period", "30s", script,
                 env=relay_env)
    assert_one_error(res, "--grace-period 30", "third of the relay lease", "at most 20s")
    assert res.stdout == ""
    assert not home(relay_env).exists()
    # The control: a third exactly is accepted, and the plan carries the relay binding.
    res = launch("--dry-run", "--full", "--relay", "http://127.0.0.1:1", "--run-id", "r", "--grace-period", "20s",
                 script, env=relay_env)
    assert res.returncode == 0, res.stderr
    assert "127.0.0.1:1" in res.stdout
