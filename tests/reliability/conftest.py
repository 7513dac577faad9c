"""Fixtures of the reliability suite (reference servers in process, loopback proxies)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from nimbus_websocket.node_runtime.server import Server, ServerOptions
from support.proxy import TcpProxy


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Start reference servers on 127.0.0.1:0 with the given options; all stopped at the end."""
    servers: list[Server] = []

    async def make(**kw: Any) -> Server:
        kw.setdefault("port", 0)
        srv = Server(ServerOptions(**kw))
        await srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.stop()


@pytest.fixture
async def make_proxy() -> AsyncIterator[Callable[..., Awaitable[TcpProxy]]]:
    """Start loopback TCP proxies in front of a port; all stopped at the end."""
    proxies: list[TcpProxy] = []

    async def make(port: int, **kw: Any) -> TcpProxy:
        p = await TcpProxy(port, **kw).start()
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        await p.stop()
