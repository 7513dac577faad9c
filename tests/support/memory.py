"""In-memory wirings of the core machines (no sockets, no sleeping).

* :class:`MemoryPair` -- a ClientSession wired to the server machines with a
  fake clock, a seeded random source and a ``cat``-like backend (every input
  byte is echoed as output; more output can be injected with ``emit``).
  Frames are moved one at a time (:meth:`MemoryPair.step`) or until quiet
  (:meth:`MemoryPair.pump`); the transport can be cut anywhere.
* :class:`ServerHarness` -- one ServerConnection driven by hand: send typed
  messages or raw frames, read back decoded frames and events.
* :class:`ClientHarness` -- one ClientSession facing a scripted server.

Used by the core tests only -- claims about the system are made with the real
server elsewhere.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from nimbus_websocket.core import (
    Auth,
    AuthRequested,
    BackendClose,
    BackendInput,
    BackendOpen,
    BackendPause,
    ChannelData,
    ClientOptions,
    ClientSession,
    CloseTransport,
    Ctl,
    DataFrame,
    Diagnostic,
    Hello,
    HelloCaps,
    HelloOk,
    MemoryResumeStore,
    OpenTransport,
    PolicyEvent,
    ResumeGrant,
    ResumeRequest,
    ServerCaps,
    ServerConfig,
    ServerConnection,
    SessionRegistry,
    StateChanged,
    get_profile,
)
from nimbus_websocket.core.profiles import Frame, WireProfile

__all__ = ["ClientHarness", "EchoBackend", "FakeClock", "MemoryPair", "ServerHarness"]


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
    """A ``cat``: input comes back as output; ``closed`` once torn down."""

    paused: bool = True
    out: deque[bytes] = field(default_factory=deque)
    closed: bool = False


class MemoryPair:
    """Client machine <-> server machines, pumped by hand.

    ``c2s``/``s2c`` hold frames in flight; :meth:`cut` loses them, as a
    network failure would.  ``backend_in``/``backend_out`` record every byte
    the backends received and produced, ``received`` every byte the client
    application got (per channel), so tests can compare streams exactly.
    With ``record_wire`` every delivered frame is appended to ``wire`` as
    ``("c2s" | "s2c", frame)``.
    """

    def __init__(
        self,
        options: ClientOptions | None = None,
        config: ServerConfig | None = None,
        seed: int = 1,
        principal: str | None = "alice",
        *,
        echo: bool = True,
        record_wire: bool = False,
    ) -> None:
        self.clock = FakeClock()
        self.rng = random.Random(seed)
        self.store = MemoryResumeStore()
        self.registry = SessionRegistry(config, random_bytes=self.rng.randbytes)
        self.client = ClientSession(options, now=self.clock(), rand=self.rng.random, store=self.store)
        self.principal = principal
        self.echo = echo
        self.conn: ServerConnection | None = None
        self.c2s: deque[Frame] = deque()
        self.s2c: deque[Frame] = deque()
        self.backends: dict[int, EchoBackend] = {}
        self.client_events: list[Any] = []
        self.server_events: list[Any] = []
        self.received: dict[int, bytearray] = {}
        self.backend_in: dict[int, bytearray] = {}
        self.backend_out: dict[int, bytearray] = {}
        self.auto_consume = True
        self.transport_up = False
        #: False: every OpenTransport fails at once with 1006 (network down).
        self.network_up = True
        #: False: AuthRequested is left unanswered (a server that never says hello_ok).
        self.auto_auth = True
        self.record_wire = record_wire
        self.wire: list[tuple[str, Frame]] = []
        self.transports_opened = 0
        self.server_closes: list[int] = []  # codes the server closed with
        self.conns: list[ServerConnection] = []
        self._exits: dict[int, tuple[int | None, str | None]] = {}

    # ------------------------------------------------------------ client side
    def _client_out(self) -> None:
        self.c2s.extend(self.client.frames_to_send())
        while True:
            evs = self.client.events()
            if not evs:
                return
            for ev in evs:
                self.client_events.append(ev)
                if isinstance(ev, OpenTransport):
                    self._open_transport()
                elif isinstance(ev, CloseTransport):
                    self._drop(notify_client=False, code=ev.code)
                elif isinstance(ev, ChannelData):
                    self.received.setdefault(ev.id, bytearray()).extend(ev.data)
                    if self.auto_consume:
                        self.client.consumed(ev.id, len(ev.data), self.clock())
            self.c2s.extend(self.client.frames_to_send())

    def _open_transport(self) -> None:
        self.transports_opened += 1
        self.c2s.clear()
        self.s2c.clear()
        if not self.network_up:
            self.client.transport_closed(self.clock(), 1006, "network down")
            return
        self.conn = ServerConnection(
            self.registry, now=self.clock(), subprotocol=self.client.profile.subprotocols[0]
        )
        self.conns.append(self.conn)
        self.transport_up = True
        self.client.transport_opened(self.clock())

    # ------------------------------------------------------------ server side
    def _server_out(self) -> None:
        conn = self.conn
        if conn is None:
            return
        self.s2c.extend(conn.frames_to_send())
        for ev in conn.events():
            self.server_events.append(ev)
            self._server_event(conn, ev)
        if self.conn is conn:
            self.s2c.extend(conn.frames_to_send())

    def _server_event(self, conn: ServerConnection | None, ev: object) -> None:
        s = conn.session if conn is not None else None
        if s is None and len(self.registry) == 1:  # a detached session: its backends run on
            s = self.registry.sessions()[0]
        if isinstance(ev, AuthRequested):
            if self.auto_auth and conn is not None:
                conn.auth_result(self.principal, self.clock())
        elif isinstance(ev, BackendOpen):
            self.backends[ev.id] = EchoBackend()
            self.backend_in[ev.id] = bytearray()
            self.backend_out[ev.id] = bytearray()
            assert s is not None
            s.channel_opened(ev.id)
        elif isinstance(ev, BackendInput):
            self.backend_in[ev.id].extend(ev.data)
            if s is not None:
                s.input_written(ev.id, len(ev.data), self.clock())
            if self.echo:
                self.backends[ev.id].out.append(ev.data)
        elif isinstance(ev, BackendPause):
            if ev.id in self.backends:
                self.backends[ev.id].paused = ev.paused
        elif isinstance(ev, BackendClose):
            if ev.id in self.backends:
                self.backends[ev.id].closed = True
        elif isinstance(ev, CloseTransport) and conn is not None:
            self.server_closes.append(ev.code)
            if conn is self.conn:
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
                self._server_event(None, ev)
            self._drain_sessions()
        if notify_client:
            self.client.transport_closed(self.clock(), code)

    def _drain_sessions(self) -> None:
        for s in self.registry.sessions():
            for ev in s.events():
                self.server_events.append(ev)
                self._server_event(s.conn, ev)

    def emit(self, cid: int, data: bytes) -> None:
        """Make channel ``cid``'s backend produce ``data`` (read as credit allows)."""
        self.backends[cid].out.append(bytes(data))

    def exit_backend(self, cid: int, code: int | None = 0, sig: str | None = None) -> None:
        """The process of channel ``cid`` ends (after its queued output is read)."""
        self._exits[cid] = (code, sig)

    def _run_backends(self) -> None:
        exits = self._exits
        for s in self.registry.sessions():
            for cid, be in self.backends.items():
                if be.closed or cid not in s.channels:
                    continue
                while be.out and s.read_budget(cid) > 0:
                    data = be.out.popleft()
                    budget = s.read_budget(cid)
                    if len(data) > budget:
                        be.out.appendleft(data[budget:])
                        data = data[:budget]
                    self.backend_out[cid].extend(data)
                    s.backend_output(cid, "stdout", data)
                if not be.out and cid in exits:
                    code, sig = exits.pop(cid)
                    s.backend_exit(cid, code, sig)
            for ev in s.events():
                self.server_events.append(ev)
                self._server_event(s.conn, ev)

    # ------------------------------------------------------------------ pump
    def _flush_all(self) -> None:
        self._client_out()
        self._server_out()
        self._run_backends()
        self._server_out()
        self._client_out()

    def step(self, rng: random.Random | None = None) -> bool:
        """Deliver one frame (client->server first, or a random side with ``rng``)."""
        self._flush_all()
        sides = []
        if self.c2s and self.conn is not None:
            sides.append("c2s")
        if self.s2c and self.transport_up:
            sides.append("s2c")
        if not sides:
            return False
        side = rng.choice(sides) if rng is not None else sides[0]
        if side == "c2s":
            frame = self.c2s.popleft()
            if self.record_wire:
                self.wire.append(("c2s", frame))
            assert self.conn is not None
            self.conn.receive_frame(frame, self.clock())
        else:
            frame = self.s2c.popleft()
            if self.record_wire:
                self.wire.append(("s2c", frame))
            self.client.receive_frame(frame, self.clock())
        return True

    def pump(self, limit: int = 100_000, rng: random.Random | None = None) -> int:
        """Move frames both ways until quiet; returns the number of frames moved."""
        for moved in range(limit):
            if not self.step(rng):
                self._flush_all()
                if not (self.c2s and self.conn is not None) and not (self.s2c and self.transport_up):
                    return moved
        raise AssertionError("pump did not settle")

    def cut(self, code: int = 1006) -> None:
        """Drop the transport as a network failure would (frames in flight are lost)."""
        conn, self.conn = self.conn, None
        was_up, self.transport_up = self.transport_up, False
        self.c2s.clear()
        self.s2c.clear()
        if conn is not None:
            conn.transport_closed(code, self.clock())
            for ev in conn.events():
                self.server_events.append(ev)
                self._server_event(None, ev)
            self._drain_sessions()
        if was_up:
            self.client.transport_closed(self.clock(), code)

    def advance(self, dt: float) -> None:
        """Move the clock and fire every deadline of both sides."""
        now = self.clock.advance(dt)
        self.client.tick(now)
        self._client_out()
        if self.conn is not None:
            self.conn.tick(now)
        for s in self.registry.expire(now):
            for ev in s.events():
                self.server_events.append(ev)
                if isinstance(ev, BackendClose) and ev.id in self.backends:
                    self.backends[ev.id].closed = True

    def run_until_ready(self, max_steps: int = 50) -> None:
        """Pump and fire deadlines until the client is ready."""
        for _ in range(max_steps):
            self.pump()
            if self.client.state.value == "ready":
                return
            d = self.client.next_deadline()
            self.advance(max(0.0, (d or self.clock()) - self.clock()) + 1e-6)
        raise AssertionError(f"not ready: {self.client.state}")

    def connect(self) -> None:
        """``connect`` and pump until ready."""
        self.client.connect(self.clock())
        self.run_until_ready()

    # -------------------------------------------------------------- queries
    def session(self) -> Any:
        """The one live server session."""
        (s,) = self.registry.sessions()
        return s

    def events_of(self, kind: type) -> list[Any]:
        """Client events of one type, in order."""
        return [e for e in self.client_events if isinstance(e, kind)]

    def states(self) -> list[str]:
        """Every state the client entered, in order."""
        return [e.new for e in self.client_events if isinstance(e, StateChanged)]

    def diagnostics(self) -> list[str]:
        """Codes of the client's diagnostics, in order."""
        return [e.code for e in self.client_events if isinstance(e, Diagnostic)]

    def policies(self, kind: str | None = None) -> list[PolicyEvent]:
        """The client's policy events (of one kind)."""
        return [e for e in self.client_events if isinstance(e, PolicyEvent) and kind in (None, e.kind)]


