from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from nimbus_websocket.node_runtime.server import Server


@pytest.fixture
async def pty_server(make_server: Callable[..., Awaitable[Server]]) -> Server:
    """The reference server on the local PTY backend (bash, no rc files)."""
    return await make_server(pty_command="exec bash --norc --noprofile -i")
