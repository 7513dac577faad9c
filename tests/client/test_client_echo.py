"""The host client against the in-test echo server: API, errors, flow, profiles, resume."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random

import pytest
from client_util import TARGET, rss_bytes, wait_for
from echo_server import EchoServer, gen_sha256
from nimbus_websocket.core import CloseError, MemoryResumeStore, ServerConfig
from nimbus_websocket.core.aio.connection import ChannelError
from nimbus_websocket.node_runtime import (
    ChannelOpenError,
    ResumeOptions,
    RetryOptions,
    WebsocketsImpl,
    connect,
)

pytestmark = pytest.mark.timeout(60)

ECHO = {"username": "echo"}


async def test_connect_states_properties_and_close(echo: EchoServer) -> None:
    states: list[tuple[str, str]] = []
    diags: list[str] = []
    conn = await connect(
        echo.url,
        websocket_impl=WebsocketsImpl,
        heartbeat_interval=0.05,
        client_info={"app": "tests", "version": "1"},
        on={"statechange": lambda e: states.append((e.old, e.new)), "diagnostic": lambda d: diags.append(d.code)},
    )
    assert states == [("idle", "connecting"), ("connecting", "authenticating"), ("authenticating", "ready")]
    assert conn.state == "ready"
    assert conn.protocol == "nimbus.ssh.v1" and conn.profile == "nimbus.v1"
    assert conn.buffered_amount == 0
    assert "hello_sent" in diags and "hello_ok" in diags
    await wait_for(lambda: conn.rtt_ms is not None, what="a pong")
    assert conn.rtt_ms is not None and 0 <= conn.rtt_ms < 1000
    closes: list[object] = []
    conn.on("close", closes.append)
    await conn.close()
    assert conn.state == "closed" and conn.error is None and closes == [None]
    await wait_for(lambda: len(echo.registry) == 0, what="the server to end the session (close 1000)")
    assert echo.close_codes == [1000]
    assert await conn.wait_closed() is None


async def test_websocket_impl_is_required(echo: EchoServer) -> None:
    with pytest.raises(TypeError):
        await connect(echo.url)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        await connect(echo.url, websocket_impl=None)


async def test_echo_iteration_and_callbacks(echo: EchoServer) -> None:
    async with await connect(echo.url, websocket_impl=WebsocketsImpl) as conn:
        ch = await conn.open_session(target=TARGET, user=ECHO, term={"cols": 80, "rows": 24, "env": {"TERM": "xterm"}})
        assert ch.state == "open" and ch.id == 1
        await ch.send(b"hello ")
        await ch.send("world\n")
        got = bytearray()
        async for chunk in ch:
            got += chunk
            if got == b"hello world\n":
                break
        # callbacks: consumed when they return
        seen = bytearray()
        ch2 = await conn.open_session(target=TARGET, user=ECHO)
        unsubscribe = ch2.on("data", seen.extend)
        await ch2.send(b"x" * 100_000)
        await wait_for(lambda: len(seen) == 100_000, what="echo via callback")
        assert ch2.queued_bytes == 0
        unsubscribe()
        await ch2.close()
        assert ch2.state == "closed" and ch2.error is None


async def test_async_callback_defers_consumption(echo: EchoServer) -> None:
    async with await connect(echo.url, websocket_impl=WebsocketsImpl) as conn:
        ch = await conn.open_session(target=TARGET, user={"username": "gen:3000000"})
        got = hashlib.sha256()
        n = 0

        async def on_data(data: bytes) -> None:
            nonlocal n
            await asyncio.sleep(0)
            got.update(data)
            n += len(data)

        ch.on("data", on_data)
        assert await ch.wait_closed() == 0
        await wait_for(lambda: n == 3_000_000, what="all async callbacks")
        assert got.hexdigest() == gen_sha256(3_000_000)


async def test_exit_stderr_and_wait_closed(echo: EchoServer) -> None:
    async with await connect(echo.url, websocket_impl=WebsocketsImpl) as conn:
        ch = await conn.open_session(target=TARGET, user={"username": "stderr:oops"})
        errs: list[bytes] = []
        exits: list[tuple[int | None, str | None]] = []
        ch.on("stderr", errs.append)
        ch.on("exit", lambda e: exits.append((e.code, e.sig)))
        assert await ch.wait_closed() == 3
        assert errs == [b"oops"] and exits == [(3, None)]
        assert ch.exit_status == 3 and ch.exit_signal is None
        with pytest.raises(ChannelError):
            await ch.send(b"late")


async def test_iter_output_yields_both_streams(echo: EchoServer) -> None:
    async with await connect(echo.url, websocket_impl=WebsocketsImpl) as conn:
        ch = await conn.open_session(target=TARGET, user={"username": "stderr:E"})
        items = [item async for item in ch.iter_output()]
        assert items == [("stderr", b"E")]
        assert ch.exit_status == 3


async def test_resize_and_signal(echo: EchoServer) -> None:
    async with await connect(echo.url, websocket_impl=WebsocketsImpl) as conn:
        ch = await conn.open_session(target=TARGET, user=ECHO, term={"cols": 80, "rows": 24})
        ch.resize(100, 40)
        await wait_for(lambda: (ch.id, 100, 40) in echo.resizes, what="the resize")
        await ch.signal("int")
        assert await ch.wait_closed() is None
        assert ch.exit_signal == "INT" and echo.signals == [(ch.id, "INT")]


async def test_open_err_raises_channel_open_error(echo: EchoServer) -> None:
    async with await connect(echo.url, websocket_impl=WebsocketsImpl) as conn:
        with pytest.raises(ChannelOpenError) as ei:
            await conn.open_session(target=TARGET, user={"username": "fail"})
        assert ei.value.code == "TARGET_UNREACHABLE"
        ch = await conn.open_session(target=TARGET, user=ECHO)  # the connection is fine
        assert ch.state == "open"


async def test_bearer_auth_ok_and_refused(make_echo) -> None:  # type: ignore[no-untyped-def]
    srv = await make_echo(tokens={"s3cret"})
    calls = 0

    async def good() -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"scheme": "bearer", "token": "s3cret"}

    conn = await connect(srv.url, websocket_impl=WebsocketsImpl, auth=good)
    assert conn.state == "ready" and calls == 1
    await conn.close()
    errors: list[CloseError] = []
    with pytest.raises(CloseError) as ei:
        await connect(
            srv.url,
            websocket_impl=WebsocketsImpl,
            auth=lambda: {"scheme": "bearer", "token": "nope"},
            on={"error": errors.append},
        )
    assert ei.value.code == "AUTH_FAILED" and ei.value.app_code == 4003 and ei.value.ws_code == 4003
    assert errors == [ei.value]

    def broken() -> dict[str, str]:
        raise RuntimeError("vault down")

    with pytest.raises(CloseError) as ei2:
        await connect(srv.url, websocket_impl=WebsocketsImpl, auth=broken)
    assert ei2.value.code == "AUTH_PROVIDER_FAILED"


async def test_connect_refused_is_a_close_error() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(CloseError) as ei:
        await connect(f"ws://127.0.0.1:{port}/ws/ssh", websocket_impl=WebsocketsImpl)
    assert ei.value.code == "CONNECT_FAILED" and ei.value.ws_code == 1006


async def test_handshake_timeout(make_proxy, echo: EchoServer) -> None:  # type: ignore[no-untyped-def]
    proxy = await make_proxy(echo.port)
    proxy.stall(True)  # TCP connects, nothing else ever arrives
    with pytest.raises(CloseError) as ei:
        await connect(f"ws://127.0.0.1:{proxy.port}/ws/ssh", websocket_impl=WebsocketsImpl, handshake_timeout=0.3)
    assert ei.value.code == "TIMEOUT"
    await proxy.stop()


@pytest.mark.parametrize("profile", ["nimbus.v1", "json-base64.v1", "lenpfx.v1"])
async def test_profiles_round_trip(echo: EchoServer, profile: str) -> None:
    async with await connect(echo.url, websocket_impl=WebsocketsImpl, profile=profile) as conn:
        assert conn.profile == profile
        ch = await conn.open_session(target=TARGET, user=ECHO)
        data = random.Random(1).randbytes(3 << 20)
        sender = asyncio.create_task(ch.send(data))
        got = bytearray()
        async for chunk in ch:
            got += chunk
            if len(got) >= len(data):
                break
        await sender
        assert bytes(got) == data


@pytest.mark.parametrize("deflate", [False, True])
async def test_permessage_deflate(make_echo, deflate: bool) -> None:  # type: ignore[no-untyped-def]
    srv = await make_echo(compression="deflate")
    sockets: list[WebsocketsImpl] = []

    def factory(url: str, protocols: list[str]) -> WebsocketsImpl:
        ws = WebsocketsImpl(url, protocols, per_message_deflate={"window_bits": 10} if deflate else False)
        sockets.append(ws)
        return ws

    async with await connect(srv.url, websocket_impl=factory) as conn:
        ch = await conn.open_session(target=TARGET, user=ECHO)
        payload = b"compressible " * 100_000
        await ch.send(payload)
        got = bytearray()
        async for chunk in ch:
            got += chunk
            if len(got) >= len(payload):
                break
        assert bytes(got) == payload
        ext = sockets[0].extensions
        if deflate:
            assert "permessage-deflate" in ext and "no_context_takeover" in ext
        else:
            assert ext == ""
    with pytest.raises(ValueError):
        await connect(srv.url, websocket_impl=WebsocketsImpl, per_message_deflate={"window_bits": 15})


async def test_deflate_option_via_connect(make_echo) -> None:  # type: ignore[no-untyped-def]
    srv = await make_echo(compression="deflate")
    async with await connect(srv.url, websocket_impl=WebsocketsImpl, per_message_deflate=True) as conn:
        assert "permessage-deflate" in conn._ws.extensions  # type: ignore[union-attr]
        ch = await conn.open_session(target=TARGET, user={"username": "gen:1000000"})
        assert len(await ch.read()) == 1_000_000


async def test_large_stream_sha256_and_bounded_memory(echo: EchoServer) -> None:
    n = 100 * 1024 * 1024
    async with await connect(echo.url, websocket_impl=WebsocketsImpl) as conn:
        ch = await conn.open_session(target=TARGET, user={"username": f"gen:{n}"})
        base = rss_bytes()
        peak = base
        h = hashlib.sha256()
        got = 0
        async for chunk in ch:
            h.update(chunk)
            got += len(chunk)
            if got % (4 << 20) < len(chunk):
                peak = max(peak, rss_bytes())
        peak = max(peak, rss_bytes())
        assert got == n and ch.exit_status == 0
        assert h.hexdigest() == gen_sha256(n)
        assert peak - base < 32 * 1024 * 1024, f"RSS grew by {(peak - base) >> 20} MiB"


async def test_consumer_that_stops_reading_stops_the_server_within_one_window(echo: EchoServer) -> None:
    window, max_window = 256 * 1024, 2 * 1024 * 1024
    async with await connect(echo.url, websocket_impl=WebsocketsImpl, window=window, max_window=max_window) as conn:
        ch = await conn.open_session(target=TARGET, user={"username": f"gen:{10**12}"})
        it = ch.__aiter__()
        consumed = 0
        while consumed < 5 << 20:
            consumed += len(await it.__anext__())
        be = echo.backend(ch.id)
        s = be.session

        # Stop reading: the server comes to a halt once every grant is spent and has arrived.
        cc = conn.session.channel(ch.id).credit  # type: ignore[union-attr]
        await wait_for(
            lambda: s.read_budget(ch.id) == 0 and cc.received == cc.granted == be.produced,
            what="server halt with nothing in flight",
        )
        produced = be.produced
        assert ch.queued_bytes == produced - consumed
        assert produced - consumed <= max_window, (produced - consumed, max_window)
        assert ch.queued_bytes <= max_window
        # A sign of life over the same socket (ping/pong) shows the server is not just slow.
        conn.ping()
        await wait_for(lambda: conn.rtt_ms is not None, what="pong")
        assert be.produced == produced
        # Reading again restarts it: once consumption crosses the client's grant
        # threshold (a fraction of the window, whatever size the chunks are),
        # a grant goes out and the server reads again.  The queue holds up to a
        # window, so reading it can always cross the threshold.
        granted = cc.granted
        while cc.granted == granted:
            assert ch.queued_bytes > 0, "queue drained without a grant"
            await asyncio.wait_for(it.__anext__(), 10)
        await wait_for(lambda: be.produced > produced, what="the server to resume")


async def test_send_waits_while_the_echo_is_not_read(echo: EchoServer) -> None:
    async with await connect(echo.url, websocket_impl=WebsocketsImpl, window=64 * 1024, max_window=64 * 1024) as conn:
        ch = await conn.open_session(target=TARGET, user=ECHO)
        data = random.Random(2).randbytes(8 << 20)
        sender = asyncio.create_task(ch.send(data))
        # Nobody reads: the echo stalls at one window, input acks stop, the input buffer fills.
        await wait_for(
            lambda: conn.session.input_capacity(ch.id) == 0 and echo.backend(ch.id).pending,
            what="the input buffer to fill",
        )
        assert not sender.done()
        got = bytearray()
        async for chunk in ch:
            got += chunk
            if len(got) >= len(data):
                break
        await asyncio.wait_for(sender, 10)
        assert bytes(got) == data


async def test_transport_backpressure_pauses_credit(make_echo, make_proxy) -> None:  # type: ignore[no-untyped-def]
    # Sends go straight to the socket, as in a browser: bufferedAmount grows
    # only once the kernel's buffers behind the stalled proxy are full, so the
    # input must exceed them -- without caps.ack (nothing else bounds input)
    # and with a server that buffers that much input.
    echo = await make_echo(config=ServerConfig(max_input_buffer=64 << 20))
    proxy = await make_proxy(echo.port)
    policies: list[tuple[str, str | None]] = []
    conn = await connect(
        f"ws://127.0.0.1:{proxy.port}/ws/ssh",
        websocket_impl=WebsocketsImpl,
        high_water_mark=256 * 1024,
        low_water_mark=64 * 1024,
        ack=False,
        heartbeat_interval=30,
        on={"policy": lambda p: policies.append((p.kind, p.reason))},
    )
    ch = await conn.open_session(target=TARGET, user=ECHO)
    proxy.stall(True)
    data = random.Random(3).randbytes(24 << 20)
    sender = asyncio.create_task(ch.send(data))
    await wait_for(lambda: ("flow_pause", "transport") in policies, what="flow_pause(transport)")
    proxy.stall(False)
    got = bytearray()
    async for chunk in ch:
        got += chunk
        if len(got) >= len(data):
            break
    await asyncio.wait_for(sender, 20)
    assert bytes(got) == data
    pause = policies.index(("flow_pause", "transport"))
    assert ("flow_resume", "transport") in policies[pause:]
    assert conn.pause_reasons == frozenset()
    await conn.close()


async def test_resume_across_connections_with_a_shared_store(echo: EchoServer) -> None:
    store = MemoryResumeStore()
    conn1 = await connect(echo.url, websocket_impl=WebsocketsImpl, resume=ResumeOptions(storage=store))
    ch1 = await conn1.open_session(target=TARGET, user=ECHO)
    await ch1.send(b"before\n")
    it = ch1.__aiter__()
    assert await it.__anext__() == b"before\n"
    await conn1.close(code=4000, reason="page reload")  # not 1000: the session stays
    assert store.load() is not None
    announced = []
    conn2 = await connect(
        echo.url, websocket_impl=WebsocketsImpl, resume=ResumeOptions(storage=store), on={"channel": announced.append}
    )
    assert [c.id for c in conn2.resumed_channels] == [ch1.id] and announced == conn2.resumed_channels
    ch2 = conn2.resumed_channels[0]
    assert ch2.resumed and ch2.state == "open"
    await ch2.send(b"after\n")
    assert await ch2.__aiter__().__anext__() == b"after\n"
    await conn2.close()
    assert store.load() is None


async def test_rejected_resume_is_a_typed_error(echo: EchoServer) -> None:
    store = MemoryResumeStore()
    store.save(
        {"v": 1, "token": "0123456789abcdef.AAAA", "expiresAt": 4_000_000_000_000, "ack": True, "profile": "nimbus.v1", "channels": []}
    )
    with pytest.raises(CloseError) as ei:
        await connect(echo.url, websocket_impl=WebsocketsImpl, resume=ResumeOptions(storage=store))
    assert ei.value.code == "RESUME_FAILED" and ei.value.app_code == 4011
    assert store.load() is None  # cleared: a cold reconnect is the application's call


async def test_retries_exhausted_fails_pending_work(make_echo) -> None:  # type: ignore[no-untyped-def]
    srv = await make_echo()
    states: list[str] = []
    conn = await connect(
        srv.url,
        websocket_impl=WebsocketsImpl,
        retry=RetryOptions(base_ms=10, max_retries=3),
        on={"statechange": lambda e: states.append(e.new)},
    )
    ch = await conn.open_session(target=TARGET, user=ECHO)
    errors: list[BaseException] = []
    ch.on("error", errors.append)
    await srv.stop()  # gone for good: 1001, then refused
    with pytest.raises(CloseError) as ei:
        await asyncio.wait_for(ch.read(), 10)
    assert ei.value.code == "RETRIES_EXHAUSTED"
    assert conn.state == "closed" and conn.error is ei.value and errors == [ei.value]
    assert "reconnecting" in states and states[-1] == "closed"
    with pytest.raises(CloseError):
        await ch.send(b"x")
    with pytest.raises(CloseError):
        await conn.open_session(target=TARGET, user=ECHO)


async def test_a_failing_listener_is_logged_not_raised(echo: EchoServer, caplog: pytest.LogCaptureFixture) -> None:
    def bad(_arg: object) -> None:
        raise RuntimeError("listener bug")

    with caplog.at_level(logging.ERROR, logger="nimbus_websocket.client"):
        async with await connect(echo.url, websocket_impl=WebsocketsImpl, on={"diagnostic": bad}) as conn:
            ch = await conn.open_session(target=TARGET, user=ECHO)
            ch.on("data", bad)
            await ch.send(b"ping")
            await wait_for(lambda: conn.session.channel(ch.id).credit.consumed == 4, what="consumption")  # type: ignore[union-attr]
    assert any("listener bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)


async def test_server_side_abort_reconnects_and_resumes(echo: EchoServer) -> None:
    states: list[str] = []
    conn = await connect(
        echo.url,
        websocket_impl=WebsocketsImpl,
        retry=RetryOptions(base_ms=20),
        on={"statechange": lambda e: states.append(e.new)},
    )
    ch = await conn.open_session(target=TARGET, user=ECHO)
    resumed: list[object] = []
    ch.on("resumed", resumed.append)
    echo.abort_all()
    await wait_for(lambda: "reconnecting" in states and conn.state == "ready", what="reconnect")
    assert states[-3:] == ["reconnecting", "authenticating", "ready"] and resumed == [ch]
    await ch.send(b"still here")
    assert await ch.__aiter__().__anext__() == b"still here"
    await conn.close()


async def test_channel_limit_and_server_config(make_echo) -> None:  # type: ignore[no-untyped-def]
    srv = await make_echo(config=ServerConfig(max_channels=1))
    conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
    await conn.open_session(target=TARGET, user=ECHO)
    with pytest.raises(CloseError) as ei:
        await conn.open_session(target=TARGET, user=ECHO)
    assert ei.value.code == "CHANNEL_LIMIT" and conn.state == "closed"
