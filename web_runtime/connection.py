"""The browser client: :func:`connect` and :class:`WebConnection` (Pyodide, over the JS ``WebSocket``).

Same options and the same :class:`~nimbus_websocket.core.aio.Connection`
/ :class:`~nimbus_websocket.core.aio.Channel` API as the CPython
client -- it *is* that connection layer, fed with a
:class:`~.socket.BrowserWebSocket` -- plus what only a page has:

* resume state in ``sessionStorage`` by default (TTL 60 s), so a reload
  within the TTL resumes the same channels from the exact byte
  (:mod:`.storage`; the channels come back in
  :attr:`~nimbus_websocket.core.aio.Connection.resumed_channels`
  and as ``channel`` events);
* page lifecycle (:mod:`.lifecycle`): pause reasons ``visibility`` and
  ``offline``, verification of a suspect connection, persistence on
  ``pagehide``;
* transport selection (``transport="auto"``: the classic ``WebSocket``,
  whose ``bufferedAmount`` drives the ``transport`` pause; a diagnostic says
  whether ``WebSocketStream`` exists and that it is not used).

Backpressure needs nothing here: the shared connection layer feeds
``bufferedAmount`` to the core after every write and polls it on a short
timer while it is above the low-water mark; above the high-water mark
(8 MiB) the core pauses credit with reason ``transport`` and ``send`` waits,
below the low-water mark (2 MiB) both resume.

The receive path is callbacks all the way: JavaScript ``message`` event ->
:class:`~.socket.BrowserWebSocket` -> ``session.receive_frame`` -> channel
listeners, synchronously; no ``await`` per message.  Never use
``asyncio.run`` here: Pyodide's event loop is the page's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..core.aio.connection import (
    AuthProvider,
    Connection,
    Listener,
    ResumeOptions,
    RetryOptions,
    make_options,
)
from ..core.aio.whatwg import SocketFactory, WebSocketLike
from ..core.events import Diagnostic
from ..core.flow import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, DEFAULT_MAX_WINDOW, DEFAULT_WINDOW
from ..core.profiles import WireProfile
from . import _ffi
from .lifecycle import PageLifecycle
from .socket import socket_factory as make_socket_factory
from .storage import SessionStorageStore, session_storage_available
from .timers import JsTimerLoop, wait_future

__all__ = ["TRANSPORTS", "WebConnection", "connect", "web_resume_defaults"]

#: Accepted values of ``transport``.
TRANSPORTS = ("auto", "websocket")


def web_resume_defaults() -> ResumeOptions:
    """The browser's resume default: ``sessionStorage``, TTL 60 s."""
    return ResumeOptions(storage="session", ttl_ms=60_000)


