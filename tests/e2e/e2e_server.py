"""The reference server in a background thread, for tests that drive a browser.

:class:`ServerThread` runs :class:`~nimbus_websocket.node_runtime.server.Server`
on 127.0.0.1:0 in its own thread and event loop, so that the Playwright *sync*
API can drive the page from the test thread while the test still inspects the
server consistently (``call(coro)`` / ``sync(fn)`` run on the server's loop).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
PTY_COMMAND = "exec bash --norc --noprofile -i"

T = TypeVar("T")


class ServerThread:
    """A reference server running in its own thread and event loop."""

    def __init__(self, **options: Any) -> None:
        from nimbus_websocket.node_runtime.server import Server, ServerOptions

        options.setdefault("host", "127.0.0.1")
        options.setdefault("port", 0)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="nimbus-e2e-server", daemon=True)
        self._make = lambda: Server(ServerOptions(**options))
        self.server: Any = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn: Callable[[], T], timeout: float = 30) -> T:
        """Evaluate ``fn()`` on the server's loop (consistent snapshots of its state)."""

        async def run() -> T:
            return fn()

        return self.call(run(), timeout)

    def start(self) -> ServerThread:
        self._thread.start()

        async def start() -> Any:
            srv = self._make()
            await srv.start()
            return srv

        self.server = self.call(start())
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.stop(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/"

    def backends(self) -> list[Any]:
        return self.sync(lambda: list(self.server._backends.values()))

    def channels_now(self) -> int:
        """Channels alive in all sessions, retained ones included (call on the server's loop)."""
        return sum(len(s.channels) for s in self.server.registry.sessions())

    def channel_count(self) -> int:
        """:meth:`channels_now`, from any thread."""
        return self.sync(self.channels_now)
