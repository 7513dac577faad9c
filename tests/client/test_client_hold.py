"""``Hold`` (a data listener's synchronous consumption) and ``Channel.try_send`` (input without a task)."""

from __future__ import annotations

import asyncio

import pytest
from client_util import TARGET, wait_for
from echo_server import EchoServer
from nimbus_websocket.core.aio.connection import ChannelError, Hold
from nimbus_websocket.node_runtime import WebsocketsImpl, connect

pytestmark = pytest.mark.timeout(60)

ECHO = {"username": "echo"}


async def test_hold_releases_once_and_is_awaitable() -> None:
    hold = Hold()
    calls: list[str] = []
    hold.on_release(lambda: calls.append("a"))
    waiter = asyncio.ensure_future(asyncio.wait_for(_await(hold), 5))
    await asyncio.sleep(0)
    assert not waiter.done() and not hold.released
    hold.release()
    hold.release()  # idempotent
    assert calls == ["a"] and hold.released
    await waiter
    hold.on_release(lambda: calls.append("b"))  # already released: called at once
    assert calls == ["a", "b"]
    await _await(hold)  # completes without waiting


async def _await(hold: Hold) -> None:
    await hold


counted = 0


def _count(data: bytes) -> None:
    global counted
    counted += len(data)


async def test_credit_waits_for_the_hold_and_is_granted_inside_release(echo: EchoServer) -> None:
    window = 64 * 1024
    async with await connect(echo.url, websocket_impl=WebsocketsImpl, window=window, max_window=window) as conn:
        ch = await conn.open_session(target=TARGET, user={"username": f"gen:{4 * window}"})
        holds: list[Hold] = []
        got = 0

        def listener(data: bytes) -> Hold:
            nonlocal got
            got += len(data)
            hold = Hold()
            holds.append(hold)
            return hold

        off = ch.on("data", listener)
        cc = conn.session.channel(ch.id).credit  # type: ignore[union-attr]
        # Nothing released: the server stops once the window is spent.
        await wait_for(lambda: got > 0 and cc.received == cc.granted, what="the window to be spent")
        spent = got
        assert spent <= window
        granted = cc.granted
        # Releasing grants synchronously: the flow frame is written inside release().
        while holds and cc.granted == granted:
            holds.pop(0).release()
        assert cc.granted > granted, "no grant inside release()"
        await wait_for(lambda: got > spent, what="the server to send again")
        # A plain listener from now on (consumed when it returns), the held chunks released.
        off()
        ch.on("data", lambda d: _count(d))
        for h in holds:
            h.release()
        holds.clear()
        await asyncio.wait_for(ch.wait_closed(), 20)
        got += counted
        assert got == 4 * window and ch.exit_status == 0


async def test_try_send_sends_now_or_says_no(echo: EchoServer) -> None:
    async with await connect(
        echo.url, websocket_impl=WebsocketsImpl, window=64 * 1024, max_window=64 * 1024, input_buffer_limit=64 * 1024
    ) as conn:
        ch = await conn.open_session(target=TARGET, user=ECHO)
        seen = bytearray()
        ch.on("data", seen.extend)
        assert ch.try_send("hello ") is True
        assert ch.try_send(b"world") is True
        await wait_for(lambda: bytes(seen) == b"hello world", what="the echo")
        # More than the input buffer takes: nothing is sent, send() must be used.
        cap = conn.session.input_capacity(ch.id)
        assert ch.try_send(b"x" * (cap + 1)) is False
        assert conn.session.input_capacity(ch.id) == cap
        await ch.close()
        with pytest.raises(ChannelError):
            ch.try_send(b"late")


async def test_concurrent_sends_keep_their_order_and_never_interleave(echo: EchoServer) -> None:
    """A send that must wait for input capacity is not overtaken by a later send,
    try_send or eof from other tasks: the echo shows each send's bytes together,
    in call order."""
    limit = 64 * 1024
    async with await connect(
        echo.url, websocket_impl=WebsocketsImpl, window=1 << 20, max_window=1 << 20, input_buffer_limit=limit
    ) as conn:
        ch = await conn.open_session(target=TARGET, user=ECHO)
        seen = bytearray()
        ch.on("data", seen.extend)
        big = b"a" * (8 * limit)  # waits for acknowledgements several times
        first = asyncio.ensure_future(ch.send(big))
        await asyncio.sleep(0)  # the first send is now waiting for capacity
        later = [asyncio.ensure_future(ch.send(bytes([c]) * 1000)) for c in b"BC"]
        # Acknowledgements free capacity before the waiting sends run again: a try_send
        # (or a send) in that moment must not slip in ahead of them.
        refused = 0
        while not first.done():
            if conn.session.input_capacity(ch.id) > 0 and not first.done():
                assert ch.try_send(b"T") is False
                refused += 1
            await asyncio.sleep(0)
        later.append(asyncio.ensure_future(ch.send(b"D" * 1000)))
        await asyncio.wait_for(asyncio.gather(first, *later), 30)
        await wait_for(lambda: len(seen) == len(big) + 3000, what="every byte echoed")
        assert bytes(seen) == big + b"B" * 1000 + b"C" * 1000 + b"D" * 1000
