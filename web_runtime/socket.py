""":class:`BrowserWebSocket`: the JavaScript ``WebSocket`` seen as the client's WHATWG-shaped socket.

The connection layer (:mod:`nimbus_websocket.core.aio.connection`)
is written against a small WHATWG-shaped interface
(:mod:`~nimbus_websocket.core.aio.whatwg`): ``bytes``/``str``
messages in and out, ``on*`` handler attributes, ``bufferedAmount``.  In
Pyodide the real thing is a JavaScript object; this wrapper bridges the two
through ``pyodide.ffi``:

* ``binaryType`` is forced to ``"arraybuffer"`` (browsers default to
  ``Blob``, which cannot be read synchronously; ``ws`` defaults to Node
  ``Buffer``, which Python cannot read);
* receive: a binary message's ``ArrayBuffer`` becomes ``bytes`` with one
  copy (``JsBuffer.to_bytes()``), a text message stays ``str``;
* send: ``bytes`` go out as ``to_js(data)`` (a ``Uint8Array`` copy) -- a
  plain ``ws.send(b"...")`` would send the *text* ``"b'...'"``;
* the four JavaScript listeners are ``create_proxy`` proxies, made once per
  socket and destroyed when the socket is finished (its ``close`` event, or
  :meth:`abort`), so reconnects do not leak proxies;
* every listener body catches its exceptions: an exception escaping a
  listener kills a Node process (``ws``), and must not reach the page either.

Memory: nothing is buffered here.  Each message is handed to ``onmessage``
synchronously from the JavaScript event (no ``await`` per message).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..core.aio.whatwg import CLOSED, CloseEvent, Event
from ..core.errors import CloseCode, abandon_close_codes, sendable_close_code, truncate_reason
from . import _ffi

__all__ = ["BrowserWebSocket", "socket_factory"]

log = logging.getLogger("nimbus_websocket.web")

Handler = Callable[[Any], object] | None


#: JavaScript ``(f) => (ev) => f(ev.data)``, the ``onmessage`` adapter.
_DATA_ONLY = "return function (ev) { return f(ev.data); };"


def _data_only(f: Any) -> Any:
    """``(ev) => f(ev.data)`` as a JavaScript function, or ``None``.

    ``createNimbus`` (``nimbus.mjs``) registers it, written in JavaScript, as the JS module
    ``_nimbus_js``: no ``eval``, so it works under a Content-Security-Policy without
    ``'unsafe-eval'`` (the reference server's, docs/security.md). Elsewhere (the Node shim,
    a page that installs the wheel itself) it is compiled with ``Function``; where a CSP
    refuses that, ``None`` (the caller takes the whole event instead).
    """
    try:
        import _nimbus_js  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        return _nimbus_js.dataOnly(f)
    try:
        return _ffi.js.Function.new("f", _DATA_ONLY)(f)
    except Exception:  # EvalError (a JsException) under a CSP without 'unsafe-eval'
        log.debug("onmessage adapter unavailable (CSP?): handlers take the event", exc_info=True)
        return None


class _Message:
    """A received message: ``.data`` is ``bytes`` (binary) or ``str`` (text)."""

    __slots__ = ("data",)
    type = "message"

    def __init__(self, data: bytes | str) -> None:
        self.data = data


class BrowserWebSocket:
    """A JavaScript ``WebSocket`` (browser, or ``ws`` under Node) behind the WHATWG-shaped interface.

    ``BrowserWebSocket(url, protocols)`` opens the socket at once, like the
    JavaScript constructor.  ``js_class`` picks the JavaScript class
    (default: the global ``WebSocket``); the Node shim passes its ``ws``-based
    class.  Handler attributes ``onopen``/``onmessage``/``onclose``/``onerror``
    are plain Python callables, called with one event object (message:
    ``.data``; close: ``.code``, ``.reason``, ``.wasClean``).

    Counters (for diagnostics and tests): :attr:`messages_received`,
    :attr:`bytes_received`, :attr:`live_proxies`.
    """

    def __init__(self, url: str, protocols: Iterable[str] = (), *, js_class: Any = None) -> None:
        cls = js_class if js_class is not None else _ffi.global_get("WebSocket")
        if cls is None:
            raise RuntimeError(
                "no WebSocket class in this JavaScript environment (pass js_class=...)"
            )
        self.url = url
        self.onopen: Handler = None
        self.onmessage: Handler = None
        #: The ``onmessagedata`` extension (``whatwg`` module doc): called with
        #: each message's data instead of ``onmessage`` when set.
        self.onmessagedata: Callable[[str | bytes], None] | None = None
        self.onclose: Handler = None
        self.onerror: Handler = None
        #: Messages received so far (text and binary).
        self.messages_received = 0
        #: Payload bytes of binary messages received so far.
        self.bytes_received = 0
        self._on_finished: list[Callable[[], None]] = []
        self._finished = False
        # bufferedAmount only grows through send(): until the next send after
        # it was seen at 0, it is still 0 and need not be read from JavaScript
        # (a property read through the FFI costs microseconds, on every pump).
        self._maybe_buffered = False
        protos = list(protocols)
        ws = cls.new(url, _ffi.to_js(protos)) if protos else cls.new(url)
        self._ws = ws
        ws.binaryType = "arraybuffer"
        #: ``(bytes, ArrayBuffer)`` of the binary message being handled, during
        #: ``onmessage`` only: lets the facade hand out a view of the received
        #: buffer instead of copying the payload back to JavaScript.
        self.current_message: tuple[bytes, Any] | None = None
        self._proxies = [
            _ffi.create_proxy(self._js_open),
            _ffi.create_proxy(self._js_message),
            _ffi.create_proxy(self._js_close),
            _ffi.create_proxy(self._js_error),
        ]
        # onmessage gets ev.data only: one proxy fewer per message.
        data_only = _data_only(self._proxies[1])
        if data_only is None:
            self._proxies[1].destroy()
            self._proxies[1] = data_only = _ffi.create_proxy(self._js_message_event)
        ws.onopen, ws.onmessage, ws.onclose, ws.onerror = (
            self._proxies[0],
            data_only,
            self._proxies[2],
            self._proxies[3],
        )

    def __repr__(self) -> str:
        return f"<BrowserWebSocket {self.url} readyState={self.readyState}>"

    # ------------------------------------------------------------ properties

    @property
    def binaryType(self) -> str:
        """Always ``"arraybuffer"`` (anything else cannot be read from Python)."""
        return "arraybuffer"

    @binaryType.setter
    def binaryType(self, value: str) -> None:
        if value != "arraybuffer":
            raise ValueError(f"binaryType {value!r} is not supported (only 'arraybuffer')")

    @property
    def bufferedAmount(self) -> int:
        """The JavaScript socket's ``bufferedAmount`` (bytes queued, not yet on the network)."""
        if not self._maybe_buffered:
            return 0
        amount = int(self._ws.bufferedAmount or 0)
        if amount == 0:
            self._maybe_buffered = False
        return amount

    @property
    def readyState(self) -> int:
        """``CONNECTING`` (0), ``OPEN`` (1), ``CLOSING`` (2) or ``CLOSED`` (3)."""
        return CLOSED if self._finished else int(self._ws.readyState)

    @property
    def protocol(self) -> str:
        """The subprotocol the server selected (``""`` for none)."""
        return str(self._ws.protocol or "")

    @property
    def live_proxies(self) -> int:
        """JavaScript listener proxies not yet destroyed (0 once the socket is finished)."""
        return len(self._proxies)

    @property
    def finished(self) -> bool:
        """Whether the socket is done (its ``close`` event arrived, or :meth:`abort`)."""
        return self._finished

    @property
    def js_socket(self) -> Any:
        """The underlying JavaScript object."""
        return self._ws

    # -------------------------------------------------------------- methods

    def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Queue one message: ``str`` as a text frame, bytes-like as a binary frame."""
        self._maybe_buffered = True
        if isinstance(data, str):
            self._ws.send(data)
        else:
            self._ws.send(_ffi.to_js(data))

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake; ``onclose`` follows the JavaScript ``close`` event.

        The code goes through the core's
        :func:`~nimbus_websocket.core.errors.sendable_close_code`, the reason
        through :func:`~nimbus_websocket.core.errors.truncate_reason`: the
        JavaScript ``close()`` never throws for them.
        """
        self._ws.close(sendable_close_code(code), truncate_reason(reason))

    def abort(self, reason: str = "connection abandoned") -> None:
        """Give up on this socket now, as if the network had dropped it.

        The JavaScript listeners are removed and their proxies destroyed, the
        JavaScript socket is closed and ``onclose`` is called at once; both
        codes are the core's (:func:`~nimbus_websocket.core.errors.abandon_close_codes`:
        the socket sends 4000, so the server keeps the session, and reports
        1006, which the client treats as a network loss: reconnect and
        resume).  A dead TCP connection can take minutes to report its own
        close; this does not wait for it.
        """
        if self._finished:
            return
        sent, reported = abandon_close_codes()
        self._finish()
        try:
            self._ws.close(sent, truncate_reason(reason))
        except Exception:  # already closed or never opened
            log.debug("close after abort failed", exc_info=True)
        self._call(self.onclose, CloseEvent(reported, reason, False))
        self._run_finished()

    def payload_location(self, payload: bytes) -> tuple[Any, int, int] | None:
        """``(ArrayBuffer, offset, length)`` of ``payload`` in the message being handled, or ``None``.

        Only while ``onmessage`` runs, and only when ``payload`` is that
        message's tail after an envelope of at most 64 bytes (``nimbus.v1``:
        5, ``lenpfx.v1``: 9).  The connection layer dispatches a message's
        output synchronously while the message is handled and drains every
        event of it before returning, so output seen here comes from this
        message: the check is structural (length, first and last byte), not a
        comparison of every byte (``bytes.endswith`` of 64 KiB costs ~20 us in
        Pyodide).  Nothing else writes to a received ``ArrayBuffer``: the
        facade builds a ``Uint8Array`` view on it in JavaScript, which is the
        caller's to keep and saves copying the payload back.
        """
        current = self.current_message
        if current is None or not payload:
            return None
        raw, buffer = current
        n = len(payload)
        offset = len(raw) - n
        if 0 <= offset <= 64 and raw[offset] == payload[0] and raw[-1] == payload[-1]:
            return buffer, offset, n
        return None

    def notify_finished(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the socket is finished (at once if it already is)."""
        if self._finished:
            callback()
        else:
            self._on_finished.append(callback)

    # -------------------------------------------------------- JS listeners

    def _js_open(self, _ev: Any) -> None:
        self._call(self.onopen, Event("open"))

    def _js_message_event(self, ev: Any) -> None:
        """``onmessage`` when no ``ev.data`` adapter could be made (see :func:`_data_only`)."""
        try:
            data = ev.data
        except Exception:  # a listener never raises into JavaScript
            log.exception("message event without data")
            return
        self._js_message(data)

    def _js_message(self, data: Any) -> None:
        """``data`` is the message event's ``.data``: a string or an ``ArrayBuffer``."""
        try:
            if isinstance(data, str):
                payload: bytes | str = data
            else:
                raw: bytes = data.to_bytes()  # ArrayBuffer -> bytes (one copy)
                payload = raw
                self.bytes_received += len(raw)
                self.current_message = (raw, data)
            self.messages_received += 1
            direct = self.onmessagedata
            if direct is not None:
                direct(payload)
            else:
                handler = self.onmessage
                if handler is not None:
                    handler(_Message(payload))
        except Exception:
            log.exception("WebSocket message listener failed")
        finally:
            self.current_message = None

    def _js_close(self, ev: Any) -> None:
        if self._finished:
            return
        try:
            event = CloseEvent(int(ev.code), str(ev.reason or ""), bool(ev.wasClean))
        except Exception:
            event = CloseEvent(CloseCode.ABNORMAL, "", False)
        handler = self.onclose
        self._finish()
        self._call(handler, event)
        self._run_finished()

    def _js_error(self, _ev: Any) -> None:
        self._call(self.onerror, Event("error"))

    # ------------------------------------------------------------- helpers

    def _call(self, handler: Handler, ev: Any) -> None:
        if handler is None:
            return
        try:
            handler(ev)
        except Exception:
            log.exception("WebSocket %s listener failed", getattr(ev, "type", "?"))

    def _run_finished(self) -> None:
        callbacks, self._on_finished = self._on_finished, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("WebSocket finish callback failed")

    def _finish(self) -> None:
        """Detach the JavaScript listeners and destroy their proxies (once)."""
        self._finished = True
        ws = self._ws
        try:
            ws.onopen = ws.onmessage = ws.onclose = ws.onerror = None
        except Exception:
            log.debug("detaching listeners failed", exc_info=True)
        proxies, self._proxies = self._proxies, []
        for p in proxies:
            try:
                p.destroy()
            except Exception:
                log.debug("destroying a proxy failed", exc_info=True)


def socket_factory(js_class: Any = None) -> Callable[[str, list[str]], BrowserWebSocket]:
    """A ``factory(url, protocols)`` making :class:`BrowserWebSocket` s of ``js_class``."""

    def make(url: str, protocols: list[str]) -> BrowserWebSocket:
        return BrowserWebSocket(url, protocols, js_class=js_class)

    return make
