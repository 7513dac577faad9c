"""The host client's entry point: :func:`connect` with an explicit WebSocket implementation."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from ...core.aio.connection import AuthProvider, Connection, Listener, connect_with
from ...core.aio.options import ConnectOptions
from ...core.aio.whatwg import SocketFactory

__all__ = ["connect"]


async def connect(
    url: str,
    *,
    websocket_impl: Any,
    options: ConnectOptions | None = None,
    auth: AuthProvider | None = None,
    per_message_deflate: bool | Mapping[str, Any] = False,
    socket_options: Mapping[str, Any] | None = None,
    on: Mapping[str, Listener] | None = None,
    clock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
    **keywords: Any,
) -> Connection:
    """Connect to a ``nimbus.ssh.v1`` server at ``url``; return a ready :class:`Connection`.

    ``websocket_impl`` is required -- there is no hidden default: pass
    :class:`~.websockets_impl.WebsocketsImpl` (or any WHATWG-shaped
    ``WebSocket`` class/factory ``(url, protocols) -> socket``).

    The connection's options are one
    :class:`~nimbus_websocket.core.aio.ConnectOptions`: pass it as
    ``options``, or its fields as keywords (they replace the fields of
    ``options``; an unknown keyword is a ``TypeError``) -- ``profile``,
    ``retry`` (:class:`RetryOptions`), ``resume`` (:class:`ResumeOptions`:
    ``"memory"``, ``"none"`` or a store object; TTL),
    ``high_water_mark``/``low_water_mark``, ``client_info``,
    ``heartbeat_interval``/``heartbeat_misses``/``handshake_timeout``,
    ``window``/``max_window``/``input_buffer_limit``, ``ack``,
    ``close_timeout``... (defaults and units: see ``ConnectOptions``).

    Host-only arguments:

    * ``auth``: sync or async callable returning ``{"scheme": "bearer",
      "token": ...}``, ``{"scheme": "none"}`` or ``None``; called before
      every ``hello`` (each reconnect), so it may refresh tokens;
    * ``per_message_deflate``: ``False`` (default), ``True`` or bounded
      settings ``{"window_bits": 10..12}`` -- needs an implementation with
      ``with_options`` (like ``WebsocketsImpl``); so do ``socket_options``
      (extra keywords for the implementation, e.g. ``{"ssl": ctx}``);
    * ``on``: listeners registered before the first state change;
    * ``clock``/``rand``: the injected wall clock and random source.

    Raises :class:`~nimbus_websocket.core.CloseError` when the connection
    cannot be established.
    """
    if websocket_impl is None:
        raise TypeError("connect() needs an explicit websocket_impl (e.g. WebsocketsImpl)")
    opts = ConnectOptions.from_keywords(options, **keywords)
    factory: SocketFactory = websocket_impl
    impl_options: dict[str, Any] = dict(socket_options or {})
    if per_message_deflate:
        impl_options["per_message_deflate"] = per_message_deflate
    if impl_options:
        with_options = getattr(websocket_impl, "with_options", None)
        if with_options is None:
            raise TypeError(
                f"{websocket_impl!r} takes no options (per_message_deflate/socket_options need with_options())"
            )
        factory = with_options(**impl_options)
    return await connect_with(url, factory, options=opts, auth=auth, on=on, clock=clock, rand=rand)