# --------------------------------------------------------------------------- server


class ServerHarness:
    """One ServerConnection fed by hand, with a fake clock.

    ``send`` takes a typed message, a :class:`DataFrame` or a raw frame;
    ``out`` collects every frame the server wrote, decoded; ``events`` every
    event.  ``close_code`` is the code of the server's CloseTransport, if any.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        profile: str = "nimbus.v1",
        registry: SessionRegistry | None = None,
        clock: FakeClock | None = None,
        seed: int = 1,
    ) -> None:
        self.clock = clock or FakeClock()
        self.rng = random.Random(seed)
        self.registry = registry if registry is not None else SessionRegistry(config, random_bytes=self.rng.randbytes)
        self.profile: WireProfile = get_profile(profile)
        self.conn = ServerConnection(self.registry, now=self.clock(), subprotocol=self.profile.subprotocols[0])
        self.out: list[Ctl | DataFrame] = []
        self.raw: list[Frame] = []
        self.events: list[Any] = []

    def drain(self) -> list[Ctl | DataFrame]:
        """Collect new frames and events; returns the newly decoded frames."""
        new: list[Ctl | DataFrame] = []
        while True:
            frames = self.conn.frames_to_send()
            evs = self.conn.events()
            if not frames and not evs:
                break
            self.events.extend(evs)
            for f in frames:
                self.raw.append(f)
                new.append(self.profile.decode(f, 1 << 30))
        self.out.extend(new)
        return new

    def send(self, m: Ctl | DataFrame | Frame, dt: float = 0.0) -> list[Ctl | DataFrame]:
        """Feed one message (after advancing the clock by ``dt``); returns the server's answer."""
        if dt:
            self.clock.advance(dt)
        if isinstance(m, DataFrame):
            for f in self.profile.encode_data(m):
                self.conn.receive_frame(f, self.clock())
        elif isinstance(m, (str, bytes)):
            self.conn.receive_frame(m, self.clock())
        else:
            self.conn.receive_frame(self.profile.encode_ctl(m), self.clock())
        return self.drain()

    def tick(self, dt: float) -> list[Ctl | DataFrame]:
        """Advance the clock by ``dt`` and fire the connection's deadlines."""
        self.conn.tick(self.clock.advance(dt))
        return self.drain()

    def hello(
        self,
        principal: str | None = "alice",
        *,
        ack: bool = True,
        resume: ResumeRequest | None = None,
        token: str | None = "secret-token",
    ) -> HelloOk | None:
        """hello, answer the auth request with ``principal``; returns hello_ok (or None)."""
        auth = Auth("bearer", token) if token is not None else None
        self.send(Hello(auth=auth, caps=HelloCaps(profile=self.profile.id, ack=ack), resume=resume))
        reqs = [e for e in self.events if isinstance(e, AuthRequested)]
        assert len(reqs) == 1, self.events
        self.conn.auth_result(principal, self.clock())
        for m in self.drain():
            if isinstance(m, HelloOk):
                return m
        return None

    def of(self, kind: type) -> list[Any]:
        """Decoded server frames / events of one type."""
        return [m for m in self.out + self.events if isinstance(m, kind)]

    @property
    def close_code(self) -> int | None:
        codes = [e.code for e in self.events if isinstance(e, CloseTransport)]
        assert len(codes) <= 1, codes
        return codes[0] if codes else None

    @property
    def session(self) -> Any:
        return self.conn.session


