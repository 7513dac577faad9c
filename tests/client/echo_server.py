"""The reference server with an echo backend, for the client tests.

:class:`EchoServer` runs the real :class:`~nimbus_websocket.node_runtime.server.Server`
(``ServerOptions(backend_factory=...)``); only what a channel *is* is fake.
:class:`EchoBackend` implements the server's ``Backend`` protocol and picks
its behaviour from ``open.user.username`` (test hooks, not a product feature):

* ``echo`` (default) -- a ``cat``: input comes back as stdout; input counts
  as consumed only once it was echoed, so a client that stops reading
  eventually blocks its own writes (end-to-end backpressure); ``eof`` ends
  it with status 0 once everything was echoed;
* ``gen:N`` -- writes ``N`` bytes of :func:`gen_bytes` then exits 0;
* ``exit:C`` -- exits with status ``C`` at once; ``stderr:TEXT`` writes
  ``TEXT`` to stderr, then exits 3;
* ``fail`` -- the open fails: ``open_err`` with code ``TARGET_UNREACHABLE``.

``signal`` ends a backend with that signal; ``resize`` and ``signal`` are
recorded in :attr:`EchoServer.resizes` and :attr:`EchoServer.signals`.
Output is produced only while the session's read budget allows, one chunk
(at most ``max_read``) per event-loop turn, as the PTY backend reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from typing import Any

from nimbus_websocket.core import BackendOpen, ServerConfig, SessionRegistry
from nimbus_websocket.node_runtime.server import BackendError, BackendSink, Server, ServerOptions
from websockets.asyncio.server import ServerConnection

__all__ = ["EchoBackend", "EchoServer", "gen_bytes", "gen_sha256"]

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


class _Budget:
    """What a test asks of a channel's session: its read budget (``session.read_budget(cid)``)."""

    def __init__(self, sink: BackendSink, cid: int) -> None:
        self._sink = sink
        self._cid = cid

    def read_budget(self, cid: int) -> int:
        assert cid == self._cid, (cid, self._cid)
        return self._sink.read_budget()


class EchoBackend:
    """One channel's fake terminal (the server's ``Backend`` protocol)."""

    def __init__(self, server: EchoServer, sink: BackendSink, ev: BackendOpen) -> None:
        self.server = server
        self.sink = sink
        self.cid = ev.id
        name, _, self.arg = ev.user.username.partition(":")
        self.mode = name if name in ("gen", "exit", "stderr", "fail") else "echo"
        #: Input not yet echoed (it counts as consumed once echoed).
        self.pending: deque[bytes] = deque()
        #: Output bytes handed to the server so far.
        self.produced = 0
        self.paused = True
        self.closed = False
        self.exited = False
        self._eof = False
        self._scheduled = False

    @property
    def session(self) -> _Budget:
        """The channel's read budget, as ``session.read_budget(cid)``."""
        return _Budget(self.sink, self.cid)

    # ------------------------------------------------------------ Backend protocol

    async def start(self) -> None:
        if self.mode == "fail":
            raise BackendError("TARGET_UNREACHABLE", "no such host")
        self.server.backends.append(self)
        self._schedule()  # runs once the server reported the channel open

    def write(self, data: bytes) -> None:
        if self.closed or self.exited:
            self.sink.input_written(len(data))  # a gone process discards input
            return
        self.pending.append(data)
        self._schedule()

    def eof(self) -> None:
        self._eof = True
        self._schedule()

    def resize(self, cols: int, rows: int) -> None:
        self.server.resizes.append((self.cid, cols, rows))

    def signal(self, sig: str) -> None:
        self.server.signals.append((self.cid, sig))
        self._exit(None, sig)

    def pause(self, paused: bool) -> None:
        self.paused = paused
        if not paused:
            self._schedule()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pending.clear()
            if self in self.server.backends:
                self.server.backends.remove(self)

    async def wait_closed(self) -> None:
        return None

    # ------------------------------------------------------------ output

    def _schedule(self) -> None:
        if not self._scheduled and not self.closed:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._step)

    def _step(self) -> None:
        """Produce at most one chunk within the read budget; go on next turn if there is more."""
        self._scheduled = False
        if self.closed or self.exited:
            return
        budget = self.sink.read_budget()
        if self.mode == "echo":
            if self.pending and budget > 0:
                chunk = self.pending.popleft()
                if len(chunk) > budget:
                    self.pending.appendleft(chunk[budget:])
                    chunk = chunk[:budget]
                self.produced += len(chunk)
                self.sink.output("stdout", chunk)
                self.sink.input_written(len(chunk))
            if not self.pending and self._eof:
                self._exit(0, None)
            elif self.pending:
                self._schedule_if(budget)
        elif self.mode == "gen":
            total = int(self.arg)
            if self.produced < total and budget > 0:
                n = min(budget, total - self.produced)
                data = gen_bytes(n, self.produced)
                self.produced += n
                self.sink.output("stdout", data)
            if self.produced >= total:
                self._exit(0, None)
            else:
                self._schedule_if(budget)
        elif self.mode == "exit":
            self._exit(int(self.arg), None)
        elif self.mode == "stderr" and budget >= len(self.arg):
            self.sink.output("stderr", self.arg.encode())
            self._exit(3, None)

    def _schedule_if(self, budget: int) -> None:
        # Budget left after this chunk: next turn; none: the server's pause(False) restarts it.
        if budget > 0 and self.sink.read_budget() > 0:
            self._schedule()

    def _exit(self, code: int | None, sig: str | None) -> None:
        if not self.exited:
            self.exited = True
            self.sink.exited(code, sig)


