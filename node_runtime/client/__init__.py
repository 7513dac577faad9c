"""The host (CPython) client of ``nimbus.ssh.v1``.

Two layers:

* :mod:`.connection` -- :class:`Connection`/:class:`Channel`/:func:`connect_with`,
  written only against a WHATWG-shaped socket and asyncio, shared with the
  browser runtime (Pyodide);
* :mod:`.websockets_impl` -- :class:`WebsocketsImpl`, that socket over the
  ``websockets`` library, and :func:`connect` which requires it explicitly.

Names are imported lazily, so importing this package (as the browser runtime
does, for :mod:`.connection`) never imports ``websockets``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import connect
    from .connection import (
        Channel,
        ChannelError,
        ChannelOpenError,
        Connection,
        ResumeOptions,
        RetryOptions,
        connect_with,
    )
    from .websockets_impl import WebsocketsImpl

__all__ = [
    "Channel",
    "ChannelError",
    "ChannelOpenError",
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
        n: ".connection"
        for n in (
            "Channel",
            "ChannelError",
            "ChannelOpenError",
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
