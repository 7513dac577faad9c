"""The WHATWG-shaped WebSocket that :mod:`.connection` is written against.

The client's connection layer never touches a concrete WebSocket library.
It talks to an object shaped like the browser's ``WebSocket``
(https://websockets.spec.whatwg.org/#the-websocket-interface), reduced to
what the protocol needs:

* constructed as ``factory(url, protocols)`` (a class or any callable);
* attributes ``binaryType`` (set to ``"arraybuffer"``), ``bufferedAmount``
  (bytes accepted by :meth:`~WebSocketLike.send` but not yet written to the
  network), ``readyState`` (:data:`CONNECTING`, :data:`OPEN`,
  :data:`CLOSING`, :data:`CLOSED`), ``protocol`` (the subprotocol the server
  selected, ``""`` for none);
* ``send(data)`` -- ``str`` is a text frame, ``bytes`` a binary frame;
* ``close(code, reason)`` -- ``code`` is ``NORMAL`` or 3000-4999 (the core's
  :func:`~nimbus_websocket.core.errors.sendable_close_code` maps any other);
* handler attributes ``onopen``, ``onmessage``, ``onclose``, ``onerror``,
  each called with one event object: a message event has ``.data``
  (``str`` or ``bytes``), a close event ``.code`` and ``.reason``;
* optional extension ``onmessagedata``: a socket that has this attribute
  calls it, when set, with each message's data (``str`` or ``bytes``)
  *instead of* ``onmessage`` -- no event object per message (both
  implementations here support it; the connection layer uses it when
  present, ``onmessage`` otherwise).

Two implementations exist: :class:`~.websockets_impl.WebsocketsImpl` (CPython,
over the ``websockets`` library) and the browser runtime's wrapper around the
JavaScript ``WebSocket`` in Pyodide.  Nothing in this module imports either,
so it loads in Pyodide unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import CloseCode, sendable_close_code

__all__ = [
    "CLOSED",
    "CLOSING",
    "CONNECTING",
    "OPEN",
    "CloseEvent",
    "Event",
    "MessageEvent",
    "SocketFactory",
    "WebSocketLike",
    "sendable_close_code",  # re-exported from the core (its home: core/errors.py)
]

#: ``readyState`` values, as in the WHATWG interface.
CONNECTING = 0
OPEN = 1
CLOSING = 2
CLOSED = 3


@dataclass(frozen=True, slots=True)
class Event:
    """A plain event (``open``, ``error``)."""

    type: str


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """One received WebSocket message: ``data`` is ``str`` (text) or ``bytes`` (binary)."""

    data: str | bytes
    type: str = "message"


@dataclass(frozen=True, slots=True)
class CloseEvent:
    """The socket closed: ``code`` from the peer's close frame (1006 when it dropped)."""

    code: int
    reason: str = ""
    wasClean: bool = False
    type: str = "close"


Handler = Callable[[Any], object] | None


class WebSocketLike(Protocol):
    """What :class:`~.connection.Connection` requires of a socket (see the module doc)."""

    binaryType: str
    onopen: Handler
    onmessage: Handler
    onclose: Handler
    onerror: Handler

    @property
    def bufferedAmount(self) -> int:
        """Bytes queued by :meth:`send` and not yet handed to the network."""
        ...

    @property
    def readyState(self) -> int:
        """:data:`CONNECTING`, :data:`OPEN`, :data:`CLOSING` or :data:`CLOSED`."""
        ...

    @property
    def protocol(self) -> str:
        """The subprotocol the server selected (``""`` for none)."""
        ...

    def send(self, data: str | bytes) -> None:
        """Queue one message (text for ``str``, binary for ``bytes``)."""
        ...

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (or abandon a connection still opening)."""
        ...


#: ``factory(url, protocols) -> socket``: a WHATWG ``WebSocket``-like class or callable.
SocketFactory = Callable[[str, list[str]], WebSocketLike]
