"""The browser client: :func:`connect` and :class:`WebConnection` (Pyodide, over the JS ``WebSocket``).

Same options (one :class:`~nimbus_websocket.core.aio.ConnectOptions`) and the
same :class:`~nimbus_websocket.core.aio.Connection` /
:class:`~nimbus_websocket.core.aio.Channel` API as the CPython client -- it
*is* that connection layer, fed with a :class:`~.socket.BrowserWebSocket` --
plus what only a page has:

* resume state in ``sessionStorage`` by default (TTL 60 s), so a reload
  within the TTL resumes the same channels from the exact byte
  (:mod:`.storage`; the channels come back in
  :attr:`~nimbus_websocket.core.aio.Connection.resumed_channels`
  and as ``channel`` events);
* page lifecycle (:mod:`.lifecycle`): visibility and online/offline are
  reported to the core, which pauses credit (reasons ``visibility`` and
  ``offline``) and verifies a suspect connection
  (:meth:`~nimbus_websocket.core.ClientSession.verify`); the resume state
  is persisted on ``pagehide``;
* the transport is the classic ``WebSocket`` (its ``bufferedAmount`` drives
  the ``transport`` pause); a ``transport_selected`` diagnostic says whether
  ``WebSocketStream`` exists (it is not used: it has no ``bufferedAmount``).

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

from ..core.aio.connection import AuthProvider, Connection, Listener
from ..core.aio.options import ConnectOptions, ResumeOptions
from ..core.aio.whatwg import SocketFactory, WebSocketLike
from ..core.errors import CloseCode
from ..core.events import Diagnostic, DiagPhase
from . import _ffi
from .lifecycle import PageLifecycle
from .socket import socket_factory as make_socket_factory
from .storage import SessionStorageStore, session_storage_available
from .timers import JsTimerLoop, wait_future

__all__ = ["WebConnection", "connect", "web_resume_defaults"]

#: The one transport: the classic WHATWG ``WebSocket``.
TRANSPORT = "websocket"


def web_resume_defaults() -> ResumeOptions:
    """The browser's resume default: ``sessionStorage``, with the core's TTL (60 s)."""
    return ResumeOptions(storage="session")


class WebConnection(Connection):
    """A :class:`~nimbus_websocket.core.aio.Connection` in a web page (or Pyodide under Node).

    Adds to the shared connection: :attr:`lifecycle` (page events, ``None``
    when disabled), :meth:`verify`, :meth:`page_visibility`,
    :meth:`page_online`, :attr:`socket` (the current
    :class:`~.socket.BrowserWebSocket`), :attr:`transport` and runtime
    diagnostics (``transport_selected``, ``websocketstream_unavailable``,
    ``resume_store_unavailable``), delivered through the same ``diagnostic``
    event as the core's (which include ``connection_suspect``,
    ``connection_verified`` and ``connection_verify_failed``).
    """

    def __init__(
        self,
        url: str,
        socket_factory: SocketFactory,
        *,
        lifecycle: bool = True,
        page: Mapping[str, Any] | None = None,
        close_timeout: float = ConnectOptions().close_timeout,
        **kwargs: Any,
    ) -> None:
        self._inner_factory = socket_factory
        self._socket: WebSocketLike | None = None
        #: Sockets created so far (1 + reconnect attempts).
        self.sockets_opened = 0
        #: Seconds :meth:`close` waits for the closing handshake.
        self.close_timeout = float(close_timeout)
        # The base class's bounded wait would arm a Pyodide timer that cannot be
        # cancelled (see .timers); close() below waits with a JsTimer instead.
        super().__init__(url, self._make_socket, close_timeout=0.0, **kwargs)
        if _ffi.js is not None:
            # Every timer of the connection layer (heartbeat, handshake, backoff,
            # verification, bufferedAmount polls) on JsTimer: cancel() really cancels.
            self._loop = JsTimerLoop(self._loop)  # type: ignore[assignment]
        #: The transport in use: the classic WHATWG ``WebSocket``.
        self.transport = TRANSPORT
        self.lifecycle: PageLifecycle | None = None
        if lifecycle:
            self.lifecycle = PageLifecycle(self, **dict(page or {}))
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
        (``ConnectOptions.ping_on_ready``, on by default).
        """
        if self.lifecycle is not None and not self.lifecycle.attached and not self._started:
            self.lifecycle.attach()
        await super().start()

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close (see the base class); waits at most :attr:`close_timeout` s for the closing handshake."""
        sock = self._socket
        await super().close(code, reason)
        notify = getattr(sock, "notify_finished", None)
        if notify is None or sock.finished:  # type: ignore[union-attr]
            return
        done: asyncio.Future[None] = self._loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        notify(finished)
        await wait_future(done, self.close_timeout)

    def verify(self, why: str, **extras: Any) -> None:
        """Check that the connection is alive (the core's :meth:`~nimbus_websocket.core.ClientSession.verify`).

        A ping goes out now; any message within ``verify_timeout`` seconds
        proves the socket alive (diagnostic ``connection_verified``),
        otherwise ``connection_verify_failed`` and the socket is abandoned as
        if the network had dropped it: the client reconnects and resumes
        every channel.  Only while ``ready``.
        """
        self._session.verify(self._clock(), why, **extras)
        self._pump()

    def page_visibility(self, hidden: bool) -> None:
        """Report the page's visibility to the core (pause, persist, suspect-on-return)."""
        self._session.page_visibility(hidden, self._clock())
        self._pump()

    def page_online(self, online: bool) -> None:
        """Report ``online``/``offline`` to the core (pause, verify on return)."""
        self._session.page_online(online, self._clock())
        self._pump()

    def output_position(self, cid: int) -> int | None:
        """Output bytes received on channel ``cid`` since it opened, or ``None`` once it is gone.

        stdout and stderr count as one sequence; the count is the core's
        (what the resume state stores as ``rx``), kept across reconnects and
        page reloads.  Output is handed to the channel's listeners as it is
        received, so this is also the stream position just past the last
        chunk delivered -- what a page that saves its screen records with it.
        """
        ch = self._session.channel(cid)
        return None if ch is None else ch.credit.received

    def payload_location(self, payload: bytes) -> tuple[Any, int, int] | None:
        """``(ArrayBuffer, offset, length)`` of ``payload`` in the message being received, or ``None``.

        See :meth:`~.socket.BrowserWebSocket.payload_location` (used by the JS
        facade to hand out output without copying it back from Python).
        """
        where = getattr(self._socket, "payload_location", None)
        return None if where is None else where(payload)

    def runtime_diagnostic(self, phase: DiagPhase, code: str, **extras: Any) -> None:
        """Emit a ``diagnostic`` of this runtime (same shape as the core's: snake_case
        extras with ``buffered_amount`` and ``rtt_ms``; the JS bridge makes them camelCase)."""
        extras.setdefault("buffered_amount", self.buffered_amount)
        rtt = self.rtt_ms
        extras.setdefault("rtt_ms", None if rtt is None else round(rtt, 3))
        self._emit("diagnostic", Diagnostic(round(self._clock() * 1000, 3), phase, code, extras))

    # ------------------------------------------------------------- internals

    def _make_socket(self, url: str, protocols: list[str]) -> WebSocketLike:
        sock = self._inner_factory(url, protocols)
        self._socket = sock
        self.sockets_opened += 1
        return sock

    def _on_finished(self, _err: object) -> None:
        if self.lifecycle is not None:
            self.lifecycle.detach()


async def connect(
    url: str,
    *,
    options: ConnectOptions | None = None,
    auth: AuthProvider | None = None,
    websocket: Any = None,
    lifecycle: bool = True,
    resume_key: str | None = None,
    socket_factory: SocketFactory | None = None,
    page: Mapping[str, Any] | None = None,
    on: Mapping[str, Listener] | None = None,
    clock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
    created: Callable[[WebConnection], None] | None = None,
    **keywords: Any,
) -> WebConnection:
    """Connect to a ``nimbus.ssh.v1`` server from Pyodide; return a ready :class:`WebConnection`.

    The options are one :class:`~nimbus_websocket.core.aio.ConnectOptions`,
    as for the CPython :func:`~nimbus_websocket.node_runtime.connect`: pass it
    as ``options`` or its fields as keywords (``profile``, ``retry``,
    ``high_water_mark``/``low_water_mark``, ``resume``, ``client_info``,
    ``heartbeat_interval``..., ``verify_timeout``, ``suspect_after``,
    ``close_timeout``; an unknown keyword is a ``TypeError``).  Web defaults
    and additions:

    * ``resume``: default ``ResumeOptions(storage="session")`` --
      ``"session"`` is ``sessionStorage`` under the key
      ``"nimbus-websocket:resume:" + url`` (or ``resume_key``); where there is
      no ``sessionStorage`` (Node) it falls back to ``"memory"`` with a
      ``resume_store_unavailable`` diagnostic.  ``"memory"``, ``"none"`` or a
      store object as on CPython;
    * ``websocket``: the JavaScript ``WebSocket`` class (default: the global;
      the Node shim passes a ``ws``-based one); ``socket_factory`` replaces
      the whole socket construction (tests);
    * ``lifecycle``: follow the page (visibility, online/offline, pagehide);
      ``suspect_after`` (default: ``heartbeat_interval``) seconds hidden make
      the connection suspect on return; ``verify_timeout`` bounds the
      verification ping; ``page`` overrides ``document``/``window``/``navigator``;
    * ``created``: called with the :class:`WebConnection` before it starts, so
      that listeners of the handshake (a ``channel`` restored by a resume)
      can ask it about their channels (:meth:`WebConnection.output_position`).

    Raises :class:`~nimbus_websocket.core.CloseError` when the connection
    cannot be established.
    """
    opts = ConnectOptions.from_keywords(options, **keywords)
    resume = opts.resume if opts.resume is not None else web_resume_defaults()
    store_fallback = False
    if resume.storage == "session":
        if session_storage_available():
            resume = dataclasses.replace(resume, storage=SessionStorageStore(url, key=resume_key))
        else:
            resume = dataclasses.replace(resume, storage="memory")
            store_fallback = True
    opts = dataclasses.replace(opts, resume=resume)
    factory = socket_factory if socket_factory is not None else make_socket_factory(websocket)
    conn = WebConnection(
        url,
        factory,
        lifecycle=lifecycle,
        page=page,
        options=opts.client_options(),
        store=resume.make_store(),
        auth=auth,
        clock=clock,
        rand=rand,
        close_timeout=opts.close_timeout,
        listeners=on,
    )
    has_stream = _ffi.global_get("WebSocketStream") is not None
    conn.runtime_diagnostic(
        DiagPhase.TRANSPORT, "transport_selected", transport=TRANSPORT, web_socket_stream=has_stream
    )
    if not has_stream:
        conn.runtime_diagnostic(DiagPhase.TRANSPORT, "websocketstream_unavailable", using=TRANSPORT)
    if store_fallback:
        conn.runtime_diagnostic(
            DiagPhase.RESUME, "resume_store_unavailable", requested="session", using="memory"
        )
    if created is not None:
        created(conn)
    await conn.start()
    return conn
