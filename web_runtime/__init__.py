"""The browser runtime of ``nimbus.ssh.v1``: the client in Pyodide, over the JavaScript ``WebSocket``.

From Python inside Pyodide (a page, or Node through the shim)::

    from nimbus_websocket.web_runtime import connect

    conn = await connect("wss://host/ws/ssh", auth=lambda: {"scheme": "bearer", "token": t})
    ch = await conn.open_session({"host": "10.0.0.5", "port": 22},
                                 {"username": "me", "auth": {...}},
                                 {"cols": 80, "rows": 24},
                                 on={"data": lambda b: ...})

The :class:`~nimbus_websocket.core.aio.Connection` /
:class:`~nimbus_websocket.core.aio.Channel` API is the CPython
client's (the same connection layer); the web runtime adds
:class:`~.socket.BrowserWebSocket` (the JavaScript socket as a WHATWG-shaped
one), :class:`~.storage.SessionStorageStore` (resume across reloads),
:class:`~.lifecycle.PageLifecycle` (visibility, online/offline, pagehide)
and :class:`~.connection.WebConnection`.  Page JavaScript uses the facade
``web_runtime/js/nimbus.mjs`` instead, which calls :mod:`.bridge`.

Modules:

* :mod:`.connection` -- :func:`connect`, :class:`WebConnection`;
* :mod:`.socket` -- :class:`BrowserWebSocket`;
* :mod:`.storage` -- :class:`SessionStorageStore`;
* :mod:`.lifecycle` -- :class:`PageLifecycle`;
* :mod:`.bridge` -- the Python half of the JavaScript facade.

Names are imported lazily: importing this package touches neither ``js``
nor ``pyodide``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core.aio.connection import (
        Channel,
        ChannelError,
        ChannelOpenError,
        Connection,
        ResumeOptions,
        RetryOptions,
    )
    from .connection import WebConnection, connect
    from .lifecycle import PageLifecycle
    from .socket import BrowserWebSocket
    from .storage import SessionStorageStore

__all__ = [
    "BrowserWebSocket",
    "Channel",
    "ChannelError",
    "ChannelOpenError",
    "Connection",
    "PageLifecycle",
    "ResumeOptions",
    "RetryOptions",
    "SessionStorageStore",
    "WebConnection",
    "connect",
]

_WHERE = {
    "connect": ".connection",
    "WebConnection": ".connection",
    "BrowserWebSocket": ".socket",
    "SessionStorageStore": ".storage",
    "PageLifecycle": ".lifecycle",
    **{
        n: "..core.aio.connection"
        for n in (
            "Channel",
            "ChannelError",
            "ChannelOpenError",
            "Connection",
            "ResumeOptions",
            "RetryOptions",
        )
    },
}


def __getattr__(name: str) -> Any:
    try:
        mod = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(importlib.import_module(mod, __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
