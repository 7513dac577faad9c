"""Fixtures of the reliability suite (reference servers in process, loopback proxies)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from support.proxy import TcpProxy


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
