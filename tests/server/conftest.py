from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nimbus_websocket.node_runtime.server import Server

try:  # tests/ as a rootless directory (default) or as a package
    from support.serve_cli import ServeProcess
except ImportError:  # pragma: no cover
    from tests.support.serve_cli import ServeProcess


@pytest.fixture
async def pty_server(make_server: Callable[..., Awaitable[Server]]) -> Server:
    """The reference server on the local PTY backend (bash, no rc files)."""
    return await make_server(pty_command="exec bash --norc --noprofile -i")


@pytest.fixture
async def serve_cli() -> AsyncIterator[Callable[..., ServeProcess]]:
    """``serve_cli(*args)`` starts ``nimbus-ws serve ARGS`` as a subprocess; all stopped at the end."""
    procs: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        procs.append(ServeProcess(*args))
        return procs[-1]

    yield start
    for p in procs:
        await p.stop()
