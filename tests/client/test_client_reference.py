"""The host client against the reference server (local PTY / pipe backend)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from client_util import TARGET, rss_bytes, wait_for
from nimbus_websocket.node_runtime import Channel, WebsocketsImpl, connect
from nimbus_websocket.node_runtime.server import Server

pytestmark = pytest.mark.timeout(90)

USER = {"username": "me"}
TERM = {"cols": 100, "rows": 30, "env": {"TERM": "xterm-256color"}}


@pytest.fixture
def reference(make_server: Callable[..., Awaitable[Server]]) -> Callable[..., Awaitable[Server]]:
    """Reference servers on 127.0.0.1:0 (tests/conftest.py ``make_server``)."""
    return make_server


class Output:
    """Collects a channel's output through a callback; waits for patterns."""

    def __init__(self, ch: Channel) -> None:
        self.buf = bytearray()
        ch.on("data", self.buf.extend)

    async def until(self, needle: bytes, timeout: float = 10.0) -> None:
        start = len(self.buf)
        await wait_for(lambda: needle in self.buf, timeout, what=f"{needle!r} in output (new: {bytes(self.buf[start:])!r})")

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _children(ppid: int, name: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{d}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if int(fields[1]) == ppid and comm == name:
                out.append(int(d))
    return out


async def test_pty_open_resize_signal_exit_close(reference: Callable[..., Awaitable[Server]]) -> None:
    srv = await reference(pty_command="exec bash --norc --noprofile -i")
    async with await connect(srv.url, websocket_impl=WebsocketsImpl) as conn:
        ch = await conn.open_session(target=TARGET, user=USER, term=TERM)
        out = Output(ch)
        await ch.send(b"stty size; echo TERM=$TERM\n")
        await out.until(b"30 100")
        await out.until(b"TERM=xterm-256color")
        ch.resize(132, 43)
        await ch.send(b"stty size\n")
        await out.until(b"43 132")

        shell = next(iter(srv._backends.values())).proc  # type: ignore[attr-defined]
        # signal: INT goes to the PTY's foreground process group
        await ch.send(b"sleep 100\n")
        await wait_for(lambda: _children(shell.pid, "sleep"), what="sleep to start")
        await ch.signal("INT")
        await ch.send(b"echo rc=$?\n")
        await out.until(b"rc=130")
        # Ctrl-C as a byte does the same through the line discipline
        await ch.send(b"sleep 100\n")
        await wait_for(lambda: _children(shell.pid, "sleep"), what="sleep to start again")
        await ch.send(b"\x03")
        await ch.send(b"echo rc2=$?\n")
        await out.until(b"rc2=130")

        exits: list[Any] = []
        ch.on("exit", exits.append)
        await ch.send(b"exit 7\n")
        assert await ch.wait_closed() == 7
        assert [e.code for e in exits] == [7] and ch.state == "closed"

        # close() of a live channel hangs it up
        ch2 = await conn.open_session(target=TARGET, user=USER, term=TERM)
        await ch2.close()
        assert ch2.state == "closed" and ch2.error is None
        await wait_for(lambda: not srv._backends, what="the backend to be closed")  # type: ignore[attr-defined]


async def test_stream_100mb_byte_exact_with_bounded_client_memory(
    reference: Callable[..., Awaitable[Server]], tmp_path: Path
) -> None:
    size = 100 * 1024 * 1024
    src = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(100):
            chunk = block[i:] + block[:i]
            digest.update(chunk)
            f.write(chunk)
    srv = await reference(pty_command=f"exec cat {src}")
    async with await connect(srv.url, websocket_impl=WebsocketsImpl) as conn:
        ch = await conn.open_session(target=TARGET, user=USER)  # no term: pipes, byte-exact
        base = peak = rss_bytes()
        h = hashlib.sha256()
        n = 0
        async for chunk in ch:
            h.update(chunk)
            n += len(chunk)
            if n % (8 << 20) < len(chunk):
                peak = max(peak, rss_bytes())
        peak = max(peak, rss_bytes())
        assert n == size and ch.exit_status == 0
        assert h.hexdigest() == digest.hexdigest()
        assert peak - base < 32 * 1024 * 1024, f"RSS grew by {(peak - base) / 2**20:.1f} MiB"


async def test_a_consumer_that_stops_reading_stops_the_server(reference: Callable[..., Awaitable[Server]]) -> None:
    srv = await reference(pty_command="exec cat /dev/zero")
    max_window = 2 * 1024 * 1024
    async with await connect(srv.url, websocket_impl=WebsocketsImpl, max_window=max_window) as conn:
        ch = await conn.open_session(target=TARGET, user=USER)
        it = ch.__aiter__()
        consumed = 0
        while consumed < 8 << 20:
            consumed += len(await it.__anext__())
        # stop reading
        session = srv.registry.sessions()[0]
        sch = session.channels[ch.id]
        cc = conn.session.channel(ch.id).credit  # type: ignore[union-attr]
        backend = srv._backends[(session.sid, ch.id)]  # type: ignore[attr-defined]
        await wait_for(
            lambda: session.read_budget(ch.id) == 0 and cc.received == cc.granted == sch.sent and not backend._reading,
            what="the server to stop with its credit spent",
        )
        assert sch.sent - consumed <= max_window  # within one window of what was consumed
        assert ch.queued_bytes == sch.sent - consumed
        assert sch.pending <= 64 * 1024  # at most one backend read waits for credit
        sent = sch.sent
        conn.ping()  # the connection is alive: a pong comes back, no data does
        await wait_for(lambda: conn.rtt_ms is not None, what="pong")
        assert sch.sent == sent and not backend._reading
        queued = ch.queued_bytes
        while queued > 0:  # reading again (what was queued) earns credit: the server resumes
            queued -= len(await it.__anext__())
        await wait_for(lambda: sch.sent > sent, what="the server to resume")


@pytest.mark.parametrize(("server_deflate", "client_deflate"), [(True, True), (True, False), (False, True), (False, False)])
async def test_permessage_deflate_on_and_off(
    reference: Callable[..., Awaitable[Server]], server_deflate: bool, client_deflate: bool
) -> None:
    srv = await reference(pty_command="exec cat", per_message_deflate=server_deflate)
    sockets: list[WebsocketsImpl] = []

    def factory(url: str, protocols: list[str]) -> WebsocketsImpl:
        ws = WebsocketsImpl(url, protocols, per_message_deflate=client_deflate)
        sockets.append(ws)
        return ws

    async with await connect(srv.url, websocket_impl=factory) as conn:
        ch = await conn.open_session(target=TARGET, user=USER)
        payload = (b"terminal output compresses well " * 64 + os.urandom(64)) * 256
        sender = asyncio.create_task(ch.send(payload))
        got = bytearray()
        async for chunk in ch:
            got += chunk
            if len(got) >= len(payload):
                break
        await sender
        assert bytes(got) == payload
        negotiated = "permessage-deflate" in sockets[0].extensions
        assert negotiated == (server_deflate and client_deflate)
        if negotiated:
            assert "no_context_takeover" in sockets[0].extensions


async def test_open_err_and_bearer_auth(reference: Callable[..., Awaitable[Server]]) -> None:
    from nimbus_websocket.core import CloseError
    from nimbus_websocket.node_runtime import ChannelOpenError

    srv = await reference(tokens=("t0k",), allow_targets=("127.0.0.1:22",))
    with pytest.raises(CloseError) as ei:
        await connect(srv.url, websocket_impl=WebsocketsImpl, auth=lambda: {"scheme": "bearer", "token": "bad"})
    assert ei.value.code == "AUTH_FAILED"

    async def token() -> dict[str, str]:
        return {"scheme": "bearer", "token": "t0k"}

    async with await connect(srv.url, websocket_impl=WebsocketsImpl, auth=token) as conn:
        with pytest.raises(ChannelOpenError) as oe:
            await conn.open_session(target={"host": "10.1.2.3", "port": 22}, user=USER)
        assert oe.value.code == "POLICY_DENIED"