# --------------------------------------------------------------------------- client


class ClientHarness:
    """One ClientSession facing a scripted server (frames encoded by hand)."""

    def __init__(self, options: ClientOptions | None = None, *, seed: int = 1, store: Any = None) -> None:
        self.clock = FakeClock()
        self.rng = random.Random(seed)
        self.rand_values: list[float] = []
        self.store = store if store is not None else MemoryResumeStore()
        self.client = ClientSession(options, now=self.clock(), rand=self._rand, store=self.store)
        self.profile = self.client.profile
        self.sent: list[Ctl | DataFrame] = []
        self.events: list[Any] = []

    def _rand(self) -> float:
        r = self.rng.random()
        self.rand_values.append(r)
        return r

    def drain(self) -> list[Ctl | DataFrame]:
        """Collect new frames and events; returns the newly decoded frames."""
        new = [self.profile.decode(f, 1 << 30) for f in self.client.frames_to_send()]
        self.sent.extend(new)
        self.events.extend(self.client.events())
        return new

    def feed(self, m: Ctl | DataFrame | Frame) -> list[Ctl | DataFrame]:
        """Deliver one server message to the client; returns what the client sent back."""
        if isinstance(m, DataFrame):
            for f in self.profile.encode_data(m, self.client.max_frame):
                self.client.receive_frame(f, self.clock())
        elif isinstance(m, (str, bytes)):
            self.client.receive_frame(m, self.clock())
        else:
            self.client.receive_frame(self.profile.encode_ctl(m), self.clock())
        return self.drain()

    def tick_to(self, t: float) -> list[Ctl | DataFrame]:
        self.clock.t = t
        self.client.tick(t)
        return self.drain()

    def hello_ok(self, *, ack: bool = True, ttl_ms: int = 60_000, max_frame: int | None = None,
                 resumed: Any = None, token: str = "0011223344556677.c2VjcmV0") -> list[Ctl | DataFrame]:
        """The server's hello_ok (the client must be authenticating)."""
        return self.feed(
            HelloOk(
                "scripted",
                ServerCaps(self.profile.id, max_frame=max_frame, ack=ack, resumed=resumed),
                ResumeGrant(token, ttl_ms),
            )
        )

    def connect(self, **hello_ok: Any) -> None:
        """connect -> socket open -> hello -> hello_ok: the client is ready."""
        self.client.connect(self.clock())
        self.drain()
        self.client.transport_opened(self.clock())
        self.drain()
        self.hello_ok(**hello_ok)
        assert self.client.state.value == "ready", self.client.state

    def of(self, kind: type) -> list[Any]:
        """Sent messages / events of one type."""
        return [m for m in self.sent + self.events if isinstance(m, kind)]
