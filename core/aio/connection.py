"""The client connection layer: :class:`Connection` and :class:`Channel` over the core.

This module is the part of the client that both Python runtimes share: the
host runtime (CPython, with :class:`~.websockets_impl.WebsocketsImpl`) and the
browser runtime (Pyodide, with a wrapper around the JavaScript
``WebSocket``).  It is therefore written only against

* a WHATWG-shaped socket (:mod:`.whatwg`): ``factory(url, protocols)``,
  ``send``, ``close``, ``bufferedAmount``, ``readyState``, ``protocol`` and
  the ``on*`` handler attributes;
* ``asyncio`` futures and ``loop.call_later`` timers -- no threads, no
  ``asyncio.run``, no blocking call;
* an injected wall clock (``time.time``) and random source (``random.random``).

It holds no protocol rule.  Every decision -- handshake, credit, heartbeats,
reconnect backoff, exactly-once resume, close codes -- is the core's
:class:`~nimbus_websocket.core.ClientSession`.  This layer only:

1. shuttles frames: ``onmessage`` -> ``session.receive_frame`` -> events ->
   user callbacks, synchronously, never one ``await`` per message (so it
   runs unchanged inside a browser event loop);
2. feeds the clock: a single ``call_later`` timer follows
   ``session.next_deadline()``, and ``bufferedAmount`` is fed to the session
   after every write and, while it is above the low-water mark, on a short
   polling timer (WHATWG has no "drained" event);
3. opens a new socket on :class:`~nimbus_websocket.core.OpenTransport` and,
   on :class:`~nimbus_websocket.core.CloseTransport`, detaches the old
   socket's listeners before closing it: nothing the old socket does is ever
   reported again;
4. turns events into callbacks (:meth:`Connection.on`, :meth:`Channel.on`)
   and async iteration (``async for chunk in channel``), and reports
   consumption back, because **only consumed data earns credit**.

Consumption rule (what makes memory bounded end to end): a chunk delivered
to ``data``/``stderr`` callbacks counts as consumed when the callbacks
returned (or, for a callback returning an awaitable, when it completed); a
chunk taken through iteration counts when the iterator hands it out.  Until
then the server holds back, because it cannot send beyond the credit the
client granted, and the client grants only what was consumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..client import MAX_CHANNELS, ClientSession
from ..client_config import ClientOptions, auth_from_value
from ..errors import (
    ChannelError,
    ChannelOpenError,
    CloseCode,
    CloseError,
    ErrorCode,
    NimbusError,
    sendable_close_code,
    truncate_reason,
)
from ..events import (
    ChannelClosed,
    ChannelData,
    ChannelExit,
    ChannelOpened,
    ChannelOpenFailed,
    ChannelResized,
    ClientEvent,
    CloseTransport,
    ConnectionClosed,
    Diagnostic,
    OpenTransport,
    PolicyEvent,
    ShareAnswered,
    StateChanged,
    ViewersChanged,
    reached_ready,
)
from ..messages import Target, Term, User, ViewerInfo
from ..profiles import Frame
from ..resume import ResumeStore
from .options import ConnectOptions, ResumeOptions, RetryOptions
from .whatwg import CLOSED, OPEN, SocketFactory, WebSocketLike

__all__ = [
    "AuthProvider",
    "Channel",
    "ChannelError",
    "ChannelOpenError",
    "ConnectOptions",
    "Connection",
    "Hold",
    "ResumeOptions",
    "RetryOptions",
    "ShareLink",
    "connect_with",
]

log = logging.getLogger("nimbus_websocket.client")

#: ``auth()`` -> ``{"scheme": "bearer", "token": ...}`` / ``{"scheme": "none"}`` / ``None``
#: (sync or async); called before every ``hello``, so it can refresh tokens.
AuthProvider = Callable[[], Any]
Listener = Callable[[Any], object]

#: Seconds between ``bufferedAmount`` polls while it is above the low-water mark.
BUFFERED_POLL_INTERVAL = 0.01
#: Timers fire this much after a deadline, so ``tick`` never runs a hair early.
_TIMER_SLACK = 0.001


# ------------------------------------------------------------------- emitter


class _Emitter:
    """Named listener lists; a listener's exception is logged, never propagated."""

    def __init__(self, names: Iterable[str], owner: str) -> None:
        self._listeners: dict[str, list[Listener]] = {n: [] for n in names}
        self._owner = owner

    def on(self, name: str, callback: Listener) -> Callable[[], None]:
        try:
            lst = self._listeners[name]
        except KeyError:
            raise ValueError(
                f"unknown {self._owner} event {name!r} (one of {', '.join(self._listeners)})"
            ) from None
        lst.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                lst.remove(callback)

        return unsubscribe

    def has(self, name: str) -> bool:
        return bool(self._listeners[name])

    def emit(self, name: str, arg: Any) -> list[Awaitable[Any]]:
        """Call every listener of ``name``; return the awaitables they returned."""
        pending: list[Awaitable[Any]] = []
        listeners = self._listeners[name]
        for cb in listeners if len(listeners) == 1 else list(listeners):  # a copy only when it matters
            try:
                result = cb(arg)
            except Exception:
                log.exception("%s %r listener %r raised", self._owner, name, cb)
                continue
            if result is not None and inspect.isawaitable(result):
                pending.append(result)
        return pending


