"""Static files are streamed from disk with a bounded buffer (issue 13 item 8, issue 14 item 4).

Against the real server on 127.0.0.1 with raw sockets: page loads that never
read hold no copy of the file in the server's memory (``tracemalloc`` of the
process, which runs the server), a client that stalls is cut after the stall
timeout while a neighbour is served, a slow reader with a tiny receive buffer
still gets every byte (nothing is dropped when the response outgrows the
kernel's buffers), and the same over TLS, where the body goes through the
user-space chunk loop instead of ``sendfile``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from nimbus_websocket.node_runtime.server import Server

try:  # tests/ as a rootless directory (default) or as a package
    from support.tls_certs import make_tls
    from support.waiting import wait_for
except ImportError:  # pragma: no cover
    from tests.support.tls_certs import make_tls
    from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(90)

MiB = 1024 * 1024


async def _open(port: int, rcvbuf: int | None = None, ctx: ssl.SSLContext | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, ssl=ctx, server_hostname="127.0.0.1" if ctx else None)


async def _request(writer: asyncio.StreamWriter, port: int, path: str, extra: str = "") -> None:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode())
    await writer.drain()


async def _read_response(reader: asyncio.StreamReader, *, pace: float = 0.0, step: int = 64 * 1024) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the SHA-256 of the body (hashed as it arrives: the test process runs
    the server, so the test must not hold the body either)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    length = int(headers["content-length"])
    digest, got = hashlib.sha256(), 0
    while got < length:
        chunk = await asyncio.wait_for(reader.read(min(step, length - got)), 15)
        if not chunk:
            break
        digest.update(chunk)
        got += len(chunk)
        if pace:
            await asyncio.sleep(pace)  # pacing a slow reader, not synchronisation
    headers["x-received"] = str(got)
    return int(lines[0].split()[1]), headers, digest.digest()


@pytest.fixture
def big_site(tmp_path: Path) -> tuple[Path, bytes]:
    site = tmp_path / "site"
    site.mkdir()
    data = os.urandom(8 * MiB)
    (site / "big.wasm").write_bytes(data)
    (site / "index.html").write_text("<p>hi</p>")
    return site, data


async def test_loads_that_never_read_hold_no_copy_of_the_file(make_server: Any, big_site: tuple[Path, bytes]) -> None:
    site, data = big_site
    srv: Server = await make_server(pty_command="exec cat", static_dir=str(site))
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        stuck = []
        for _ in range(20):  # 20 x 8 MiB = 160 MiB if each were read whole (the old server did)
            r, w = await _open(srv.port, rcvbuf=4096)
            await _request(w, srv.port, "/big.wasm")
            stuck.append((r, w))
        # every one is being served (its head arrived) ...
        for r, _ in stuck:
            assert (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 15)).startswith(b"HTTP/1.1 200")
        # ... a neighbour gets the whole file meanwhile ...
        r, w = await _open(srv.port)
        await _request(w, srv.port, "/big.wasm")
        status, _, body = await _read_response(r)
        w.close()
        assert status == 200 and body == hashlib.sha256(data).digest()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # ... and the server never held a copy of a file: a few chunks at most, whatever the count.
    assert peak - base < 4 * MiB, f"peak {(peak - base) / MiB:.1f} MiB for 20 loads that never read"
    for _, w in stuck:
        w.transport.abort()


async def test_a_stalled_load_is_cut_after_the_stall_timeout(make_server: Any, big_site: tuple[Path, bytes]) -> None:
    site, _ = big_site
    srv: Server = await make_server(pty_command="exec cat", static_dir=str(site), static_stall_timeout=1.0)
    r, w = await _open(srv.port, rcvbuf=4096)
    await _request(w, srv.port, "/big.wasm")
    assert (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 15)).startswith(b"HTTP/1.1 200")
    t0 = time.monotonic()
    await wait_for(lambda: srv.conn_limits.held == 0, 15, "the stalled load's connection closed by the server")
    assert time.monotonic() - t0 < 10
    w.transport.abort()


async def test_a_slow_reader_with_a_tiny_buffer_gets_every_byte(make_server: Any, big_site: tuple[Path, bytes]) -> None:
    """64 KiB per 20 ms through a 4 KiB receive buffer: the response is far larger than the
    kernel buffers on both sides, and still arrives whole (nothing is dropped at close)."""
    site, data = big_site
    srv: Server = await make_server(pty_command="exec cat", static_dir=str(site))
    r, w = await _open(srv.port, rcvbuf=4096)
    await _request(w, srv.port, "/big.wasm")
    status, headers, body = await asyncio.wait_for(_read_response(r, pace=0.02), 60)
    w.close()
    assert status == 200 and headers["content-length"] == str(len(data))
    assert headers["x-received"] == str(len(data)) and body == hashlib.sha256(data).digest()
    assert await asyncio.wait_for(r.read(), 5) == b""  # closed after the body


async def test_over_tls_the_file_arrives_whole_and_is_not_held(make_server: Any, big_site: tuple[Path, bytes], tmp_path: Path) -> None:
    site, data = big_site
    tls = make_tls(tmp_path / "tls")
    srv: Server = await make_server(pty_command="exec cat", static_dir=str(site), cert=str(tls.cert), key=str(tls.key))
    ctx = tls.client_context()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        stuck = []
        for _ in range(5):
            r, w = await _open(srv.port, rcvbuf=4096, ctx=ctx)
            await _request(w, srv.port, "/big.wasm")
            stuck.append(w)
        r, w = await _open(srv.port, ctx=ctx)
        await _request(w, srv.port, "/big.wasm", "Accept-Encoding: identity\r\n")
        status, _, body = await _read_response(r)
        w.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 200 and body == hashlib.sha256(data).digest()
    assert peak - base < 8 * MiB, f"peak {(peak - base) / MiB:.1f} MiB"
    for s in stuck:
        s.transport.abort()
