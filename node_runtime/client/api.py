"""The host client's entry point: :func:`connect` with an explicit WebSocket implementation."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from ...core.aio.connection import (
    AuthProvider,
    Connection,
    Listener,
    ResumeOptions,
    RetryOptions,
    connect_with,
)
from ...core.aio.whatwg import SocketFactory
from ...core.flow import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, DEFAULT_MAX_WINDOW, DEFAULT_WINDOW
from ...core.profiles import WireProfile

__all__ = ["connect"]


async def connect(
    url: str,
    *,
    websocket_impl: Any,
    profile: str | WireProfile = "nimbus.v1",
    auth: AuthProvider | None = None,
    retry: RetryOptions | None = None,
    high_water_mark: int = DEFAULT_HIGH_WATER,
    low_water_mark: int = DEFAULT_LOW_WATER,
    resume: ResumeOptions | None = None,
    client_info: Mapping[str, str] | None = None,
    per_message_deflate: bool | Mapping[str, Any] = False,
    socket_options: Mapping[str, Any] | None = None,
    heartbeat_interval: float = 20.0,
    heartbeat_misses: int = 3,
    handshake_timeout: float = 10.0,
    window: int = DEFAULT_WINDOW,
    max_window: int = DEFAULT_MAX_WINDOW,
    input_buffer_limit: int = 1 << 20,
    ack: bool = True,
    close_timeout: float = 5.0,
    on: Mapping[str, Listener] | None = None,
    clock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
) -> Connection:
    """Connect to a ``nimbus.ssh.v1`` server at ``url``; return a ready :class:`Connection`.

    ``websocket_impl`` is required -- there is no hidden default: pass
    :class:`~.websockets_impl.WebsocketsImpl` (or any WHATWG-shaped
    ``WebSocket`` class/factory ``(url, protocols) -> socket``).

    * ``profile``: a registered wire-profile id (``"nimbus.v1"``,
      ``"json-base64.v1"``, ``"lenpfx.v1"``) or a profile object;
    * ``auth``: sync or async callable returning ``{"scheme": "bearer",
      "token": ...}``, ``{"scheme": "none"}`` or ``None``; called before
      every ``hello`` (each reconnect), so it may refresh tokens;
    * ``retry``: :class:`RetryOptions` (base 300 ms, jitter, 10 tries);
    * ``high_water_mark``/``low_water_mark``: ``bufferedAmount`` marks
      (8 MiB / 2 MiB) between which credit is withheld and input waits;
    * ``resume``: :class:`ResumeOptions` (``"memory"``, ``"none"`` or a
      store object; TTL);
    * ``client_info``: sent in ``hello.client`` (e.g. ``{"app": ..., "version": ...}``);
    * ``per_message_deflate``: ``False`` (default), ``True`` or bounded
      settings ``{"window_bits": 10..12}`` -- needs an implementation with
      ``with_options`` (like ``WebsocketsImpl``); so do ``socket_options``
      (extra keywords for the implementation, e.g. ``{"ssl": ctx}``);
    * ``heartbeat_interval``/``heartbeat_misses``/``handshake_timeout``
      (seconds), ``window``/``max_window``/``input_buffer_limit`` (bytes):
      the core's tunables (defaults from the contract);
    * ``on``: listeners registered before the first state change.

    Raises :class:`~nimbus_websocket.core.CloseError` when the connection
    cannot be established.
    """
    if websocket_impl is None:
        raise TypeError("connect() needs an explicit websocket_impl (e.g. WebsocketsImpl)")
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
    return await connect_with(
        url,
        factory,
        profile=profile,
        auth=auth,
        retry=retry,
        high_water_mark=high_water_mark,
        low_water_mark=low_water_mark,
        resume=resume,
        client_info=client_info,
        heartbeat_interval=heartbeat_interval,
        heartbeat_misses=heartbeat_misses,
        handshake_timeout=handshake_timeout,
        window=window,
        max_window=max_window,
        input_buffer_limit=input_buffer_limit,
        ack=ack,
        close_timeout=close_timeout,
        on=on,
        clock=clock,
        rand=rand,
    )