class Hold:
    """A chunk a ``data``/``stderr`` listener is not done with yet: consumed once :meth:`release` is called.

    A listener may return a ``Hold`` instead of another awaitable.  The
    chunk's credit is then granted synchronously inside :meth:`release` --
    no event-loop turn, which in Pyodide is a JavaScript macrotask and a
    proxy per chunk (the JS facade releases from xterm.js's write callback).
    A ``Hold`` is awaitable too (it completes once released), so it works
    wherever an awaitable does.
    """

    __slots__ = ("_callbacks", "released")

    def __init__(self) -> None:
        #: Whether :meth:`release` was called.
        self.released = False
        self._callbacks: list[Callable[[], object]] = []

    def release(self) -> None:
        """The listener is done with the chunk (idempotent)."""
        if self.released:
            return
        self.released = True
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("hold callback %r failed", cb)

    def on_release(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once released (at once if it already is)."""
        if self.released:
            callback()
        else:
            self._callbacks.append(callback)

    def __await__(self) -> Generator[Any, None, None]:
        if not self.released:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def wake() -> None:
                if not fut.done():
                    fut.set_result(None)

            self.on_release(wake)
            yield from fut.__await__()


# -------------------------------------------------------------------- channel


@dataclass(frozen=True, slots=True)
class ShareLink:
    """A share link (:meth:`Channel.share`): the grant id, the viewer's bearer ``token``,
    its ``mode`` and expiry (seconds since the epoch), and the server's endpoint."""

    grant: str
    token: str = field(repr=False)
    mode: str
    expires: float
    endpoint: str

    @property
    def url(self) -> str:
        """The endpoint URL carrying the token as ``?share=`` (``nimbus-ws connect --share URL``)."""
        sep = "&" if "?" in self.endpoint else "?"
        return f"{self.endpoint}{sep}share={self.token}"

    def page_url(self, page: str | None = None) -> str:
        """The terminal page's link for a viewer: ``page`` (default: the endpoint's
        ``http(s)`` origin and base path, ``/ws/ssh`` dropped) with ``?share=TOKEN``."""
        if page is None:
            parts = urlsplit(self.endpoint)
            scheme = "https" if parts.scheme == "wss" else "http"
            base = parts.path.rsplit("/ws/ssh", 1)[0] if parts.path.endswith("/ws/ssh") else parts.path.rsplit("/", 1)[0]
            page = urlunsplit((scheme, parts.netloc, (base or "") + "/", "", ""))
        sep = "&" if "?" in page else "?"
        return f"{page}{sep}share={self.token}"


class Channel:
    """One terminal channel of a :class:`Connection` (from :meth:`Connection.open_session`).

    Output arrives as ``data`` (stdout) and ``stderr`` callbacks and/or by
    iteration::

        async for chunk in channel:          # stdout bytes, until the channel closes
            ...
        async for stream, chunk in channel.iter_output():   # both streams, in order
            ...

    Delivery mode.  Until the application registers an output callback
    (``data`` or ``stderr``), output is kept in a per-channel queue so that
    nothing is lost before iteration starts.  Once iteration has started,
    every chunk goes to the callbacks *and* the queue, and counts as consumed
    when the iterator hands it out.  With callbacks and no iteration, a chunk
    counts as consumed when its callbacks returned (stderr without a
    listener is then discarded).  The queue is bounded by the channel's
    credit window (at most ``max_window``, 2 MiB by default): the server
    cannot send beyond the credit granted, and credit is granted only for
    consumed bytes -- a consumer that stops reading stops the server within
    one window.

    Events (:meth:`on`): ``data`` (``bytes``), ``stderr`` (``bytes``), ``exit``
    (:class:`~nimbus_websocket.core.ChannelExit`: ``.code``, ``.sig``),
    ``error`` (a :class:`ChannelError` or the connection's
    :class:`~nimbus_websocket.core.CloseError`), ``close`` (this channel),
    ``resumed`` (this channel, after a reconnect brought it back).
    """

    def __init__(self, conn: Connection, cid: int, *, resumed: bool = False) -> None:
        self._conn = conn
        self.id = cid
        #: ``True`` when the channel came back through a resume at connect.
        self.resumed = resumed
        #: Exit status of the remote process (``None``: not exited, or killed by a signal).
        self.exit_status: int | None = None
        #: Name of the signal that killed the remote process (``"TERM"``...), if any.
        self.exit_signal: str | None = None
        #: Why the channel ended abnormally, once it did.
        self.error: NimbusError | None = None
        #: Reason text of the close, once closed.
        self.close_reason = ""
        self.closed = False
        self.opened = resumed
        #: ``open_ok.size`` of a ``get`` file channel: the file's length.
        self.file_size: int | None = None
        self._events = _Emitter(("data", "stderr", "exit", "error", "close", "resumed", "viewers", "resize"), "channel")
        #: Who watches this channel through share links (``ViewerInfo``), as the server last said.
        self.viewers: tuple[ViewerInfo, ...] = ()
        #: A viewer session: the shared terminal's size, as the server last said.
        self.term_size: tuple[int, int] | None = None
        self._share_waiters: dict[int, asyncio.Future[ShareAnswered]] = {}
        self._queue: deque[tuple[str, bytes]] = deque()
        self._queued = 0
        self._iterating = False
        self._waiter: asyncio.Future[None] | None = None
        #: Sends (and an eof) that wait for input capacity go in call order, one at a time
        #: (``asyncio.Lock`` is FIFO); ``_waiting_sends`` counts them for the fast path.
        self._send_order = asyncio.Lock()
        self._waiting_sends = 0
        self._opened_fut: asyncio.Future[None] = conn._loop.create_future()
        self._closed_fut: asyncio.Future[None] = conn._loop.create_future()
        if resumed:
            self._opened_fut.set_result(None)

    def __repr__(self) -> str:
        return f"<Channel {self.id} {self.state}>"

    # ------------------------------------------------------------ properties

    @property
    def state(self) -> str:
        """``opening``, ``open``, ``exited``, ``closing`` or ``closed``."""
        return self._conn._session.channel_state(self.id)

    @property
    def queued_bytes(self) -> int:
        """Output bytes received and waiting for the iterator (not yet consumed)."""
        return self._queued

    # ---------------------------------------------------------------- events

    def on(self, event: str, callback: Listener) -> Callable[[], None]:
        """Call ``callback(arg)`` on ``event``; returns a function that unsubscribes."""
        return self._events.on(event, callback)

    # ----------------------------------------------------------------- output

    def __aiter__(self) -> _OutputIterator:
        """Iterate stdout chunks (``bytes``) until the channel closes."""
        self._iterating = True
        return _OutputIterator(self, pairs=False)

    def iter_output(self) -> _OutputIterator:
        """Iterate ``(stream, bytes)`` for both streams, in arrival order."""
        self._iterating = True
        return _OutputIterator(self, pairs=True)

    async def read(self) -> bytes:
        """Everything the channel still outputs on stdout, until it closes."""
        out = bytearray()
        async for chunk in self:
            out += chunk
        return bytes(out)

    # ------------------------------------------------------------------ input

    async def send(self, data: bytes | bytearray | memoryview | str) -> None:
        """Send input (``str`` is UTF-8 encoded); waits while the input buffer is full.

        Input is kept until the server acknowledges it (exactly-once resume),
        at most ``input_buffer_limit`` bytes per channel; while that bound is
        reached, or while the socket's ``bufferedAmount`` is above the
        high-water mark, this waits.  Sends of one channel go out in the order
        they were called, each one's bytes together, also from several tasks
        at once.  Raises :class:`ChannelError` (or the
        connection's :class:`~nimbus_websocket.core.CloseError`) once the
        channel cannot take input any more.
        """
        raw = data.encode() if isinstance(data, str) else data
        whole = raw if type(raw) is bytes else None  # sent as it is when it goes in one piece (no copy)
        view = memoryview(raw).cast("B")
        conn = self._conn
        if not self._waiting_sends:  # nobody queued before us: all of it now, if it fits
            self._check_input()
            if len(view) <= conn._session.input_capacity(self.id):
                if view:
                    conn._session.send_input(self.id, whole if whole is not None else bytes(view), conn._clock())
                    conn._pump()
                return
        # Wait in line: a send that has to wait is never overtaken by a later one, so
        # concurrent senders' data never interleave (each send's bytes stay together).
        self._waiting_sends += 1
        try:
            async with self._send_order:
                off = 0
                while off < len(view):
                    self._check_input()
                    cap = conn._session.input_capacity(self.id)
                    if cap:
                        part = whole if whole is not None and off == 0 and cap >= len(view) else bytes(view[off : off + cap])
                        off += conn._session.send_input(self.id, part, conn._clock())
                        conn._pump()
                    if off < len(view):
                        await conn._wait_capacity(self.id)
        finally:
            self._waiting_sends -= 1

    def try_send(self, data: bytes | bytearray | memoryview | str) -> bool:
        """Send all of ``data`` now if the input buffer has room for it, without awaiting.

        ``False`` (nothing sent) when it has not, or while a :meth:`send` of
        this channel waits (it would overtake that send's bytes): use
        :meth:`send`, which waits in line.  A keystroke goes out in the
        caller's own turn of the event loop.  Raises as :meth:`send` does
        once the channel cannot take input any more.
        """
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._check_input()
        if self._waiting_sends:
            return False
        conn = self._conn
        if len(payload) > conn._session.input_capacity(self.id):
            return False
        if payload:
            conn._session.send_input(self.id, payload, conn._clock())
            conn._pump()
        return True

    def resize(self, cols: int, rows: int) -> None:
        """Resize the remote terminal (coalesced by the core to about 60 per second)."""
        conn = self._conn
        conn._session.resize(self.id, cols, rows, conn._clock())
        conn._pump()

    async def signal(self, sig: str) -> None:
        """Deliver ``sig`` (``"INT"``, ``"TERM"``, ``"HUP"``...) to the remote process.

        A signal is a momentary action: while the connection is not ready it
        is dropped (send ``b"\\x03"`` as input for a Ctrl-C that must survive
        a reconnect).
        """
        conn = self._conn
        conn._session.signal(self.id, sig)  # the core normalises the name
        conn._pump()

    async def send_eof(self) -> None:
        """End the input: the remote command sees end-of-file after what was sent.

        Needs a server announcing ``caps.eof`` (``ValueError`` otherwise).
        Comes after every :meth:`send` called before it, also those still waiting.
        """
        if self._waiting_sends:
            async with self._send_order:  # FIFO: behind the sends already waiting
                self._send_eof_now()
            return
        self._send_eof_now()

    def _send_eof_now(self) -> None:
        self._check_input()
        conn = self._conn
        conn._session.send_eof(self.id)
        conn._pump()

    async def share(self, mode: str = "read", ttl: int | None = 3600) -> ShareLink:
        """A share link to this terminal: ``mode`` ``"read"`` (watch) or ``"write"`` (also type),
        valid ``ttl`` seconds.  Anyone holding :attr:`ShareLink.token` may attach while it
        lasts; it never opens another channel or reveals this session's token.  Raises
        :class:`ChannelError` when the server refuses (``POLICY_DENIED``, ``CHANNEL_LIMIT``).
        """
        conn = self._conn
        try:
            ref = conn._session.share(self.id, mode, ttl)
        except ValueError as exc:
            raise ChannelError(ErrorCode.UNSUPPORTED, str(exc)) from None
        fut: asyncio.Future[ShareAnswered] = conn._loop.create_future()
        self._share_waiters[ref] = fut
        conn._pump()
        try:
            ans = await asyncio.wait_for(asyncio.shield(fut), 30)
        finally:
            self._share_waiters.pop(ref, None)
        if ans.grant is None or ans.token is None:
            raise ChannelError(ans.code or ErrorCode.UNKNOWN, ans.msg or "share refused")
        return ShareLink(ans.grant, ans.token, ans.mode or mode, (ans.expires or 0) / 1000, conn.url)

    def unshare(self, grant: str | None = None) -> None:
        """Revoke share link ``grant`` (``None``: every link of this channel); its viewers are closed."""
        conn = self._conn
        conn._session.unshare(self.id, grant)
        conn._pump()

    async def close(self, reason: str | None = None) -> None:
        """Close the channel and wait until the server confirmed it."""
        conn = self._conn
        if not self.closed:
            conn._session.close_channel(self.id, reason)
            conn._pump()
        await self.wait_closed(raise_error=False)

    async def wait_opened(self) -> None:
        """Wait until the channel is open; raise if it could not be opened."""
        await asyncio.shield(self._opened_fut)
        if not self.opened:
            raise self.error or ChannelError("CLOSED", "channel closed before it opened")

    async def wait_closed(self, *, raise_error: bool = True) -> int | None:
        """Wait until the channel is closed; return :attr:`exit_status`.

        Raises :attr:`error` when the channel ended abnormally (unless
        ``raise_error`` is false).
        """
        await asyncio.shield(self._closed_fut)
        if raise_error and self.error is not None:
            raise self.error
        return self.exit_status

    # ------------------------------------------------------------- internals

    def _check_input(self) -> None:
        if self.closed or not self._conn._session.takes_input(self.id):
            raise self.error or self._conn.error or ChannelError("CLOSED", f"channel {self.id} takes no input")

    def _wake(self) -> None:
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    def _on_opened(self, resumed: bool, size: int | None = None) -> None:
        if size is not None:
            self.file_size = size
        if self.opened:
            if resumed:
                self._emit("resumed", self)
            return
        self.opened = True
        if not self._opened_fut.done():
            self._opened_fut.set_result(None)

    def _on_data(self, stream: str, data: bytes) -> None:
        events = self._events
        callbacks = events.has("data") or events.has("stderr")
        pending = events.emit("data" if stream == "stdout" else "stderr", data)
        if self._iterating or not callbacks:
            self._queue.append((stream, data))
            self._queued += len(data)
            self._conn._spawn_all(pending)
            self._wake()
        elif pending:
            self._conn._consume_after(self.id, len(data), pending)
        else:
            self._conn._consume(self.id, len(data))

    def _on_exit(self, ev: ChannelExit) -> None:
        self.exit_status = ev.code
        self.exit_signal = ev.sig
        self._emit("exit", ev)

    def _on_closed(self, reason: str, error: NimbusError | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if error is not None and self.error is None:
            self.error = error
            if self.opened:
                self._emit("error", error)
        if not self._opened_fut.done():
            self._opened_fut.set_result(None)
        self._closed_fut.set_result(None)
        self._wake()
        self._emit("close", self)

    def _emit(self, name: str, arg: Any) -> None:
        self._conn._spawn_all(self._events.emit(name, arg))

    async def _next(self, pairs: bool) -> Any:
        while True:
            if self._queue:
                stream, data = self._queue.popleft()
                self._queued -= len(data)
                self._conn._consume(self.id, len(data))
                if pairs:
                    return stream, data
                if stream == "stdout":
                    return data
                continue
            if self.closed:
                if self.error is not None and self.opened:
                    raise self.error
                raise StopAsyncIteration
            if self._waiter is None or self._waiter.done():
                self._waiter = self._conn._loop.create_future()
            await asyncio.shield(self._waiter)


class _OutputIterator:
    """Async iterator over a channel's output (see :class:`Channel`)."""

    def __init__(self, channel: Channel, pairs: bool) -> None:
        self._channel = channel
        self._pairs = pairs

    def __aiter__(self) -> _OutputIterator:
        return self

    async def __anext__(self) -> Any:
        return await self._channel._next(self._pairs)


# ----------------------------------------------------------------- connection


class Connection:
    """A ``nimbus.ssh.v1`` client connection over a WHATWG-shaped socket.

    Create it with :func:`connect_with` (or the host runtime's
    :func:`~nimbus_websocket.node_runtime.connect`).  It survives network
    loss: the core reconnects with backoff and resumes every channel
    exactly once; ``statechange`` shows ``ready -> reconnecting ->
    authenticating -> ready``.  A terminal failure (auth, rejected resume,
    retries exhausted, a protocol error, a non-retryable close) ends it with
    one :class:`~nimbus_websocket.core.CloseError`, raised by pending awaits
    and emitted as ``error``.

    Events (:meth:`on`): ``statechange``
    (:class:`~nimbus_websocket.core.StateChanged`), ``diagnostic``
    (:class:`~nimbus_websocket.core.Diagnostic`), ``policy``
    (:class:`~nimbus_websocket.core.PolicyEvent`), ``channel`` (a
    :class:`Channel` restored by a resume at connect), ``error``
    (:class:`~nimbus_websocket.core.CloseError`), ``close`` (the error or
    ``None`` after a clean close).
    """

    def __init__(
        self,
        url: str,
        socket_factory: SocketFactory,
        *,
        options: ClientOptions | None = None,
        store: ResumeStore | None = None,
        auth: AuthProvider | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        close_timeout: float = 5.0,
        listeners: Mapping[str, Listener] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.url = url
        self._factory = socket_factory
        self._auth = auth
        self._clock = clock
        self._close_timeout = close_timeout
        self._events = _Emitter(("statechange", "diagnostic", "policy", "channel", "error", "close"), "connection")
        for name, cb in (listeners or {}).items():
            self._events.on(name, cb)
        self._session = ClientSession(options, now=clock(), rand=rand, store=store)
        self._channels: dict[int, Channel] = {}
        #: Channels restored by a resume when this connection started.
        self.resumed_channels: list[Channel] = []
        #: The terminal error, once the connection ended abnormally.
        self.error: CloseError | None = None
        self._started = False
        self._ws: WebSocketLike | None = None
        self._socket_gen = 0
        self._protocol = ""
        self._pumping = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._poll: asyncio.TimerHandle | None = None
        self._send_waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._closing_sockets: set[asyncio.Future[None]] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._ready_fut: asyncio.Future[None] = self._loop.create_future()
        self._closed_fut: asyncio.Future[None] = self._loop.create_future()
        self._finished = False
        self._was_ready = False
        #: Frames the session produced while no socket was open (dropped; normally 0).
        self.dropped_frames = 0

    # ------------------------------------------------------------ properties

    @property
    def state(self) -> str:
        """``idle``, ``connecting``, ``authenticating``, ``ready``, ``reconnecting`` or ``closed``."""
        return self._session.state.value

    @property
    def protocol(self) -> str:
        """The WebSocket subprotocol the server selected (e.g. ``"nimbus.ssh.v1"``)."""
        return self._protocol

    @property
    def profile(self) -> str:
        """The wire profile id in use (e.g. ``"nimbus.v1"``)."""
        return self._session.profile.id

    @property
    def rtt_ms(self) -> float | None:
        """Round-trip time from the last ping/pong, in milliseconds (``None`` before one)."""
        rtt = self._session.rtt
        return None if rtt is None else rtt * 1000

    @property
    def buffered_amount(self) -> int:
        """The current socket's ``bufferedAmount`` (bytes not yet on the network)."""
        ws = self._ws
        return 0 if ws is None else ws.bufferedAmount

    @property
    def pause_reasons(self) -> frozenset[str]:
        """Why credit is withheld right now (``transport``, ``visibility``, ``offline``)."""
        return self._session.pause_reasons

    @property
    def session(self) -> ClientSession:
        """The core session machine (read-only use: diagnostics and tests)."""
        return self._session

    @property
    def channels(self) -> list[Channel]:
        """Channels not yet closed."""
        return [c for c in self._channels.values() if not c.closed]

    # ---------------------------------------------------------------- events

    def on(self, event: str, callback: Listener) -> Callable[[], None]:
        """Call ``callback(arg)`` on ``event``; returns a function that unsubscribes."""
        return self._events.on(event, callback)

    # -------------------------------------------------------------- channels

    async def open_session(
        self,
        target: Mapping[str, Any] | Target,
        user: Mapping[str, Any] | User,
        term: Mapping[str, Any] | Term | None = None,
        *,
        on: Mapping[str, Listener] | None = None,
        **extra: Any,
    ) -> Channel:
        """Open a channel to ``target`` as ``user``; ``term`` asks for a terminal (PTY).

        ``target`` is ``{"host", "port"}``, ``user`` ``{"username", "auth"}``
        (``auth`` is passed opaquely to the server's backend, e.g.
        ``{"type": "password", "password": ...}``), ``term``
        ``{"cols", "rows", "env"}``.  Without ``term`` the server runs the
        session without a PTY (pipes: output is byte-exact and stderr
        separate).  ``on`` registers channel listeners (e.g. ``{"data": cb}``)
        before anything can arrive, so no output is queued for iteration
        first.  Extra keywords (such as ``command``) go to the core's
        ``open_channel`` if it supports them.  Raises
        :class:`ChannelOpenError` on ``open_err`` and the connection's
        :class:`~nimbus_websocket.core.CloseError` if it ends meanwhile.
        Raises :class:`ChannelError` ``CHANNEL_LIMIT`` without asking the
        server while the session holds its most channels (a 5th ``open``
        would end the connection with 4006, PROTOCOL.md 6).
        """
        if self._session.closed:
            raise self.error or self._session.closed_error()
        if self._session.channel_limit_reached():
            raise ChannelError(ErrorCode.CHANNEL_LIMIT, f"at most {MAX_CHANNELS} channels per session")
        cid = self._session.open_channel(
            _target(target), _user(user), _term(term), now=self._clock(), **extra
        )
        ch = Channel(self, cid)
        for name, cb in (on or {}).items():
            ch.on(name, cb)
        self._channels[cid] = ch
        self._pump()
        try:
            await ch.wait_opened()
        except asyncio.CancelledError:  # nobody will use it: close it (a file put then leaves nothing)
            if not ch.closed and cid in self._channels:
                with contextlib.suppress(Exception):
                    self._session.close_channel(cid, "cancelled")
                    self._pump()
            raise
        return ch

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect and wait until ``ready``; raise the :class:`CloseError` if that fails."""
        if not self._started:
            self._started = True
            self._session.connect(self._clock())
            self._pump()
        try:
            await asyncio.shield(self._ready_fut)
        except asyncio.CancelledError:
            self._session.cancel(self._clock())  # the core picks the code (4000) and the outcome
            self._pump()
            raise
        if not self._was_ready:
            raise self.error or CloseError(
                CloseCode.ABNORMAL, None, "CONNECT_FAILED", "connection closed while connecting"
            )

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the connection; with ``NORMAL`` (the default) the server ends the session and its channels.

        Any other code (e.g. ``CloseCode.CANCELLED``) leaves the session on
        the server for a later resume.  Waits (at most ``close_timeout``
        seconds) for the socket's closing handshake, so the server has seen
        the close code when this returns.
        """
        self._session.close(self._clock(), code, reason)  # nothing once closed
        self._pump()
        pending = [f for f in self._closing_sockets if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=self._close_timeout)

    async def wait_closed(self) -> CloseError | None:
        """Wait until the connection is closed for good; return its error (``None``: clean)."""
        await asyncio.shield(self._closed_fut)
        return self.error

    def set_pause(self, reason: str, paused: bool) -> None:
        """Withhold credit for ``reason`` (``"visibility"``, ``"offline"``) or stop doing so."""
        self._session.set_pause(reason, paused, self._clock())
        self._pump()

    def ping(self) -> None:
        """Send a heartbeat now (e.g. after the page became visible again)."""
        self._session.ping(self._clock())
        self._pump()

    def persist(self) -> None:
        """Write the resume state to its store now (e.g. on page hide)."""
        self._session.persist(self._clock())
        self._pump()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- pump

    def _pump(self) -> None:
        """Write the session's frames and dispatch its events until both are drained.

        Re-entrant calls (a callback calling back into the connection)
        return at once: whatever they made the session produce is seen by
        the outermost call's ``has_output`` check, so events are dispatched
        in the order the session produced them.
        """
        if self._pumping:
            return
        self._pumping = True
        session = self._session
        try:
            while True:
                frames = session.frames_to_send()
                if frames:
                    self._write(frames)
                for ev in session.events():
                    try:
                        self._dispatch(ev)
                    except Exception:
                        log.exception("error while dispatching %r", ev)
                if not session.has_output():
                    break
        finally:
            self._pumping = False
        self._after_pump()

    def _write(self, frames: list[Frame]) -> None:
        ws = self._ws
        if ws is None or ws.readyState != OPEN:
            self.dropped_frames += len(frames)
            return
        try:
            for f in frames:
                ws.send(f)
        except Exception:
            log.exception("socket send failed")
        self._session.set_buffered_amount(ws.bufferedAmount, self._clock())

    def _after_pump(self) -> None:
        if self._finished:
            self._cancel_timers()
            self._wake_senders(everyone=True)
            return
        deadline = self._session.next_deadline()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = deadline
            if deadline is not None:
                delay = max(0.0, deadline - self._clock()) + _TIMER_SLACK
                self._timer = self._loop.call_later(delay, self._on_timer)
        # The amount seen after the last write: the socket only drains since.
        if self._poll is None and (
            (self._ws is not None and self._session.buffered_amount > self._session.options.low_water_mark)
            or self._session.paused_for("transport")
        ):
            self._poll = self._loop.call_later(BUFFERED_POLL_INTERVAL, self._on_poll)
        if self._send_waiters:
            self._wake_senders()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._session.tick(self._clock())
        self._pump()

    def _on_poll(self) -> None:
        self._poll = None
        ws = self._ws
        self._session.set_buffered_amount(0 if ws is None else ws.bufferedAmount, self._clock())
        self._pump()

    def _cancel_timers(self) -> None:
        for h in (self._timer, self._poll):
            if h is not None:
                h.cancel()
        self._timer = self._poll = None
        self._timer_at = None

    # ------------------------------------------------------------- dispatch

    def _dispatch(self, ev: ClientEvent) -> None:
        match ev:
            case ChannelData():
                self._on_channel_data(ev)
            case StateChanged():
                if reached_ready(ev):
                    self._was_ready = True
                    if not self._ready_fut.done():
                        self._ready_fut.set_result(None)
                self._emit("statechange", ev)
            case Diagnostic():
                self._emit("diagnostic", ev)
            case PolicyEvent():
                self._emit("policy", ev)
            case OpenTransport():
                self._open_socket(ev)
            case CloseTransport():
                self._close_socket(ev.code, ev.reason)
            case ChannelOpened():
                ch = self._channels.get(ev.id)
                if ch is None:
                    ch = Channel(self, ev.id, resumed=True)
                    self._channels[ev.id] = ch
                    self.resumed_channels.append(ch)
                    self._emit("channel", ch)
                else:
                    ch._on_opened(ev.resumed, ev.size)
            case ChannelOpenFailed():
                ch = self._channels.pop(ev.id, None)
                if ch is not None:
                    ch._on_closed(ev.msg, ChannelOpenError(ev.code, ev.msg, ev.host_key))
            case ChannelExit():
                ch = self._channels.get(ev.id)
                if ch is not None:
                    ch._on_exit(ev)
            case ChannelClosed():
                ch = self._channels.pop(ev.id, None)
                if ch is not None:
                    err: NimbusError | None = None
                    if ev.error is not None:
                        err = self._session.error or ChannelError(ev.error, ev.reason)
                    ch._on_closed(ev.reason, err)
            case ConnectionClosed():
                self._on_connection_closed(ev.error)
            case ShareAnswered():
                ch = self._channels.get(ev.id)
                fut = ch._share_waiters.get(ev.ref) if ch is not None else None
                if fut is not None and not fut.done():
                    fut.set_result(ev)
            case ViewersChanged():
                ch = self._channels.get(ev.id)
                if ch is not None:
                    ch.viewers = ev.viewers
                    ch._emit("viewers", ev.viewers)
            case ChannelResized():
                ch = self._channels.get(ev.id)
                if ch is not None:
                    ch.term_size = (ev.cols, ev.rows)
                    ch._emit("resize", ch.term_size)

    def _on_channel_data(self, ev: ChannelData) -> None:
        ch = self._channels.get(ev.id)
        if ch is None:
            self._consume(ev.id, len(ev.data))
        else:
            ch._on_data(ev.stream, ev.data)

    def _emit(self, name: str, arg: Any) -> None:
        self._spawn_all(self._events.emit(name, arg))

    def _on_connection_closed(self, err: CloseError | None) -> None:
        self.error = err
        self._finished = True
        if not self._ready_fut.done():
            self._ready_fut.set_result(None)
        for ch in list(self._channels.values()):
            ch._on_closed("connection closed", err)
        self._channels.clear()
        if err is not None:
            self._emit("error", err)
        self._emit("close", err)
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)

    # ---------------------------------------------------------- consumption

    def _consume(self, cid: int, n: int) -> None:
        if n:
            session = self._session
            session.consumed(cid, n, self._clock())
            # Nothing to write or dispatch (no grant due): no deadline moved either,
            # so _after_pump has nothing to do -- as in _on_message_data's fast path.
            if session.has_output() or self._send_waiters:
                self._pump()

    def _consume_after(self, cid: int, n: int, pending: list[Awaitable[Any]]) -> None:
        if len(pending) == 1 and type(pending[0]) is Hold:  # no future, no event-loop turn
            pending[0].on_release(functools.partial(self._consume, cid, n))
            return
        fut = asyncio.gather(*pending, return_exceptions=True)
        self._track(fut)
        fut.add_done_callback(lambda _f: self._consume(cid, n))

    def _spawn_all(self, pending: list[Awaitable[Any]]) -> None:
        for aw in pending:
            self._track(asyncio.ensure_future(aw))

    def _track(self, fut: asyncio.Future[Any]) -> None:
        self._tasks.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            self._tasks.discard(f)
            if not f.cancelled() and f.exception() is not None:
                log.error("listener failed", exc_info=f.exception())

        fut.add_done_callback(done)

    async def _wait_capacity(self, cid: int) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()
        self._send_waiters.setdefault(cid, []).append(fut)
        self._wake_senders()
        await fut

    def _wake_senders(self, everyone: bool = False) -> None:
        s = self._session
        for cid in list(self._send_waiters):
            if everyone or not s.takes_input(cid) or s.input_capacity(cid) > 0:
                for fut in self._send_waiters.pop(cid):
                    if not fut.done():
                        fut.set_result(None)

    # -------------------------------------------------------------- sockets

    def _open_socket(self, ev: OpenTransport) -> None:
        self._socket_gen += 1
        gen = self._socket_gen
        try:
            ws = self._factory(self.url, list(ev.subprotocols))
        except Exception as exc:
            log.warning("cannot create a socket for %s: %s", self.url, exc)
            self._loop.call_soon(self._socket_failed, gen, str(exc))
            return
        ws.binaryType = "arraybuffer"
        ws.onopen = lambda _e: self._on_open(ws)
        ws.onmessage = lambda e: self._on_message(ws, e)
        if hasattr(ws, "onmessagedata"):  # the extension (whatwg module doc): no event per message
            ws.onmessagedata = functools.partial(self._on_message_data, ws)
        ws.onclose = lambda e: self._on_close(ws, e)
        ws.onerror = lambda _e: None  # a close event always follows
        self._ws = ws

    def _socket_failed(self, gen: int, reason: str) -> None:
        if gen == self._socket_gen and self._ws is None and not self._finished:
            self._session.transport_closed(self._clock(), CloseCode.ABNORMAL, reason)
            self._pump()

    def _on_open(self, ws: WebSocketLike) -> None:
        if ws is not self._ws:
            return
        self._protocol = ws.protocol or ""
        if self._auth is None:
            self._session.transport_opened(self._clock(), None)
            self._pump()
        else:
            self._track(self._loop.create_task(self._authenticate(ws)))

    async def _authenticate(self, ws: WebSocketLike) -> None:
        assert self._auth is not None
        try:
            result = self._auth()
            if inspect.isawaitable(result):
                result = await result
            auth = auth_from_value(result)  # the core's validation of hello.auth
        except Exception as exc:
            if ws is self._ws and not self._finished:
                log.warning("auth provider failed: %s", exc)
                self._session.auth_provider_failed(self._clock(), str(exc))  # the core picks the codes
                self._pump()
            return
        if ws is not self._ws or ws.readyState != OPEN:
            return
        self._session.transport_opened(self._clock(), auth)
        self._pump()

    def _on_message(self, ws: WebSocketLike, ev: Any) -> None:
        data = ev.data
        if not isinstance(data, (str, bytes)):
            data = bytes(data)
        self._on_message_data(ws, data)

    def _on_message_data(self, ws: WebSocketLike, data: str | bytes) -> None:
        if ws is not self._ws:
            return
        session = self._session
        if self._pumping:  # a message handled from inside a listener: keep the order
            session.receive_frame(data, self._clock())
            self._pump()
            return
        # The common case, a data frame and nothing else: hand it to the
        # channel directly, as _pump would (re-entrant pumps wait for the end).
        ev = session.receive_data(data, self._clock())
        if ev is not None:
            self._pumping = True
            try:
                self._on_channel_data(ev)
            except Exception:
                log.exception("error while dispatching %r", ev)
            finally:
                self._pumping = False
            if not session.has_output():
                return  # nothing written, no deadline moved: _after_pump has nothing to do
        self._pump()

    def _on_close(self, ws: WebSocketLike, ev: Any) -> None:
        if ws is not self._ws:
            return
        self._ws = None
        _detach(ws)
        now = self._clock()
        code = int(getattr(ev, "code", CloseCode.ABNORMAL))
        self._session.transport_closed(now, code, str(getattr(ev, "reason", "")))
        self._session.set_buffered_amount(0, now)  # that socket's buffer is gone with it
        self._pump()

    def _close_socket(self, code: int, reason: str) -> None:
        ws, self._ws = self._ws, None
        if ws is None:
            return
        _detach(ws)
        self._session.set_buffered_amount(0, self._clock())
        done: asyncio.Future[None] = self._loop.create_future()

        def closed(_e: object) -> None:
            if not done.done():
                done.set_result(None)

        ws.onclose = closed  # completion only; never reported to the session
        self._closing_sockets.add(done)
        done.add_done_callback(self._closing_sockets.discard)
        if ws.readyState == CLOSED:
            closed(None)
            return
        try:
            ws.close(sendable_close_code(code), truncate_reason(reason))
        except Exception:
            log.exception("socket close failed")
            closed(None)


# ------------------------------------------------------------------ helpers


def _detach(ws: WebSocketLike) -> None:
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = None
    if hasattr(ws, "onmessagedata"):
        ws.onmessagedata = None


def _target(t: Mapping[str, Any] | Target) -> Target:
    if isinstance(t, Target):
        return t
    return Target(str(t["host"]), int(t["port"]))


def _user(u: Mapping[str, Any] | User) -> User:
    if isinstance(u, User):
        return u
    return User(str(u["username"]), dict(u.get("auth") or {}))


def _term(t: Mapping[str, Any] | Term | None) -> Term | None:
    if t is None or isinstance(t, Term):
        return t
    return Term(int(t.get("cols", 80)), int(t.get("rows", 24)), dict(t.get("env") or {}))


async def connect_with(
    url: str,
    socket_factory: SocketFactory,
    *,
    options: ConnectOptions | None = None,
    auth: AuthProvider | None = None,
    store: ResumeStore | None = None,
    on: Mapping[str, Listener] | None = None,
    clock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
    **keywords: Any,
) -> Connection:
    """Connect to ``url`` with sockets made by ``socket_factory(url, protocols)``; return when ready.

    ``socket_factory`` is a WHATWG-shaped ``WebSocket`` class or callable
    (:mod:`.whatwg`).  The connection's options are ``options`` (a
    :class:`ConnectOptions`) with ``keywords`` -- any of its fields, e.g.
    ``heartbeat_interval=5.0`` or ``retry=RetryOptions(max_retries=3)`` --
    replacing fields (an unknown keyword is a ``TypeError``).  ``store``
    replaces the store ``options.resume`` would make.  ``auth`` is a sync or
    async callable returning ``{"scheme": "bearer", "token": ...}``,
    ``{"scheme": "none"}`` or ``None``, called before every ``hello``.
    ``on`` registers listeners before the first state change (e.g.
    ``{"statechange": cb}``).  Raises
    :class:`~nimbus_websocket.core.CloseError` if the connection cannot be
    established (refused, auth failed, resume rejected, handshake timeout...).
    """
    opts = ConnectOptions.from_keywords(options, **keywords)
    if store is None:
        store = (opts.resume or ResumeOptions()).make_store()
    conn = Connection(
        url,
        socket_factory,
        options=opts.client_options(),
        store=store,
        auth=auth,
        clock=clock,
        rand=rand,
        close_timeout=opts.close_timeout,
        listeners=on,
    )
    await conn.start()
    return conn
