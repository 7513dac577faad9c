"""The host (CPython) client of ``nimbus.ssh.v1``.

Two layers:

* :mod:`nimbus_websocket.core.aio` -- :class:`Connection`/:class:`Channel`/:func:`connect_with`,
  written only against a WHATWG-shaped socket and asyncio, shared with the
  browser runtime (Pyodide); re-exported here;
* :mod:`.websockets_impl` -- :class:`WebsocketsImpl`, that socket over the
  ``websockets`` library, and :func:`connect` which requires it explicitly.

Names are imported lazily, so importing this package never imports ``websockets``
until :func:`connect` or :class:`WebsocketsImpl` is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...core.aio.connection import (
        Channel,
        ChannelError,
        ChannelOpenError,
        Connection,
        ConnectOptions,
        ResumeOptions,
        RetryOptions,
        connect_with,
    )
    from .api import connect
    from .websockets_impl import WebsocketsImpl

__all__ = [
    "Channel",
    "ChannelError",
    "ChannelOpenError",
    "ConnectOptions",
    "Connection",
    "ResumeOptions",
    "RetryOptions",
    "WebsocketsImpl",
    "connect",
    "connect_with",
]

_WHERE = {
    "connect": ".api",
    "WebsocketsImpl": ".websockets_impl",
    **{
        n: "...core.aio.connection"
        for n in (
            "Channel",
            "ChannelError",
            "ChannelOpenError",
            "ConnectOptions",
            "Connection",
            "ResumeOptions",
            "RetryOptions",
            "connect_with",
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
