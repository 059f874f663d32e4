"""The modal backend on the client's public API (issue 24, item 9): its private reach-ins are in one module,
launcher/backends/modal/private.py, named with the client versions they are tested on; the public paths that
replaced the private stub calls (stopping an app, listing apps and their tags) work against the fake control plane
and stay bounded by MODAL_CALL_S when it does not answer.
"""
from __future__ import annotations

import ast
import re
import time
from importlib import metadata
from pathlib import Path

import pytest

from ..faults import FaultProxy
from .fakeserver import client_pointed_at, forget_process_client, start_fake_modal

REPO = Path(__file__).resolve().parents[2]
PRIVATE = REPO / "launcher" / "backends" / "modal" / "private.py"
SCALE = 0.1  # MODAL_CALL_S 30 s -> 3 s
LOOK_BOUND_S = 12.0  # one bounded call with room for a busy CI


def _private_uses(path: Path) -> list[str]:
    """Where `path` reaches into the modal client's private parts: a `_stub` (its gRPC stubs), an import of a
    private module (`modal._utils`, `modal_proto`) or of a private name from a public one (`modal.client._Client`)."""
    text = path.read_text()
    found = [f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: _stub"
             for m in re.finditer(r"\b_stub\b", text)]
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "modal_proto" or (parts[0] == "modal" and any(p.startswith("_") for p in parts[1:])):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    return found


def test_the_private_calls_are_in_one_module():
    """The scan that keeps them there: any other module of the launcher that calls a private stub or imports a
    private part of the client fails here (move the call into private.py, with why no public one serves)."""
    outside = [hit for path in sorted((REPO / "launcher").rglob("*.py")) if path != PRIVATE
               for hit in _private_uses(path)]
    assert outside == [], "private modal client calls outside launcher/backends/modal/private.py:\n" + \
        "\n".join(outside)
    assert any("_stub" in hit for hit in _private_uses(PRIVATE))  # the scan sees what it looks for


def test_the_private_module_names_the_client_it_is_tested_on():
    from launcher.backends.modal import private

    pinned = re.search(r"^modal==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)
    assert pinned and pinned.group(1) in private.TESTED_ON, "constraints.txt pins a modal not named in TESTED_ON"
    assert metadata.version("modal") in private.TESTED_ON, \
        f"modal {metadata.version('modal')} is installed; private.py is tested on {private.TESTED_ON}: check its " \
        "calls against the new client and add the version"
    assert all(v in PRIVATE.read_text().split('"""')[1] for v in private.TESTED_ON)  # and its docstring says so


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    server = start_fake_modal(tmp_path_factory.mktemp("fakemodal"))
    proxy = FaultProxy.before(server.url, name="client->fake Modal")
    server.proxy = proxy
    with client_pointed_at(server, f"http://{proxy.address}"):
        yield server
    proxy.stop()
    server.stop()


@pytest.fixture
def proxy(fake, monkeypatch):
    monkeypatch.setenv("LAUNCHER_NET_SCALE", str(SCALE))
    fake.proxy.heal()
    yield fake.proxy
    fake.proxy.heal()


def test_stopping_an_app_looks_it_up_by_id_and_stops_it(fake, proxy):
    import modal

    from launcher.backends.modal import app as modal_app

    made = modal.App.lookup("launcher-private-test", create_if_missing=True)
    modal_app.stop_app(made.app_id)
    assert made.app_id in [r["app_name"] for r in fake.captured("AppGetOrCreate")]
    assert made.app_id in [r["app_id"] for r in fake.captured("AppStop")]
    assert made.app_id not in [a["app_id"] for a in modal_app.expired(time.time() + 10 ** 9)]
    modal_app.stop_app(made.app_id)  # stopped already: stopped again, quietly
    modal_app.stop_app("ap-" + "x" * 22)  # gone (or never there): nothing to stop


def test_the_sweepers_listing_reads_states_and_tags_through_the_public_api(fake, proxy):
    from launcher.backends.modal import app as modal_app

    seen = len(fake.captured("AppList"))
    assert isinstance(modal_app.expired(time.time()), list)
    assert len(fake.captured("AppList")) == seen + 1
    assert fake.captured("AppList")[-1].get("environment_name") == "main"  # the token's default environment


@pytest.mark.parametrize("call", ["stop", "list"])
def test_the_public_calls_stay_bounded_when_modal_does_not_answer(fake, proxy, call):
    from launcher.backends.modal import app as modal_app

    fn = {"stop": lambda: modal_app.stop_app("ap-" + "y" * 22), "list": lambda: modal_app.expired(time.time())}[call]
    proxy.drop()
    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(modal_app.Unreachable) as raised:
        fn()
    took = time.monotonic() - started
    assert took < LOOK_BOUND_S, took
    assert "\n" not in str(raised.value) and "Modal" in str(raised.value), raised.value
    proxy.heal()
    forget_process_client()
    fn()  # answered again once it is back