class EchoServer:
    """The reference server on 127.0.0.1 and a free port, every channel an :class:`EchoBackend`.

    Start with ``await server.start()`` (or ``async with``); ``server.url`` is
    ``ws://127.0.0.1:<port>/ws/ssh``.  ``tokens``: accepted bearer tokens
    (``None``: any auth, as the reference server on loopback allows).
    ``compression``: ``None`` or ``"deflate"`` (the server's bounded permessage-deflate).
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        tokens: set[str] | None = None,
        compression: str | None = None,
    ) -> None:
        if compression not in (None, "deflate"):
            raise ValueError(f"compression must be None or 'deflate', not {compression!r}")
        self.resizes: list[tuple[int, int, int]] = []
        self.signals: list[tuple[int, str]] = []
        #: Live (started, not closed) backends.
        self.backends: list[EchoBackend] = []
        self.tokens = tokens
        self._seen: dict[ServerConnection, None] = {}  # connections that authenticated, in order
        self.server = Server(
            ServerOptions(
                port=0,
                config=config or ServerConfig(),
                per_message_deflate=compression == "deflate",
                backend_factory=self._backend,
                auth_hook=self._auth,
            )
        )

    def _backend(self, sink: Any, ev: BackendOpen) -> EchoBackend:
        return EchoBackend(self, sink, ev)

    def _auth(self, scheme: str, token: str | None) -> str | None:
        """Any auth (``tokens`` None) or a bearer token in ``tokens``; notes the connections."""
        for ws in _connections(self.server):
            self._seen.setdefault(ws, None)
        if self.tokens is None:
            return "test"
        return f"tok:{token}" if scheme == "bearer" and token in self.tokens else None

    @property
    def url(self) -> str:
        """The WebSocket URL of the endpoint."""
        return self.server.url

    @property
    def port(self) -> int:
        """The bound port."""
        return self.server.port

    @property
    def registry(self) -> SessionRegistry:
        """The server's sessions (attached or retained for resume)."""
        return self.server.registry

    @property
    def close_codes(self) -> list[int]:
        """WebSocket close codes of the authenticated connections that ended, in the order they opened.

        Read from the connections themselves: a code is known as soon as the
        socket closed, before the server ends or detaches the session.
        """
        return [code for ws in self._seen if (code := ws.close_code) is not None]

    async def start(self) -> EchoServer:
        """Listen on 127.0.0.1 and a free port."""
        await self.server.start()
        return self

    async def stop(self) -> None:
        """Close every connection (1001) and stop listening."""
        await self.server.stop()

    async def __aenter__(self) -> EchoServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def backend(self, cid: int) -> EchoBackend:
        """The (only) live backend of channel ``cid``."""
        found = [b for b in self.backends if b.cid == cid and not b.closed]
        assert len(found) == 1, found
        return found[0]

    def abort_all(self) -> None:
        """Drop every TCP connection (server side), as a crash of the network would."""
        for ws in _connections(self.server):
            ws.transport.abort()


def _connections(server: Server) -> set[ServerConnection]:
    """The server's open WebSocket connections (:attr:`Server.connections`)."""
    return set(server.connections)
