"""The connection layer over a hand-written WHATWG-shaped socket (no ``websockets``).

This is the contract the browser runtime relies on: ``Connection`` needs
nothing but ``factory(url, protocols)``, ``send``, ``close``,
``bufferedAmount``, ``readyState``, ``protocol`` and ``on*`` handlers, and
events delivered from the event loop.  The fake socket below talks to the
core's server machines in memory.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import pytest
from client_util import TARGET, wait_for
from nimbus_websocket.core import (
    AuthRequested,
    BackendInput,
    BackendOpen,
    ServerConnection,
    SessionRegistry,
    get_profile,
    profile_for_subprotocol,
)
from nimbus_websocket.core.aio.connection import Connection, connect_with
from nimbus_websocket.core.aio.whatwg import (
    CLOSED,
    CONNECTING,
    OPEN,
    CloseEvent,
    Event,
    MessageEvent,
    sendable_close_code,
)

pytestmark = pytest.mark.timeout(30)


class MemoryServer:
    """Core server machines with an echo backend, no network."""

    def __init__(self) -> None:
        self.registry = SessionRegistry()
        self.sockets: list[FakeSocket] = []


class FakeSocket:
    """A WHATWG-like WebSocket whose peer is a core ``ServerConnection`` in memory."""

    server: MemoryServer

    def __init__(self, url: str, protocols: list[str]) -> None:
        self.url = url
        self.binaryType = "blob"
        self.bufferedAmount = 0
        self.readyState = CONNECTING
        self.onopen: Any = None
        self.onmessage: Any = None
        self.onclose: Any = None
        self.onerror: Any = None
        self.sent: list[str | bytes] = []
        chosen = next((p for p in protocols if profile_for_subprotocol(p)), None)
        self.protocol = chosen or ""
        self.loop = asyncio.get_running_loop()
        self.peer = ServerConnection(self.server.registry, now=time.time(), subprotocol=chosen, wake=self._later)
        self.server.sockets.append(self)
        self.loop.call_soon(self._open)

    def _open(self) -> None:
        if self.readyState == CONNECTING:
            self.readyState = OPEN
            self._fire("onopen", Event("open"))

    def _fire(self, name: str, ev: object) -> None:
        cb = getattr(self, name)
        if cb is not None:
            cb(ev)

    def _later(self) -> None:
        self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        now = time.time()
        s = self.peer.session
        for ev in self.peer.events():
            if isinstance(ev, AuthRequested):
                self.peer.auth_result("memory", now)
            elif isinstance(ev, BackendOpen) and self.peer.session is not None:
                self.peer.session.channel_opened(ev.id)
            elif isinstance(ev, BackendInput) and s is not None:
                s.backend_output(ev.id, "stdout", ev.data)  # fits: tests send less than the window
                s.input_written(ev.id, len(ev.data), now)
        for frame in self.peer.frames_to_send():
            if self.readyState == OPEN:
                self.loop.call_soon(self._deliver, frame)

    def _deliver(self, frame: str | bytes) -> None:
        if self.readyState == OPEN:
            self._fire("onmessage", MessageEvent(frame))

    def send(self, data: str | bytes) -> None:
        assert self.readyState != CONNECTING
        assert isinstance(data, (str, bytes))
        if self.readyState != OPEN:
            return
        self.sent.append(data)
        self.peer.receive_frame(data, time.time())
        self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        assert code == 1000 or 3000 <= code <= 4999, code
        if self.readyState in (CLOSED,):
            return
        self.readyState = CLOSED
        self.peer.transport_closed(code, time.time())
        self.loop.call_soon(self._fire, "onclose", CloseEvent(code, reason, True))

    def drop(self) -> None:
        """The network died: 1006 on both sides."""
        self.readyState = CLOSED
        self.peer.transport_closed(1006, time.time())
        self.loop.call_soon(self._fire, "onclose", CloseEvent(1006, "", False))


@pytest.fixture
def memory_socket() -> type[FakeSocket]:
    FakeSocket.server = MemoryServer()
    return FakeSocket


async def test_connection_over_a_fake_whatwg_socket(memory_socket: type[FakeSocket]) -> None:
    states: list[str] = []
    conn = await connect_with("memory://x", memory_socket, on={"statechange": lambda e: states.append(e.new)})
    assert isinstance(conn, Connection) and conn.state == "ready" and conn.protocol == "nimbus.ssh.v1"
    sock = memory_socket.server.sockets[0]
    assert sock.binaryType == "arraybuffer"  # always set (browsers default to Blob)
    ch = await conn.open_session(target=TARGET, user={"username": "u"})
    await ch.send(b"abc")
    assert await ch.__aiter__().__anext__() == b"abc"
    # network loss: a new socket, old listeners detached, the channel resumed
    sock.drop()
    await wait_for(lambda: len(memory_socket.server.sockets) == 2 and conn.state == "ready", what="resume")
    assert sock.onmessage is None and sock.onclose is None
    assert states[-3:] == ["reconnecting", "authenticating", "ready"]
    await ch.send(b"def")
    assert await ch.__aiter__().__anext__() == b"def"
    await conn.close()
    assert memory_socket.server.sockets[1].readyState == CLOSED and len(memory_socket.server.registry) == 0


async def test_events_of_a_detached_socket_are_never_reported(memory_socket: type[FakeSocket]) -> None:
    conn = await connect_with("memory://x", memory_socket, heartbeat_interval=0.05, heartbeat_misses=1)
    old = memory_socket.server.sockets[0]
    old.readyState = 2  # frozen: never answers (as a stalled network)
    await wait_for(lambda: len(memory_socket.server.sockets) >= 2, what="a new socket after the heartbeat timeout")
    # whatever the old socket does now goes nowhere
    assert old.onmessage is None and old.onopen is None
    await wait_for(lambda: conn.state == "ready", what="ready on the new socket")
    await conn.close()


def test_sendable_close_codes() -> None:
    assert sendable_close_code(1000) == 1000
    assert sendable_close_code(4012) == 4012
    assert sendable_close_code(1006) == 4000 and sendable_close_code(1009) == 4000 and sendable_close_code(1001) == 4000


def test_the_connection_layer_imports_no_websocket_library() -> None:
    code = (
        "import sys\n"
        "import nimbus_websocket.core.aio.connection\n"
        "import nimbus_websocket.node_runtime\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('websockets', 'js', 'pyodide')]\n"
        "assert not bad, bad\n"
        "assert 'nimbus_websocket.node_runtime.client.websockets_impl' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_profile_ids_have_subprotocols() -> None:
    assert get_profile("nimbus.v1").subprotocols == ("nimbus.ssh.v1",)
