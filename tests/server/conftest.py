from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from nimbus_websocket.node_runtime.server import Server, ServerOptions


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
async def pty_server(make_server: Callable[..., Awaitable[Server]]) -> Server:
    """The reference server on the local PTY backend (bash, no rc files)."""
    return await make_server(pty_command="exec bash --norc --noprofile -i")
