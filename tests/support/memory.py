"""An in-memory wiring of a ClientSession to the server machines (no sockets).

A fake clock, a seeded random source and a ``cat``-like backend: every input
byte is echoed as output.  Used by the core tests only -- claims about the
system are made with the real server elsewhere.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from nimbus_websocket.core import (
    AuthRequested,
    BackendClose,
    BackendInput,
    BackendOpen,
    BackendPause,
    ChannelData,
    ClientOptions,
    ClientSession,
    CloseTransport,
    MemoryResumeStore,
    OpenTransport,
    ServerConfig,
    ServerConnection,
    SessionRegistry,
)


class FakeClock:
    """Seconds, advanced by hand."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t


@dataclass
class EchoBackend:
    """A ``cat``: input comes back as output, exit on request."""

    paused: bool = True
    out: deque[bytes] = field(default_factory=deque)
    closed: bool = False


class MemoryPair:
    """Client machine <-> server machines, pumped by hand."""

    def __init__(
        self,
        options: ClientOptions | None = None,
        config: ServerConfig | None = None,
        seed: int = 1,
        principal: str = "alice",
    ) -> None:
        self.clock = FakeClock()
        self.rng = random.Random(seed)
        self.store = MemoryResumeStore()
        self.registry = SessionRegistry(config, random_bytes=self.rng.randbytes)
        self.client = ClientSession(options, now=self.clock(), rand=self.rng.random, store=self.store)
        self.principal = principal
        self.conn: ServerConnection | None = None
        self.c2s: deque[str | bytes] = deque()
        self.s2c: deque[str | bytes] = deque()
        self.backends: dict[int, EchoBackend] = {}
        self.client_events: list[object] = []
        self.server_events: list[object] = []
        self.received: dict[int, bytearray] = {}
        self.auto_consume = True
        self.transport_up = False

    # ------------------------------------------------------------------ pump
    def _client_out(self) -> None:
        self.c2s.extend(self.client.frames_to_send())
        for ev in self.client.events():
            self.client_events.append(ev)
            if isinstance(ev, OpenTransport):
                self._open_transport()
            elif isinstance(ev, CloseTransport):
                self._drop(notify_client=False, code=ev.code)
            elif isinstance(ev, ChannelData):
                self.received.setdefault(ev.id, bytearray()).extend(ev.data)
                if self.auto_consume:
                    self.client.consumed(ev.id, len(ev.data), self.clock())

    def _open_transport(self) -> None:
        self.conn = ServerConnection(self.registry, now=self.clock(), subprotocol=self.client.profile.subprotocols[0])
        self.transport_up = True
        self.c2s.clear()
        self.s2c.clear()
        self.client.transport_opened(self.clock())

    def _server_out(self) -> None:
        conn = self.conn
        if conn is None:
            return
        self.s2c.extend(conn.frames_to_send())
        for ev in conn.events():
            self.server_events.append(ev)
            self._server_event(conn, ev)
        self.s2c.extend(conn.frames_to_send())

    def _server_event(self, conn: ServerConnection, ev: object) -> None:
        s = conn.session
        if isinstance(ev, AuthRequested):
            conn.auth_result(self.principal, self.clock())
        elif isinstance(ev, BackendOpen):
            self.backends[ev.id] = EchoBackend()
            assert s is not None
            s.channel_opened(ev.id)
        elif isinstance(ev, BackendInput):
            assert s is not None
            s.input_written(ev.id, len(ev.data), self.clock())
            self.backends[ev.id].out.append(ev.data)
        elif isinstance(ev, BackendPause):
            if ev.id in self.backends:
                self.backends[ev.id].paused = ev.paused
        elif isinstance(ev, BackendClose):
            if ev.id in self.backends:
                self.backends[ev.id].closed = True
        elif isinstance(ev, CloseTransport):
            self._drop(notify_client=True, code=ev.code)

    def _drop(self, notify_client: bool, code: int) -> None:
        if not self.transport_up:
            return
        self.transport_up = False
        conn, self.conn = self.conn, None
        self.c2s.clear()
        self.s2c.clear()
        if conn is not None:
            conn.transport_closed(code, self.clock())
            for ev in conn.events():
                self.server_events.append(ev)
                self._server_event(conn, ev)
            for s in self.registry.sessions():
                for ev in s.events():
                    self._server_event(conn, ev)
        if notify_client:
            self.client.transport_closed(self.clock(), code)

    def _run_backends(self) -> None:
        conn = self.conn
        for s in self.registry.sessions():
            for cid, be in self.backends.items():
                while be.out and not be.closed and s.read_budget(cid) > 0 and cid in s.channels:
                    data = be.out.popleft()
                    budget = s.read_budget(cid)
                    if len(data) > budget:
                        be.out.appendleft(data[budget:])
                        data = data[:budget]
                    s.backend_output(cid, "stdout", data)
            for ev in s.events():
                if conn is not None:
                    self._server_event(conn, ev)

    def pump(self, limit: int = 100_000) -> int:
        """Move frames both ways until quiet; returns the number of frames moved."""
        moved = 0
        for _ in range(limit):
            self._client_out()
            self._server_out()
            self._run_backends()
            self._server_out()
            if self.c2s and self.conn is not None:
                self.conn.receive_frame(self.c2s.popleft(), self.clock())
                moved += 1
            elif self.s2c and self.transport_up:
                self.client.receive_frame(self.s2c.popleft(), self.clock())
                moved += 1
            else:
                self._client_out()
                if not (self.c2s or self.s2c):
                    return moved
        raise AssertionError("pump did not settle")

    def cut(self, code: int = 1006) -> None:
        """Drop the transport as a network failure would."""
        conn, self.conn = self.conn, None
        self.transport_up = False
        self.c2s.clear()
        self.s2c.clear()
        if conn is not None:
            conn.transport_closed(code, self.clock())
            for ev in conn.events():
                self._server_event(conn, ev)
        self.client.transport_closed(self.clock(), code)

    def advance(self, dt: float) -> None:
        """Move the clock and fire every deadline of both sides."""
        now = self.clock.advance(dt)
        self.client.tick(now)
        if self.conn is not None:
            self.conn.tick(now)
        for s in self.registry.expire(now):
            for ev in s.events():
                if isinstance(ev, BackendClose) and ev.id in self.backends:
                    self.backends[ev.id].closed = True

    def run_until_ready(self, max_steps: int = 50) -> None:
        for _ in range(max_steps):
            self.pump()
            if self.client.state.value == "ready":
                return
            d = self.client.next_deadline()
            self.advance(max(0.0, (d or self.clock()) - self.clock()) + 1e-6)
        raise AssertionError(f"not ready: {self.client.state}")
