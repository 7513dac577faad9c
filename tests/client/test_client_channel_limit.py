"""The client refuses a 5th channel itself (PROTOCOL.md 6): the server would close 4006.

A page with several terminals (demo_site/tabs.mjs) may ask for one more
than the session holds: the refusal must cost that one request, not the
connection and every other terminal on it.  Once a channel closed, its
slot is free again.
"""

from __future__ import annotations

import pytest
from client_util import TARGET
from echo_server import EchoServer
from nimbus_websocket.core.aio.connection import ChannelError
from nimbus_websocket.core.client import MAX_CHANNELS
from nimbus_websocket.node_runtime import WebsocketsImpl, connect

pytestmark = pytest.mark.timeout(60)

ECHO = {"username": "echo"}


async def test_fifth_channel_refused_locally_connection_kept(echo: EchoServer) -> None:
    conn = await connect(echo.url, websocket_impl=WebsocketsImpl)
    chans = [await conn.open_session(target=TARGET, user=ECHO) for _ in range(MAX_CHANNELS)]
    assert MAX_CHANNELS == 4
    with pytest.raises(ChannelError) as ei:
        await conn.open_session(target=TARGET, user=ECHO)
    assert ei.value.code == "CHANNEL_LIMIT" and "4 channels" in ei.value.message
    assert conn.state == "ready"  # nothing went to the server
    await chans[0].send(b"still here")
    assert await chans[0].__aiter__().__anext__() == b"still here"
    await chans[1].close()
    fifth = await conn.open_session(target=TARGET, user=ECHO)  # the slot is free again
    await fifth.send(b"fifth")
    assert await fifth.__aiter__().__anext__() == b"fifth"
    await conn.close()
