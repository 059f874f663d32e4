"""A TCP fault proxy for tests: put it between a client and a server on 127.0.0.1 and break the network on command.

    proxy = FaultProxy(("127.0.0.1", sshd.port), name="client->sshd")
    ... point the client at 127.0.0.1:proxy.port ...
    proxy.drop(for_s=3)        # every open connection is cut; new ones are cut at once, for 3 s
    proxy.blackhole(for_s=5)   # connections are accepted and never answered (what a dead Wi-Fi looks like)
    proxy.refuse(for_s=2)      # new connections are reset at once (a restarting server)
    proxy.latency(0.5)         # every chunk waits 0.5 s each way, until heal()
    proxy.heal()               # back to passing everything through
    proxy.stop()

One proxy per (side, service): client->sshd, client->store, node->store, client->kmock, client->fake Modal. A fault
with `for_s` heals itself after that long; without, it lasts until heal(). `events` records what happened to which
connection, so a test can tell that its case really went through the fault.
"""
from __future__ import annotations

import select
import socket
import struct
import threading
import time

PASS, DROP, BLACKHOLE, REFUSE = "pass", "drop", "blackhole", "refuse"


class FaultProxy:
    def __init__(self, target: tuple[str, int], *, name: str = "", port: int = 0):
        self.target = target
        self.name = name or f"->{target[0]}:{target[1]}"
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.mode = PASS
        self.delay = 0.0
        self.events: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._heal_at: float | None = None
        self._stopped = threading.Event()
        threading.Thread(target=self._accept_loop, name=f"fault-proxy {self.name}", daemon=True).start()

    @classmethod
    def before(cls, url: str, *, name: str = "") -> "FaultProxy":
        """A proxy in front of the server at `url` (http://host:port, as the stand-ins give their endpoints)."""
        host, _, port = url.split("://", 1)[-1].rstrip("/").rpartition(":")
        return cls((host, int(port)), name=name)

    # -- commands ------------------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def drop(self, for_s: float | None = None) -> None:
        self._set(DROP, for_s)
        with self._lock:
            conns = list(self._conns)
            if conns:
                self.events.append((time.time(), f"drop: {len(conns)} open connection(s) cut"))
        for c in conns:
            _reset(c)

    def blackhole(self, for_s: float | None = None) -> None:
        self._set(BLACKHOLE, for_s)

    def refuse(self, for_s: float | None = None) -> None:
        self._set(REFUSE, for_s)

    def latency(self, seconds: float, for_s: float | None = None) -> None:
        self.delay = seconds
        self._set(PASS, for_s, note=f"latency {seconds:g} s")

    def heal(self) -> None:
        with self._lock:
            self.mode, self.delay, self._heal_at = PASS, 0.0, None
            self.events.append((time.time(), "healed"))

    def stop(self) -> None:
        self._stopped.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            _reset(c)

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- plumbing ------------------------------------------------------------------------------------------------

    def _set(self, mode: str, for_s: float | None, note: str | None = None) -> None:
        with self._lock:
            self.mode = mode
            self._heal_at = None if for_s is None else time.time() + for_s
            self.events.append((time.time(), note or mode + (f" for {for_s:g} s" if for_s is not None else "")))

    def _current(self) -> str:
        with self._lock:
            if self._heal_at is not None and time.time() >= self._heal_at:
                self.mode, self.delay, self._heal_at = PASS, 0.0, None
                self.events.append((time.time(), "healed (timer)"))
            return self.mode

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            mode = self._current()
            if mode in (DROP, REFUSE):
                self.events.append((time.time(), f"{mode}: new connection reset"))
                _reset(client)
                continue
            threading.Thread(target=self._serve, args=(client, mode), daemon=True).start()

    def _serve(self, client: socket.socket, mode: str) -> None:
        with self._lock:
            self._conns.add(client)
        upstream = None
        try:
            if mode == BLACKHOLE:
                self.events.append((time.time(), "blackhole: connection held, never answered"))
                self._swallow(client)
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _reset(client)
                return
            with self._lock:
                self._conns.add(upstream)
            self._pump(client, upstream)
        finally:
            with self._lock:
                self._conns.discard(client)
                if upstream is not None:
                    self._conns.discard(upstream)
            for s in (client, upstream):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _swallow(self, client: socket.socket) -> None:
        """Read and discard until the client gives up or the proxy stops: nothing ever comes back."""
        while not self._stopped.is_set():
            ready, _, _ = select.select([client], [], [], 0.2)
            if ready:
                try:
                    if not client.recv(65536):
                        return
                except OSError:
                    return

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        while not self._stopped.is_set():
            mode = self._current()
            if mode == DROP:
                return
            try:
                ready, _, _ = select.select(list(peers), [], [], 0.2)
            except (OSError, ValueError):
                return
            for src in ready:
                try:
                    data = src.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if self._current() == BLACKHOLE:
                    continue  # what was open goes silent too
                if self.delay:
                    time.sleep(self.delay)
                try:
                    peers[src].sendall(data)
                except OSError:
                    return


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): the peer sees `connection reset`, as when a box or a NAT drops it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
