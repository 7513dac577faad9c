"""Issue 13 item 8: unauthenticated peers cannot make the server hold memory without bound.

Each test runs the real server on 127.0.0.1 and performs the attack with raw
sockets: a ping flood from a client that never reads, more connections than
one address may hold (page loads that never read: tests/server/test_static_stream.py).  What is
asserted is what the server holds (its sockets' unsent bytes, its admission
counters), read from the server object, and that a neighbour is still served.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from typing import Any

from nimbus_websocket.core.server import ServerConfig
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.server import Server

try:  # tests/ as a rootless directory (default) or as a package
    from support.waiting import wait_for
except ImportError:  # pragma: no cover
    from tests.support.waiting import wait_for

MiB = 1024 * 1024


async def _upgrade(port: int, host: str = "127.0.0.1", rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket upgrade to ``/ws/ssh`` (no Origin: a non-browser client)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws/ssh HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: nimbus.ssh.v1\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def _ping(payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes([0x89, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _unsent(srv: Server) -> int:
    return max((c.transport.get_write_buffer_size() for c in srv.connections), default=0)


async def test_ping_flood_from_a_client_that_never_reads_is_bounded(make_server: Any) -> None:
    config = ServerConfig(hello_timeout=3.0)
    srv: Server = await make_server(pty_command="exec cat", config=config)
    _, writer = await _upgrade(srv.port, rcvbuf=4096)
    chunk = _ping(b"p" * 125) * 2000  # 262 KB of pings -> 254 KB of pongs
    sent, worst, deadline = 0, 0, time.monotonic() + 20
    while sent < 64 * MiB and time.monotonic() < deadline:  # the unbounded server took all 64 MB
        writer.write(chunk)
        try:
            await asyncio.wait_for(writer.drain(), 1.0)
        except TimeoutError:
            break  # the server stopped reading us: the attack is over
        sent += len(chunk)
        worst = max(worst, _unsent(srv))
    worst = max(worst, _unsent(srv))
    # One read's pongs (at most 256 KiB read -> 254 KiB answered) may land past the bound.
    assert worst <= config.max_unsent + 256 * 1024, (worst, sent)
    assert sent < 32 * MiB, sent  # it stopped reading long before 64 MB
    # A neighbour is served meanwhile.
    c = await WireClient.connect(srv.url)
    await c.hello()
    await c.open(1)
    await c.type(1, "neighbour\n")
    await c.until_output(1, b"neighbour", timeout=10)
    await c.close()
    # And the flooder is closed by the hello timeout (plus the close timeout).
    await wait_for(lambda: not srv.connections, 20, "the flooder to be closed")
    writer.transport.abort()


async def _closed_at_once(port: int, source: str = "127.0.0.1") -> bool:
    """True if the server drops a new TCP connection (from ``source``) before any request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = await asyncio.wait_for(reader.read(1), 5)
        return data == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    finally:
        writer.transport.abort()


async def test_connections_per_ip_are_capped_and_rotating_loopback_sources_do_not_help(make_server: Any) -> None:
    srv: Server = await make_server(pty_command="exec cat", max_connections_per_ip=4, metrics=True)
    held = []
    for i in range(4):
        # from rotating sources: 127/8 is one prefix
        _, w = await asyncio.open_connection("127.0.0.1", srv.port, local_addr=(f"127.0.0.{i + 2}", 0))
        held.append(w)
    await wait_for(lambda: srv.conn_limits.held == 4, 10, "4 connections admitted")
    assert await _closed_at_once(srv.port, source="127.0.0.9")
    assert srv.conn_limits.held == 4
    held.pop().transport.abort()
    await wait_for(lambda: srv.conn_limits.held == 3, 10, "a slot released")
    c = await WireClient.connect(srv.url)  # a slot is free again
    await c.hello()
    await c.close()
    for w in held:
        w.transport.abort()


async def test_connections_overall_are_capped(make_server: Any) -> None:
    srv: Server = await make_server(pty_command="exec cat", max_connections=3, max_connections_per_ip=0)
    held = [(await asyncio.open_connection("127.0.0.1", srv.port))[1] for _ in range(3)]
    await wait_for(lambda: srv.conn_limits.held == 3, 10, "3 connections admitted")
    assert await _closed_at_once(srv.port)
    for w in held:
        w.transport.abort()
    await wait_for(lambda: srv.conn_limits.held == 0, 10, "every slot released")
