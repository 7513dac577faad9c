"""Fixtures and helpers for the host client tests (the reference server with an echo backend, proxy, condition waits)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from echo_server import EchoServer
from support.proxy import TcpProxy


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    """The reference server with an echo backend on 127.0.0.1 (default config, any auth)."""
    async with EchoServer() as srv:
        yield srv


@pytest.fixture
async def make_echo() -> AsyncIterator[Callable[..., Awaitable[EchoServer]]]:
    """Start echo (reference) servers with options; all stopped at the end."""
    servers: list[EchoServer] = []

    async def make(**kw: Any) -> EchoServer:
        srv = await EchoServer(**kw).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.stop()


@pytest.fixture
async def make_proxy() -> AsyncIterator[Callable[[int], Awaitable[TcpProxy]]]:
    """Start loopback TCP proxies in front of a port; all stopped at the end."""
    proxies: list[TcpProxy] = []

    async def make(port: int, **kw: Any) -> TcpProxy:
        p = await TcpProxy(port, **kw).start()
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        await p.stop()
