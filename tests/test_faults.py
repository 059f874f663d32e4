"""The fault proxy itself (tests/faults.py): each fault does what its name says, and heals on time."""
from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from .faults import FaultProxy
from .waiting import wait_for


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def proxy():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p = FaultProxy(server.server_address, name="test->echo")
    yield p
    p.stop()
    server.shutdown()
    server.server_close()


def talk(port: int, payload: bytes = b"ping", timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        return s.recv(65536)


def test_passes_everything_through(proxy):
    assert talk(proxy.port) == b"ping"


def test_drop_cuts_open_connections_and_new_ones_until_it_heals(proxy):
    open_conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    open_conn.sendall(b"a")
    assert open_conn.recv(10) == b"a"
    proxy.drop(for_s=1.0)
    with pytest.raises(OSError):  # reset, or closed with nothing sent back
        open_conn.sendall(b"b")
        if not open_conn.recv(10):
            raise ConnectionResetError("closed")
    open_conn.close()
    with pytest.raises(OSError):
        if not talk(proxy.port):
            raise ConnectionResetError("closed")
    assert wait_for(lambda: _works(proxy.port), timeout=5)
    assert any("healed" in e for _, e in proxy.events)


def test_blackhole_accepts_and_never_answers(proxy):
    proxy.blackhole()
    with pytest.raises(socket.timeout):
        talk(proxy.port, timeout=0.5)
    proxy.heal()
    assert talk(proxy.port) == b"ping"


def test_refuse_resets_new_connections(proxy):
    proxy.refuse(for_s=0.5)
    with pytest.raises(OSError):
        if not talk(proxy.port):
            raise ConnectionResetError("closed")
    time.sleep(0.6)
    assert talk(proxy.port) == b"ping"


def test_latency_delays_each_chunk(proxy):
    proxy.latency(0.3)
    started = time.monotonic()
    assert talk(proxy.port) == b"ping"
    assert time.monotonic() - started >= 0.3 * 2  # one chunk each way
    proxy.heal()


def _works(port: int) -> bool:
    try:
        return talk(port, timeout=1) == b"ping"
    except OSError:
        return False
