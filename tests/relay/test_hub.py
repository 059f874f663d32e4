"""launcher.relay.hub.upload_checkpoint against a fake Hub on 127.0.0.1 (tests/relay/fake_hub.py), with the real
huggingface_hub client: what lands, dry runs, refusals. No network but 127.0.0.1."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launcher.relay.hub import upload_checkpoint

from .fake_hub import FakeHub

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hf_fake_token_for_tests"


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """epoch-3/myrun/checkpoint-40 with small text files, a binary over the fake's LFS threshold, a subfolder, an
    empty file, and a .git folder that upload_folder (and so the dry run) leaves out."""
    ck = tmp_path / "epoch-3" / "myrun" / "checkpoint-40"
    (ck / "optimizer").mkdir(parents=True)
    (ck / ".git").mkdir()
    (ck / "config.json").write_text('{"hidden_size": 8}\n')
    (ck / "model.safetensors").write_bytes(os.urandom(3000))
    (ck / "optimizer" / "state.pt").write_bytes(os.urandom(200))
    (ck / "empty.txt").write_bytes(b"")
    (ck / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (ck / "trainer_state.json").write_text('{"global_step": 40}\n')
    return ck


def expected(ck: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}/{p.relative_to(ck).as_posix()}": p.read_bytes()
            for p in ck.rglob("*") if p.is_file() and ".git" not in p.relative_to(ck).parts}


def hub_env(**extra: str) -> dict:
    """This process's env without any HF_* setting (HF_HUB_OFFLINE, a real HF_TOKEN, ...), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    return {**env, **extra}


