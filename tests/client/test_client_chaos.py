"""Network failures under load: TCP cuts at random points, heartbeat loss (loopback proxy).

Each test runs against the in-test echo server and against the reference
server (``cat`` on pipes: no PTY, so the echo is byte-exact).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from client_util import TARGET, wait_for
from echo_server import EchoServer
from nimbus_websocket.core import Diagnostic, StateChanged
from nimbus_websocket.node_runtime import RetryOptions, WebsocketsImpl, connect
from nimbus_websocket.node_runtime.server import Server, ServerOptions
from support.proxy import TcpProxy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["echo", "reference"])
async def cat_server(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A server whose channels echo their input: the echo server, or the reference server running ``cat``."""
    if request.param == "echo":
        srv: Any = await EchoServer().start()
    else:
        srv = Server(ServerOptions(port=0, pty_command="exec cat"))
        await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_twenty_cuts_during_a_bidirectional_20mb_transfer(cat_server: Any) -> None:
    total = 20 * 1024 * 1024
    rng = random.Random(20)
    data = rng.randbytes(total)
    cut_points = sorted(rng.randrange(total // 50, total - total // 20) for _ in range(20))
    proxy = await TcpProxy(cat_server.port).start()
    states: list[str] = []
    diags: list[str] = []
    conn = await connect(
        f"ws://127.0.0.1:{proxy.port}/ws/ssh",
        websocket_impl=WebsocketsImpl,
        retry=RetryOptions(base_ms=20, max_delay_ms=200),
        on={"statechange": lambda e: states.append(e.new), "diagnostic": lambda d: diags.append(d.code)},
    )
    try:
        ch = await conn.open_session(target=TARGET, user={"username": "echo"})  # no term: pipes
        sender = asyncio.create_task(ch.send(data))
        got = hashlib.sha256()
        n = 0
        cuts = 0
        async for chunk in ch:
            got.update(chunk)
            n += len(chunk)
            if cuts < len(cut_points) and n >= cut_points[cuts] and conn.state == "ready" and proxy.connections:
                assert proxy.cut() == 1
                cuts += 1
            if n >= total:
                break
        await asyncio.wait_for(sender, 30)
        assert n == total and cuts == 20
        assert got.hexdigest() == hashlib.sha256(data).hexdigest()  # complete, in order, no duplicate
        assert ch.state == "open" and conn.channels == [ch]
        assert states.count("reconnecting") == 20 and states[-1] == "ready"
        assert diags.count("resume_accepted") == 20
        # after every drop the connection came back: reconnecting -> authenticating -> ready
        for i, s in enumerate(states):
            if s == "reconnecting":
                assert "ready" in states[i:]
        await ch.send(b"and still echoing\n")
        tail = await asyncio.wait_for(ch.__aiter__().__anext__(), 10)
        assert tail == b"and still echoing\n"
    finally:
        await conn.close()
        await proxy.stop()


async def test_heartbeat_loss_reconnects_and_resumes(cat_server: Any) -> None:
    proxy = await TcpProxy(cat_server.port).start()
    events: list[Any] = []
    conn = await connect(
        f"ws://127.0.0.1:{proxy.port}/ws/ssh",
        websocket_impl=WebsocketsImpl,
        heartbeat_interval=0.2,
        heartbeat_misses=3,
        handshake_timeout=1.0,
        retry=RetryOptions(base_ms=50, max_delay_ms=300, max_retries=50),
        on={"statechange": events.append, "diagnostic": events.append},
    )
    try:
        ch = await conn.open_session(target=TARGET, user={"username": "echo"})
        await ch.send(b"one\n")
        it = ch.__aiter__()
        assert await it.__anext__() == b"one\n"
        proxy.stall(True)  # black hole: nothing passes, nothing is closed
        await wait_for(lambda: conn.state == "reconnecting", timeout=5, what="reconnecting")
        codes = [e.code for e in events if isinstance(e, Diagnostic)]
        assert "heartbeat_miss" in codes and "heartbeat_timeout" in codes
        timeout_diag = next(e for e in events if isinstance(e, Diagnostic) and e.code == "heartbeat_timeout")
        lost = next(e for e in events if isinstance(e, StateChanged) and e.new == "reconnecting")
        assert events.index(timeout_diag) < events.index(lost) and lost.old == "ready"
        await ch.send(b"two\n")  # typed while away: kept and delivered once
        proxy.stall(False)
        await wait_for(lambda: conn.state == "ready", timeout=10, what="ready again")
        assert await asyncio.wait_for(it.__anext__(), 10) == b"two\n"
        states = [e.new for e in events if isinstance(e, StateChanged)]
        assert states[-1] == "ready" and "reconnecting" in states
    finally:
        await conn.close()
        await proxy.stop()
