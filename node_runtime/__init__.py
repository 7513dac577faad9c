"""The host side of ``nimbus.ssh.v1``: CPython client, reference server, conformance kit.

Client names are re-exported lazily from :mod:`.client`::

    from nimbus_websocket.node_runtime import connect, WebsocketsImpl

so that importing this package (for example for the server, or the
connection layer inside Pyodide) pulls in nothing it does not use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import (
        Channel,
        ChannelError,
        ChannelOpenError,
        Connection,
        ResumeOptions,
        RetryOptions,
        WebsocketsImpl,
        connect,
        connect_with,
    )

__all__ = [
    "Channel",
    "ChannelError",
    "ChannelOpenError",
    "CloseError",
    "Connection",
    "ResumeOptions",
    "RetryOptions",
    "WebsocketsImpl",
    "connect",
    "connect_with",
]


def __getattr__(name: str) -> Any:
    if name == "CloseError":
        from ..core.errors import CloseError

        return CloseError
    if name in __all__:
        return getattr(importlib.import_module(".client", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
