"""A tiny ``nimbus.ssh.v1`` server for client tests: the core's server machines over ``websockets``.

It is also a compact reference for a server runtime: one
:class:`~nimbus_websocket.core.ServerConnection` per WebSocket, sessions
in a :class:`~nimbus_websocket.core.SessionRegistry` shared by all
connections (so resumes work), a writer task per socket, one ``call_later``
timer per connection following ``next_deadline()``, and after a close
decision the socket keeps being read and discarded (protocol.md 13).

Backends, chosen by ``open.user.username`` (test hooks, not a product feature):

* ``echo`` (default) -- a ``cat``: input comes back as stdout; input counts
  as consumed only when it was echoed, so a client that stops reading
  eventually blocks its own writes (end-to-end backpressure);
* ``gen:N`` -- writes ``N`` bytes of :func:`gen_bytes` then exits 0;
* ``exit:C`` -- exits with status ``C`` at once; ``stderr:TEXT`` writes
  ``TEXT`` to stderr, then exits 3;
* ``fail`` -- ``open_err`` with code ``TARGET_UNREACHABLE``.

``signal`` ends a backend with that signal; ``resize`` is recorded in
:attr:`EchoServer.resizes`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field

from nimbus_websocket.core import (
    AuthRequested,
    BackendClose,
    BackendInput,
    BackendOpen,
    BackendPause,
    BackendResize,
    BackendSignal,
    CloseTransport,
    ServerConfig,
    ServerSession,
    SessionRegistry,
    available_profiles,
    get_profile,
)
from nimbus_websocket.core import ServerConnection as CoreConnection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

log = logging.getLogger("tests.echo_server")

_BLOCK = random.Random(7).randbytes(65521)  # prime length: never aligned with frames


def gen_bytes(n: int, offset: int = 0) -> bytes:
    """Bytes ``offset .. offset + n`` of the ``gen:`` backend's output stream."""
    out = bytearray()
    pos = offset % len(_BLOCK)
    while len(out) < n:
        take = min(n - len(out), len(_BLOCK) - pos)
        out += _BLOCK[pos : pos + take]
        pos = 0
    return bytes(out)


def gen_sha256(n: int) -> str:
    """sha256 of the first ``n`` bytes of the ``gen:`` stream."""
    h = hashlib.sha256()
    off = 0
    while off < n:
        chunk = gen_bytes(min(1 << 20, n - off), off)
        h.update(chunk)
        off += len(chunk)
    return h.hexdigest()


@dataclass
class Backend:
    """State of one channel's fake terminal."""

    session: ServerSession
    cid: int
    mode: str
    arg: str = ""
    pending: deque[bytes] = field(default_factory=deque)
    produced: int = 0
    paused: bool = True
    closed: bool = False
    exited: bool = False

    def pump(self, now: float) -> None:
        """Produce output while the session gives a read budget."""
        s = self.session
        if self.closed or self.exited:
            return
        if self.mode == "echo":
            while self.pending:
                budget = s.read_budget(self.cid)
                if budget <= 0:
                    return
                chunk = self.pending.popleft()
                if len(chunk) > budget:
                    self.pending.appendleft(chunk[budget:])
                    chunk = chunk[:budget]
                s.backend_output(self.cid, "stdout", chunk)
                s.input_written(self.cid, len(chunk), now)
                self.produced += len(chunk)
        elif self.mode == "gen":
            total = int(self.arg)
            while self.produced < total:
                budget = s.read_budget(self.cid)
                if budget <= 0:
                    return
                n = min(budget, total - self.produced)
                s.backend_output(self.cid, "stdout", gen_bytes(n, self.produced))
                self.produced += n
            self.exit(0, None)
        elif self.mode == "exit":
            self.exit(int(self.arg), None)
        elif self.mode == "stderr":
            if s.read_budget(self.cid) >= len(self.arg):
                s.backend_output(self.cid, "stderr", self.arg.encode())
                self.exit(3, None)

    def exit(self, code: int | None, sig: str | None) -> None:
        if not self.exited:
            self.exited = True
            self.session.backend_exit(self.cid, code, sig)