def run_worker_side(code: str, env: dict) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter, as a worker would run the upload: huggingface_hub imported there with
    HF_ENDPOINT already in its env."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def test_upload_lands_identical_bytes_under_path_in_repo(checkpoint, tmp_path):
    with FakeHub(token=TOKEN, lfs_threshold=1024) as hub:
        env = hub_env(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf-home"))
        proc = run_worker_side(f"""
            from pathlib import Path
            from launcher.relay.hub import upload_checkpoint
            upload_checkpoint(Path({str(checkpoint)!r}), "org/myrun", path_in_repo="checkpoints/checkpoint-40",
                              dry_run=False, say=print)
            """, env)
        assert proc.returncode == 0, proc.stderr
        assert hub.repos["org/myrun"] == expected(checkpoint, "checkpoints/checkpoint-40")
        assert len(hub.repos["org/myrun"]) == 5
        assert hub.commits["org/myrun"] == ["relay: step 40 (checkpoint-40) -> checkpoints/checkpoint-40"]
        # plain uploads: inline files + one LFS object (model.safetensors); no Xet token, no other route
        paths = [p for _, p in hub.requests]
        assert paths[0] == "/api/repos/create" and paths[-1] == "/api/models/org/myrun/commit/main"
        assert sum(p.startswith("/lfs/") for p in paths) == 1
        assert not [p for p in paths if "xet" in p]
        assert "uploaded checkpoint-40 to org/myrun/checkpoints/checkpoint-40" in proc.stdout
        assert "%|" not in proc.stderr  # no progress bars


# huggingface_hub's own LFS PUT passes `data=<file>` to httpx2, which warns about it
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
def test_upload_in_a_process_that_imported_huggingface_hub_before(checkpoint, monkeypatch):
    """huggingface_hub read HF_ENDPOINT (and HF_HUB_DISABLE_XET) when it was imported; the upload uses the env as it
    is at call time, leaves huggingface_hub's settings as they were, and a second upload finds the repo there."""
    import huggingface_hub.constants as constants

    before = (constants.ENDPOINT, constants.HF_HUB_DISABLE_XET, constants.HF_HUB_DISABLE_TELEMETRY)
    lines: list[str] = []
    with FakeHub(token=TOKEN, lfs_threshold=1024) as hub:  # model.safetensors goes by LFS: Xet would be tried
        for k in [k for k in os.environ if k.startswith("HF_")]:
            monkeypatch.delenv(k)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        upload_checkpoint(checkpoint, "org/myrun", path_in_repo="checkpoints/checkpoint-40", dry_run=False,
                          say=lines.append)
        upload_checkpoint(checkpoint, "org/myrun", path_in_repo="final", dry_run=False, say=lines.append)
    files = hub.repos["org/myrun"]
    assert files == {**expected(checkpoint, "checkpoints/checkpoint-40"), **expected(checkpoint, "final")}
    assert len(hub.commits["org/myrun"]) == 2
    assert (constants.ENDPOINT, constants.HF_HUB_DISABLE_XET, constants.HF_HUB_DISABLE_TELEMETRY) == before
    assert len(lines) == 4 and "uploaded checkpoint-40 to org/myrun/final" in lines[-1]


def test_dry_run_says_what_would_go_and_sends_nothing(checkpoint, tmp_path):
    with FakeHub(token=TOKEN) as hub:
        env = hub_env(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"))  # and no token
        proc = run_worker_side(f"""
            import sys
            from pathlib import Path
            from launcher.relay.hub import upload_checkpoint
            upload_checkpoint(Path({str(checkpoint)!r}), "org/myrun", path_in_repo="final", dry_run=True,
                              say=print)
            print("imported:", sorted(m for m in sys.modules if m.startswith("huggingface_hub")))
            """, env)
        assert proc.returncode == 0, proc.stderr
        assert hub.requests == []
    said, imported = proc.stdout.strip().splitlines()
    size = sum(len(b) for b in expected(checkpoint, "final").values())
    assert "dry run" in said and "org/myrun" in said and "final/" in said and "step 40" in said
    assert "5 files" in said and f"{size / 1024:.1f} KiB" in said
    assert "config.json" in said and "optimizer/state.pt" in said and ".git" not in said
    assert imported == "imported: []"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["no-token", "bad-token", "commit-500", "unreachable"])
def test_a_refusing_hub_is_one_runtime_error_line(case, checkpoint, monkeypatch):
    token = {"no-token": None, "bad-token": "hf_wrong"}.get(case, TOKEN)
    refuse = (500, "/commit/") if case == "commit-500" else None
    with FakeHub(token=TOKEN, refuse=refuse) as hub:
        for k in [k for k in os.environ if k.startswith("HF_")]:
            monkeypatch.delenv(k)
        url = f"http://127.0.0.1:{_closed_port()}" if case == "unreachable" else hub.url
        monkeypatch.setenv("HF_ENDPOINT", url)
        if token:
            monkeypatch.setenv("HF_TOKEN", token)
        lines: list[str] = []
        with pytest.raises(RuntimeError) as err:
            upload_checkpoint(checkpoint, "org/myrun", path_in_repo="final", dry_run=False, say=lines.append)
    message = str(err.value)
    assert "\n" not in message and len(message) < 600, message
    assert message.startswith(f"Hub upload of checkpoint-40 to org/myrun/final at {url} failed: ")
    assert not any(hub.repos.values())  # nothing committed
    if case == "no-token":
        assert "401" in message and "HF_TOKEN is not set" in message
    elif case == "bad-token":
        assert "401" in message and "check that HF_TOKEN may write to org/myrun" in message
    elif case == "commit-500":
        assert "500" in message and "refused by the fake hub" in message
        assert hub.repos == {"org/myrun": {}}  # created, then the commit was refused
    else:
        assert hub.requests == []


def test_offline_mode_is_respected_with_one_line(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 in the worker's env means no Hub traffic: one clear line, not a stack of retries."""
    from launcher.relay.hub import upload_checkpoint

    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / "trainer_state.json").write_text("{}")
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE is set") as err:
            upload_checkpoint(folder, "org/x", path_in_repo="final", dry_run=False, say=lambda m: None)
        assert "\n" not in str(err.value) and hub.requests == []
