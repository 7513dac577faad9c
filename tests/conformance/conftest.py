"""Fixtures for the conformance-kit tests: the reference server, the minimal oracle server, the kit's CLI.

Servers listen on 127.0.0.1 port 0.  The minimal server is a standalone
test-oracle script (``tests/oracles/minimal_server.py``, one wire profile
per process): it runs as a subprocess that prints ``listening
ws://HOST:PORT/``, or is loaded as a module when a test needs a deliberately
broken variant.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any

import pytest
from kithelpers import MINIMAL_SERVER, SHELL, stderr_text
from nimbus_websocket.node_runtime.server import Server
from nimbus_websocket.node_runtime.server.files import FilePolicy


@pytest.fixture
def reference(make_server: Callable[..., Awaitable[Server]]) -> Callable[..., Awaitable[Server]]:
    """Reference servers (PTY backend, 127.0.0.1:0; tests/conftest.py ``make_server``)."""

    async def make(**kw: Any) -> Server:
        kw.setdefault("backend", "pty")
        kw.setdefault("pty_command", f"exec {SHELL}")
        kw.setdefault("allow_targets", ("127.0.0.1:*", "localhost:*"))
        kw.setdefault("files", FilePolicy())  # on although pty_command is set: the kit tests caps.files
        return await make_server(**kw)

    return make


@pytest.fixture
async def example_process() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Run the example server for ``profile`` as a subprocess; returns its ws:// URL."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(profile: str, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(MINIMAL_SERVER),
            "--profile",
            profile,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--command",
            SHELL,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(proc)
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 15)
        except TimeoutError:
            pytest.fail(f"{MINIMAL_SERVER.name} --profile {profile} did not report its address within 15 s")
        text = line.decode().strip()
        assert text.startswith("listening ws://127.0.0.1:"), (text, await stderr_text(proc))
        return text.split()[1]

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def in_process_example() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Serve an example module's ``start_server`` in this event loop (``profile=`` etc. in ``kw``); returns its URL."""
    servers: list[Any] = []

    async def start(mod: ModuleType, **kw: Any) -> str:
        kw.setdefault("command", SHELL)
        server = await mod.start_server("127.0.0.1", 0, **kw)
        servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


