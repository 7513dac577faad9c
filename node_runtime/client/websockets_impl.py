"""``WebsocketsImpl``: a WHATWG-shaped WebSocket over the ``websockets`` asyncio client.

:class:`~nimbus_websocket.core.aio.Connection` is written against the browser's
``WebSocket`` interface (:mod:`nimbus_websocket.core.aio.whatwg`); this adapter gives CPython one.  It
is the explicit implementation the host ``connect()`` requires::

    conn = await connect(url, websocket_impl=WebsocketsImpl)

Semantics, as in a browser:

* the constructor starts connecting in a task; ``onopen`` fires when the
  opening handshake succeeded, ``onerror`` then ``onclose`` (code 1006) when
  it failed;
* ``send(str | bytes)`` never blocks: messages go to an outgoing queue
  drained by a writer task (``await connection.send``, which waits for the
  transport to drain above the library's write limit); ``bufferedAmount`` is
  the queued bytes plus ``transport.get_write_buffer_size()``;
* a reader task delivers every message through ``onmessage`` (``str`` for
  text, ``bytes`` for binary);
* ``close(code, reason)`` sends the close frame after the queued messages;
  ``onclose`` reports the peer's close code, or 1006 when the connection
  dropped.  A closing handshake that does not finish within
  ``close_timeout`` is cut by aborting the transport.

Limits and their memory consequences: one incoming message is at most
``max_size`` bytes (default 1 MiB + 1 KiB: a bit above the contract's
``maxFrame``, which bounds the whole message); the library queues at most
``max_queue`` (16) incoming messages, but this adapter hands each one to
``onmessage`` as soon as it arrives.  The outgoing queue is unbounded here
by design -- the connection layer bounds it by pausing at the
``bufferedAmount`` high-water mark.

permessage-deflate is off unless ``per_message_deflate`` is given, and then
bounded: no context takeover in either direction, window bits 10-12
(contract section 9).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.protocol import State as _WsState

from ...core.aio.whatwg import (
    CLOSED,
    CLOSING,
    CONNECTING,
    OPEN,
    CloseEvent,
    Event,
    Handler,
    MessageEvent,
    SocketFactory,
)
from ...core.errors import MAX_CLOSE_REASON_BYTES, CloseCode, sendable_close_code, truncate_reason
from ...core.profiles import DEFAULT_MAX_FRAME
from ..ws_push import PushMessages

__all__ = ["DeflateSettings", "WebsocketsImpl"]

_WS_OPEN = _WsState.OPEN

log = logging.getLogger("nimbus_websocket.client.websockets")

#: Accepted window bits for permessage-deflate (contract: 10-12).
MIN_WINDOW_BITS = 10
MAX_WINDOW_BITS = 12

DeflateSettings = bool | Mapping[str, Any]


def deflate_factory(settings: DeflateSettings) -> ClientPerMessageDeflateFactory | None:
    """The bounded permessage-deflate offer for ``settings``, or ``None`` for off.

    ``True`` means window bits 12 both ways; a mapping may set
    ``window_bits`` (or ``client_max_window_bits``/``server_max_window_bits``)
    within 10-12 and ``mem_level`` (1-9, default 5).  Context takeover is
    always off: each message is compressed on its own, so memory per
    connection stays at one small zlib state per direction.
    """
    if settings is False or settings is None:
        return None
    opts: Mapping[str, Any] = {} if settings is True else settings
    unknown = set(opts) - {"window_bits", "client_max_window_bits", "server_max_window_bits", "mem_level"}
    if unknown:
        raise ValueError(f"unknown per_message_deflate settings: {sorted(unknown)}")
    bits = int(opts.get("window_bits", MAX_WINDOW_BITS))
    client_bits = int(opts.get("client_max_window_bits", bits))
    server_bits = int(opts.get("server_max_window_bits", bits))
    for b in (client_bits, server_bits):
        if not MIN_WINDOW_BITS <= b <= MAX_WINDOW_BITS:
            raise ValueError(f"deflate window bits must be {MIN_WINDOW_BITS}-{MAX_WINDOW_BITS}, got {b}")
    mem_level = int(opts.get("mem_level", 5))
    if not 1 <= mem_level <= 9:
        raise ValueError(f"deflate mem_level must be 1-9, got {mem_level}")
    return ClientPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
        compress_settings={"memLevel": mem_level},
    )


class WebsocketsImpl:
    """A browser-like ``WebSocket`` backed by ``websockets.asyncio.client.connect``.

    Construct it inside a running event loop: ``WebsocketsImpl(url,
    protocols)``.  Use :meth:`with_options` to get a factory with
    non-default settings (``per_message_deflate``, ``max_size``, TLS...).
    """

    CONNECTING = CONNECTING
    OPEN = OPEN
    CLOSING = CLOSING
    CLOSED = CLOSED

    def __init__(
        self,
        url: str,
        protocols: list[str] | tuple[str, ...] | str | None = None,
        *,
        per_message_deflate: DeflateSettings = False,
        max_size: int = DEFAULT_MAX_FRAME + 1024,
        open_timeout: float | None = None,
        close_timeout: float = 5.0,
        origin: str | None = None,
        additional_headers: Mapping[str, str] | None = None,
        ssl: Any = None,
    ) -> None:
        self.url = url
        if isinstance(protocols, str):
            protocols = [protocols]
        self._protocols = list(protocols or [])
        self.binaryType = "arraybuffer"
        self.onopen: Handler = None
        self.onmessage: Handler = None
        #: The ``onmessagedata`` extension (:mod:`nimbus_websocket.core.aio.whatwg`): called with each
        #: message's data instead of ``onmessage`` when set.
        self.onmessagedata: Callable[[str | bytes], None] | None = None
        self.onclose: Handler = None
        self.onerror: Handler = None
        self._ready_state = CONNECTING
        self._protocol = ""
        self._extensions = ""
        self._conn: ClientConnection | None = None
        self._out: deque[str | bytes] = deque()
        self._out_bytes = 0
        self._out_event = asyncio.Event()
        self._close_req: tuple[int, str] | None = None
        self._close_timeout = close_timeout
        self._abort_handle: asyncio.TimerHandle | None = None
        self._closed_reported = False
        kwargs: dict[str, Any] = {
            "subprotocols": self._protocols or None,
            "compression": None,
            "max_size": max_size,
            "ping_interval": None,  # the protocol has its own heartbeats
            "open_timeout": open_timeout,
            "close_timeout": close_timeout,
            "proxy": None,
        }
        ext = deflate_factory(per_message_deflate)
        if ext is not None:
            kwargs["extensions"] = [ext]
        if origin is not None:
            kwargs["origin"] = origin
        if additional_headers:
            kwargs["additional_headers"] = dict(additional_headers)
        if ssl is not None:
            kwargs["ssl"] = ssl
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(kwargs))
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    def with_options(cls, **options: Any) -> SocketFactory:
        """A ``factory(url, protocols)`` that builds sockets with these keyword options.

        ``per_message_deflate`` settings are validated here, before any connection.
        """
        if "per_message_deflate" in options:
            deflate_factory(options["per_message_deflate"])
        return functools.partial(cls, **options)

    # ---------------------------------------------------------- WHATWG props

    @property
    def readyState(self) -> int:
        """0 connecting, 1 open, 2 closing, 3 closed."""
        return self._ready_state

    @property
    def protocol(self) -> str:
        """The subprotocol the server selected (``""`` for none)."""
        return self._protocol

    @property
    def extensions(self) -> str:
        """The negotiated extensions, as in ``Sec-WebSocket-Extensions`` (``""`` for none)."""
        return self._extensions

    @property
    def bufferedAmount(self) -> int:
        """Bytes queued by :meth:`send` plus the transport's write buffer."""
        n = self._out_bytes
        conn = self._conn
        if conn is not None and self._ready_state in (OPEN, CLOSING):
            with contextlib.suppress(Exception):  # transport already gone
                n += conn.transport.get_write_buffer_size()
        return n

    # --------------------------------------------------------------- methods

    def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Queue one message (``str``: text frame, bytes-like: binary frame)."""
        if self._ready_state == CONNECTING:
            raise RuntimeError("InvalidStateError: the WebSocket is still connecting")
        if self._ready_state != OPEN:
            return  # WHATWG: silently discarded once closing
        if not isinstance(data, (str, bytes)):
            data = bytes(data)
        if not self._out and self._write_now(data):
            return
        self._out.append(data)
        self._out_bytes += len(data)
        self._out_event.set()

    def _write_now(self, data: str | bytes) -> bool:
        """Write ``data`` straight to the transport, as a browser does.

        WHATWG ``send`` never waits: the bytes go to the transport's buffer
        and show in ``bufferedAmount`` (which the core watches).  This skips
        a task switch per message -- a third of a keystroke's round trip.
        Falls back to the writer task when the library's internals differ.
        """
        conn = self._conn
        if conn is None:
            return False
        try:
            proto = conn.protocol
            if proto.state is not _WS_OPEN:
                return False
            if isinstance(data, str):
                proto.send_text(data.encode())
            else:
                proto.send_binary(data)
            conn.send_data()
        except AttributeError:
            return False
        return True

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (after queued messages), or abandon the connect.

        Raises as the WHATWG ``close()`` does for a code a client may not send
        (the core's :func:`~nimbus_websocket.core.errors.sendable_close_code`)
        or a reason over 123 bytes of UTF-8.
        """
        if sendable_close_code(code) != code:
            raise ValueError(f"InvalidAccessError: close code {code} (use NORMAL or 3000-4999)")
        if truncate_reason(reason) != reason:
            raise ValueError(f"SyntaxError: close reason longer than {MAX_CLOSE_REASON_BYTES} bytes")
        if self._ready_state in (CLOSING, CLOSED):
            return
        if self._ready_state == CONNECTING:
            self._ready_state = CLOSING
            self._close_req = (code, reason)
            self._task.cancel()
            return
        self._ready_state = CLOSING
        self._close_req = (code, reason)
        self._out_event.set()
        self._abort_handle = self._loop.call_later(self._close_timeout + 1.0, self._abort)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (tests, emergencies)."""
        self._abort()

    # ------------------------------------------------------------- internals

    def _abort(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.transport.abort()
        elif self._ready_state == CONNECTING:
            self._task.cancel()

    def _fire(self, name: str, event: object) -> None:
        cb = getattr(self, name)
        if cb is None:
            return
        try:
            cb(event)
        except Exception:
            log.exception("WebSocket %s handler raised", name)

    def _message(self, data: str | bytes) -> None:
        cb = self.onmessagedata
        if cb is None:
            self._fire("onmessage", MessageEvent(data))
            return
        try:
            cb(data)
        except Exception:
            log.exception("WebSocket message handler raised")

    def _report_close(self, code: int, reason: str, clean: bool) -> None:
        if self._closed_reported:
            return
        self._closed_reported = True
        self._ready_state = CLOSED
        if self._abort_handle is not None:
            self._abort_handle.cancel()
        self._out.clear()
        self._out_bytes = 0
        self._fire("onclose", CloseEvent(code, reason, clean))

    async def _run(self, kwargs: dict[str, Any]) -> None:
        try:
            conn = await ws_connect(self.url, create_connection=_PushConnection, **kwargs)
        except asyncio.CancelledError:
            self._report_close(CloseCode.ABNORMAL, "connection abandoned", False)
            return
        except Exception as exc:
            log.debug("WebSocket connect to %s failed: %r", self.url, exc)
            self._ready_state = CLOSED
            self._fire("onerror", Event("error"))
            self._report_close(CloseCode.ABNORMAL, truncate_reason(f"connect failed: {exc}"), False)
            return
        self._conn = conn
        if self._ready_state != CONNECTING:  # close() raced with the handshake
            await conn.close(*(self._close_req or (CloseCode.NORMAL, "")))
            self._report_close(conn.close_code or CloseCode.ABNORMAL, conn.close_reason or "", False)
            return
        self._ready_state = OPEN
        self._protocol = conn.subprotocol or ""
        self._extensions = ", ".join(_ext_name(e) for e in conn.protocol.extensions)
        self._writer = self._loop.create_task(self._write_loop(conn))
        self._fire("onopen", Event("open"))
        if isinstance(conn, _PushConnection):
            conn.push = self._message
        try:
            async for message in conn:
                self._message(message)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("WebSocket reader failed")
            conn.transport.abort()
        if self._ready_state == OPEN:
            self._ready_state = CLOSING
        try:
            await asyncio.wait_for(conn.wait_closed(), self._close_timeout + 1.0)
        except TimeoutError:
            conn.transport.abort()
            await conn.wait_closed()
        if self._writer is not None:
            self._writer.cancel()
        code = conn.close_code or CloseCode.ABNORMAL
        clean = conn.protocol.close_rcvd is not None and conn.protocol.close_sent is not None
        self._report_close(code, conn.close_reason or "", clean)

    async def _write_loop(self, conn: ClientConnection) -> None:
        out = self._out
        try:
            while True:
                if out:
                    msg = out.popleft()
                    self._out_bytes -= len(msg)
                    await conn.send(msg)  # written at once; waits only for the drain
                elif self._close_req is not None:
                    await conn.close(*self._close_req)
                    return
                else:
                    self._out_event.clear()
                    await self._out_event.wait()
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("WebSocket writer failed")
            conn.transport.abort()


class _PushConnection(PushMessages, ClientConnection):
    """A ``websockets`` client connection with push delivery (:mod:`..ws_push`)."""


def _ext_name(ext: Any) -> str:
    name = getattr(ext, "name", None)
    params = []
    for attr in ("remote_no_context_takeover", "local_no_context_takeover"):
        if getattr(ext, attr, False):
            params.append(attr)
    for attr in ("remote_max_window_bits", "local_max_window_bits"):
        v = getattr(ext, attr, None)
        if v is not None:
            params.append(f"{attr}={v}")
    return "; ".join([str(name), *params])