class EchoServer:
    """Start with ``await server.start()``; ``server.url`` is ``ws://127.0.0.1:<port>/ws/ssh``.

    ``tokens``: accepted bearer tokens (``None``: any auth, principal ``"test"``).
    ``compression``: ``None`` or ``"deflate"`` (websockets' server-side permessage-deflate).
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        tokens: set[str] | None = None,
        compression: str | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        self.registry = SessionRegistry(self.config)
        self.tokens = tokens
        self.compression = compression
        self.backends: dict[tuple[str, int], Backend] = {}
        self.resizes: list[tuple[int, int, int]] = []
        self.signals: list[tuple[int, str]] = []
        self.connections: list[_Conn] = []
        self.close_codes: list[int] = []
        self._server: Server | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The WebSocket URL of the endpoint."""
        return f"ws://127.0.0.1:{self.port}/ws/ssh"

    async def start(self) -> EchoServer:
        """Listen on 127.0.0.1 and a free port."""
        subprotocols = [sp for pid in available_profiles() for sp in get_profile(pid).subprotocols]
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            compression=self.compression,
            max_size=self.config.max_frame + 1024,
            ping_interval=None,
            close_timeout=2,
            open_timeout=2,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._schedule_expiry()
        return self

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._expiry is not None:
            self._expiry.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> EchoServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def backend(self, cid: int) -> Backend:
        """The (only) live backend of channel ``cid``."""
        found = [b for (sid, c), b in self.backends.items() if c == cid and not b.closed]
        assert len(found) == 1, found
        return found[0]

    def abort_all(self) -> None:
        """Drop every TCP connection (server side), as a crash of the network would."""
        for c in self.connections:
            c.ws.transport.abort()

    # ------------------------------------------------------------ internals

    def _schedule_expiry(self) -> None:
        def run() -> None:
            for s in self.registry.expire(time.time()):
                for ev in s.events():
                    self._backend_event(s, ev, time.time())
            self._schedule_expiry()

        self._expiry = asyncio.get_running_loop().call_later(0.5, run)

    async def _handler(self, ws: ServerConnection) -> None:
        conn = _Conn(self, ws)
        self.connections.append(conn)
        try:
            await conn.run()
        finally:
            self.connections.remove(conn)

    def _backend_event(self, s: ServerSession | None, ev: object, now: float) -> None:
        if s is None:
            return
        key = (s.sid, getattr(ev, "id", -1))
        be = self.backends.get(key)
        if isinstance(ev, BackendOpen):
            name, _, arg = ev.user.username.partition(":")
            if name == "fail":
                s.channel_open_failed(ev.id, "TARGET_UNREACHABLE", "no such host")
                return
            mode = name if name in ("gen", "exit", "stderr") else "echo"
            self.backends[key] = Backend(s, ev.id, mode, arg)
            s.channel_opened(ev.id)
        elif be is None:
            return
        elif isinstance(ev, BackendInput):
            be.pending.append(ev.data)
        elif isinstance(ev, BackendPause):
            be.paused = ev.paused
        elif isinstance(ev, BackendResize):
            self.resizes.append((ev.id, ev.cols, ev.rows))
        elif isinstance(ev, BackendSignal):
            self.signals.append((ev.id, ev.sig))
            be.exit(None, ev.sig)
        elif isinstance(ev, BackendClose):
            be.closed = True
            del self.backends[key]


class _Conn:
    """One WebSocket connection of the echo server."""

    def __init__(self, server: EchoServer, ws: ServerConnection) -> None:
        self.server = server
        self.ws = ws
        self.loop = asyncio.get_running_loop()
        self.core = CoreConnection(
            server.registry, now=time.time(), subprotocol=ws.subprotocol, wake=self._wake, peer=str(ws.remote_address)
        )
        self.session: ServerSession | None = None
        self._out: asyncio.Queue[str | bytes | _CloseReq | None] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._wake_pending = False
        self._closing = False

    async def run(self) -> None:
        writer = self.loop.create_task(self._write_loop())
        try:
            async for msg in self.ws:  # keeps reading (and discarding) after a close decision
                self.core.receive_frame(msg, time.time())
                self.flush()
        except ConnectionClosed:
            pass
        finally:
            code = self.ws.close_code or 1006
            self.server.close_codes.append(code)
            self.core.transport_closed(code, time.time())
            self.flush()
            if self._timer is not None:
                self._timer.cancel()
            self._out.put_nowait(None)
            writer.cancel()

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            self.loop.call_soon(self._woken)

    def _woken(self) -> None:
        self._wake_pending = False
        self.flush()

    def flush(self) -> None:
        """Move frames to the writer, run backend requests and backends, re-arm the timer."""
        now = time.time()
        for _ in range(100_000):
            frames = self.core.frames_to_send()
            for f in frames:
                self._out.put_nowait(f)
            events = self.core.events()
            if self.core.session is not None:
                self.session = self.core.session
            s = self.session
            for ev in events:
                if isinstance(ev, AuthRequested):
                    ok = self.server.tokens is None or ev.token in self.server.tokens
                    principal = "test" if self.server.tokens is None else f"tok:{ev.token}"
                    self.core.auth_result(principal if ok else None, now)
                elif isinstance(ev, CloseTransport):
                    if not self._closing:
                        self._closing = True
                        self._out.put_nowait(_CloseReq(ev.code, ev.reason))
                else:
                    self.server._backend_event(s, ev, now)
            produced = 0
            if self.core.session is not None:
                sid = self.core.session.sid
                for (bsid, _cid), be in list(self.server.backends.items()):
                    if bsid == sid:
                        before = be.produced
                        be.pump(now)
                        produced += be.produced - before
            if not frames and not events and not produced:
                break
        d = self.core.next_deadline()
        if d != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = d
            self._timer = None if d is None else self.loop.call_later(max(0.0, d - now) + 0.001, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.tick(time.time())
        self.flush()

    async def _write_loop(self) -> None:
        try:
            while True:
                f = await self._out.get()
                if f is None:
                    return
                if isinstance(f, _CloseReq):
                    await self.ws.close(f.code, f.reason)
                    return
                await self.ws.send(f)
        except ConnectionClosed:
            pass


@dataclass(frozen=True)
class _CloseReq:
    code: int
    reason: str