class WebConnection(Connection):
    """A :class:`~nimbus_websocket.core.aio.Connection` in a web page (or Pyodide under Node).

    Adds to the shared connection: :attr:`lifecycle` (page events, ``None``
    when disabled), :meth:`verify`, :attr:`socket` (the current
    :class:`~.socket.BrowserWebSocket`), :attr:`transport` and runtime
    diagnostics (``transport_selected``, ``websocketstream_unavailable``,
    ``resume_store_unavailable``, ``connection_suspect``,
    ``connection_verified``, ``connection_verify_failed``), delivered through
    the same ``diagnostic`` event as the core's.
    """

    def __init__(
        self,
        url: str,
        socket_factory: SocketFactory,
        *,
        transport: str = "websocket",
        lifecycle: bool = True,
        verify_timeout: float = 5.0,
        suspect_after: float | None = None,
        page: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._inner_factory = socket_factory
        self._socket: WebSocketLike | None = None
        #: Sockets created so far (1 + reconnect attempts).
        self.sockets_opened = 0
        #: Seconds :meth:`close` waits for the closing handshake.
        self.close_timeout = float(kwargs.pop("close_timeout", 5.0))
        # The base class's bounded wait would arm a Pyodide timer that cannot be
        # cancelled (see .timers); close() below waits with a JsTimer instead.
        super().__init__(url, self._make_socket, close_timeout=0.0, **kwargs)
        if _ffi.js is not None:
            # Every timer of the connection layer (heartbeat, handshake, backoff,
            # bufferedAmount polls) on JsTimer: cancel() really cancels.
            self._loop = JsTimerLoop(self._loop)  # type: ignore[assignment]
        #: The transport in use (``"websocket"``: the classic WHATWG ``WebSocket``).
        self.transport = transport
        #: Seconds a verification ping may take before the socket is dropped.
        self.verify_timeout = verify_timeout
        self._verify_timer: Any = None
        self._verify_socket: WebSocketLike | None = None
        opts = self._session.options
        self.lifecycle: PageLifecycle | None = None
        if lifecycle:
            self.lifecycle = PageLifecycle(
                self,
                clock=self._clock,
                suspect_after=opts.heartbeat_interval if suspect_after is None else suspect_after,
                **dict(page or {}),
            )
        self.on("close", self._on_finished)

    # ------------------------------------------------------------ properties

    @property
    def socket(self) -> WebSocketLike | None:
        """The socket of the current (or last) attempt."""
        return self._socket

    # ---------------------------------------------------------------- public

    async def start(self) -> None:
        """Attach the page lifecycle, then connect (see the base class).

        The RTT is probed right after ``hello_ok`` by the core
        (``ClientOptions.ping_on_ready``, set by the shared connection layer).
        """
        if self.lifecycle is not None and not self.lifecycle.attached and self.state == "idle":
            self.lifecycle.attach()
        await super().start()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close (see the base class); waits at most :attr:`close_timeout` s for the closing handshake."""
        sock = self._socket
        await super().close(code, reason)
        notify = getattr(sock, "notify_finished", None)
        if notify is None or sock.finished:  # type: ignore[union-attr]
            return
        done: asyncio.Future[None] = self._loop.create_future()
        notify(lambda: done.done() or done.set_result(None))
        await wait_future(done, self.close_timeout)

    def verify(self, why: str, **extras: Any) -> None:
        """Check that the connection is alive: ping now, drop the socket if nothing arrives.

        Any message within :attr:`verify_timeout` seconds (the pong, or
        output) proves the socket alive: diagnostic ``connection_verified``.
        Otherwise ``connection_verify_failed`` and the socket is abandoned as
        if the network had dropped it (:meth:`~.socket.BrowserWebSocket.abort`,
        1006): the client reconnects and resumes every channel.  Only in
        ``ready``; while reconnecting there is nothing to verify.
        """
        sock = self._socket
        if self.state != "ready" or sock is None or self._verify_timer is not None:
            return
        self.runtime_diagnostic("connection", "connection_suspect", why=why, **extras)
        started = self._clock()
        self._verify_socket = sock

        def answered() -> None:
            if self._verify_socket is not sock:
                return
            self._cancel_verify()
            self.runtime_diagnostic(
                "connection",
                "connection_verified",
                why=why,
                waitedMs=round((self._clock() - started) * 1000, 3),
            )

        def timed_out() -> None:
            self._verify_timer = None
            if self._verify_socket is not sock:
                return
            self._verify_socket = None
            self.runtime_diagnostic(
                "connection",
                "connection_verify_failed",
                why=why,
                timeoutMs=round(self.verify_timeout * 1000),
            )
            abort = getattr(sock, "abort", None)
            if abort is not None and sock is self._socket:
                abort(1006, f"no answer after {why}")

        notify = getattr(sock, "notify_next_message", None)
        if notify is not None:
            notify(answered)
        self._verify_timer = self._loop.call_later(self.verify_timeout, timed_out)
        self.ping()

    def payload_view(self, payload: bytes) -> Any:
        """A ``Uint8Array`` view of ``payload`` in the message being received, or ``None``.

        See :meth:`~.socket.BrowserWebSocket.payload_view` (used by the JS
        facade to hand out output without copying it back from Python).
        """
        view = getattr(self._socket, "payload_view", None)
        return None if view is None else view(payload)

    def payload_location(self, payload: bytes) -> tuple[Any, int, int] | None:
        """``(ArrayBuffer, offset, length)`` of ``payload`` in the message being received, or ``None``."""
        where = getattr(self._socket, "payload_location", None)
        return None if where is None else where(payload)

    def runtime_diagnostic(self, phase: str, code: str, **extras: Any) -> None:
        """Emit a ``diagnostic`` of this runtime (same shape as the core's: with bufferedAmount and RTT)."""
        extras.setdefault("bufferedAmount", self.buffered_amount)
        rtt = self.rtt_ms
        extras.setdefault("rttMs", None if rtt is None else round(rtt, 3))
        self._emit("diagnostic", Diagnostic(round(self._clock() * 1000, 3), phase, code, extras))

    # ------------------------------------------------------------- internals

    def _make_socket(self, url: str, protocols: list[str]) -> WebSocketLike:
        sock = self._inner_factory(url, protocols)
        self._socket = sock
        self.sockets_opened += 1
        return sock

    def _cancel_verify(self) -> None:
        if self._verify_timer is not None:
            self._verify_timer.cancel()
            self._verify_timer = None
        self._verify_socket = None

    def _on_finished(self, _err: object) -> None:
        self._cancel_verify()
        if self.lifecycle is not None:
            self.lifecycle.detach()


async def connect(
    url: str,
    *,
    profile: str | WireProfile = "nimbus.v1",
    auth: AuthProvider | None = None,
    retry: RetryOptions | None = None,
    high_water_mark: int = DEFAULT_HIGH_WATER,
    low_water_mark: int = DEFAULT_LOW_WATER,
    resume: ResumeOptions | None = None,
    client_info: Mapping[str, str] | None = None,
    heartbeat_interval: float = 20.0,
    heartbeat_misses: int = 3,
    handshake_timeout: float = 10.0,
    window: int = DEFAULT_WINDOW,
    max_window: int = DEFAULT_MAX_WINDOW,
    input_buffer_limit: int = 1 << 20,
    ack: bool = True,
    close_timeout: float = 5.0,
    transport: str = "auto",
    websocket: Any = None,
    lifecycle: bool = True,
    verify_timeout: float = 5.0,
    suspect_after: float | None = None,
    resume_key: str | None = None,
    socket_factory: SocketFactory | None = None,
    page: Mapping[str, Any] | None = None,
    on: Mapping[str, Listener] | None = None,
    clock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
) -> WebConnection:
    """Connect to a ``nimbus.ssh.v1`` server from Pyodide; return a ready :class:`WebConnection`.

    The options of the CPython :func:`~nimbus_websocket.node_runtime.connect`
    (``profile``, ``auth``, ``retry``, ``high_water_mark``/``low_water_mark``,
    ``resume``, ``client_info``, ``heartbeat_interval``..., ``on``; times in
    seconds, :class:`RetryOptions`/:class:`ResumeOptions` in milliseconds),
    with web defaults and additions:

    * ``resume``: default ``ResumeOptions(storage="session", ttl_ms=60_000)``
      -- ``"session"`` is ``sessionStorage`` under the key
      ``"nimbus-websocket:resume:" + url`` (or ``resume_key``); where there is
      no ``sessionStorage`` (Node) it falls back to ``"memory"`` with a
      ``resume_store_unavailable`` diagnostic.  ``"memory"``, ``"none"`` or a
      store object as on CPython;
    * ``transport``: ``"auto"`` (default) or ``"websocket"``: both use the
      classic ``WebSocket`` (``auto`` reports ``websocketstream_unavailable``
      where ``WebSocketStream`` does not exist);
    * ``websocket``: the JavaScript ``WebSocket`` class (default: the global;
      the Node shim passes a ``ws``-based one); ``socket_factory`` replaces
      the whole socket construction (tests);
    * ``lifecycle``: follow the page (visibility, online/offline, pagehide);
      ``suspect_after`` (default: ``heartbeat_interval``) seconds hidden make
      the connection suspect on return; ``verify_timeout`` bounds the
      verification ping; ``page`` overrides ``document``/``window``/``navigator``.

    Raises :class:`~nimbus_websocket.core.CloseError` when the connection
    cannot be established, ``ValueError`` for an unknown ``transport``.
    """
    if transport not in TRANSPORTS:
        raise ValueError(
            f"unknown transport {transport!r} (one of {', '.join(TRANSPORTS)}; "
            "WebSocketStream is not supported: it has no bufferedAmount)"
        )
    resume = resume if resume is not None else web_resume_defaults()
    store_fallback = False
    if resume.storage == "session":
        if session_storage_available():
            resume = dataclasses.replace(resume, storage=SessionStorageStore(url, key=resume_key))
        else:
            resume = dataclasses.replace(resume, storage="memory")
            store_fallback = True
    options, store = make_options(
        profile=profile,
        retry=retry,
        resume=resume,
        high_water_mark=high_water_mark,
        low_water_mark=low_water_mark,
        client_info=client_info,
        heartbeat_interval=heartbeat_interval,
        heartbeat_misses=heartbeat_misses,
        handshake_timeout=handshake_timeout,
        window=window,
        max_window=max_window,
        input_buffer_limit=input_buffer_limit,
        ack=ack,
    )
    factory = socket_factory if socket_factory is not None else make_socket_factory(websocket)
    conn = WebConnection(
        url,
        factory,
        transport="websocket",
        lifecycle=lifecycle,
        verify_timeout=verify_timeout,
        suspect_after=suspect_after,
        page=page,
        options=options,
        store=store,
        auth=auth,
        clock=clock,
        rand=rand,
        close_timeout=close_timeout,
        listeners=on,
    )
    has_stream = _ffi.global_get("WebSocketStream") is not None
    conn.runtime_diagnostic(
        "transport",
        "transport_selected",
        transport="websocket",
        requested=transport,
        webSocketStream=has_stream,
    )
    if transport == "auto" and not has_stream:
        conn.runtime_diagnostic("transport", "websocketstream_unavailable", using="websocket")
    if store_fallback:
        conn.runtime_diagnostic(
            "resume", "resume_store_unavailable", requested="session", using="memory"
        )
    await conn.start()
    return conn
