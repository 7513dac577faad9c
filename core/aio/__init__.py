"""The client both runtimes share: asyncio over a WHATWG-shaped WebSocket.

``nimbus_websocket.core.aio`` is to :mod:`nimbus_websocket.core` what
``websockets.asyncio`` is to ``websockets.protocol``: the sans-I/O
:class:`~nimbus_websocket.core.ClientSession` wrapped in asyncio futures and
timers, written against a socket shaped like the browser's ``WebSocket``
(:mod:`.whatwg`).  The host runtime feeds it a socket over the ``websockets``
library (:class:`~nimbus_websocket.node_runtime.WebsocketsImpl`), the browser
runtime one over the JavaScript ``WebSocket`` through ``pyodide.ffi``.

Import rules (``tests/test_layers.py`` enforces them): this package imports
asyncio and the core, never ``websockets``, ``js``, ``pyodide`` or a runtime;
the modules of :mod:`nimbus_websocket.core` outside it never import asyncio.

Modules:

* :mod:`.connection` -- :class:`Connection`, :class:`Channel`, :func:`connect_with`;
* :mod:`.files` -- :func:`upload`, :func:`download` over file channels;
* :mod:`.options` -- :class:`ConnectOptions`, the one options object of every entry point;
* :mod:`.whatwg` -- the socket interface the connection is written against.
"""

from __future__ import annotations

from .connection import (
    AuthProvider,
    Channel,
    ChannelError,
    ChannelOpenError,
    Connection,
    ConnectOptions,
    Listener,
    ResumeOptions,
    RetryOptions,
    ShareLink,
    connect_with,
)
from .files import FileTransferError, Progress, download, upload
from .whatwg import SocketFactory, WebSocketLike

__all__ = [
    "AuthProvider",
    "Channel",
    "ChannelError",
    "ChannelOpenError",
    "ConnectOptions",
    "FileTransferError",
    "Connection",
    "Listener",
    "Progress",
    "ResumeOptions",
    "RetryOptions",
    "ShareLink",
    "SocketFactory",
    "WebSocketLike",
    "connect_with",
    "download",
    "upload",
]
