"""Load: many streaming connections (fairness, server memory), many idle ones (cost), slow lorises.

The server runs in a subprocess (``python -m nimbus_websocket serve``) so its
resident memory and CPU time are read from ``/proc`` apart from this (client)
process.  Figures are reported with :func:`rel_util.figure`.

Throughput and idle cost are measured over fixed observation windows (the
point of a window is to measure a rate, not to wait for something).
"""

from __future__ import annotations

import asyncio
import statistics
import struct
import time
from typing import Any

import pytest
from nimbus_websocket.core import Auth, Hello, HelloCaps, OpenOk, Target, User, get_profile
from nimbus_websocket.core.messages import Open
from nimbus_websocket.node_runtime import RetryOptions, WebsocketsImpl, connect
from nimbus_websocket.node_runtime.conformance.wire import Wire
from rel_util import (
    OP_BINARY,
    OP_CLOSE,
    TARGET,
    USER,
    RawWs,
    ServerProcess,
    figure,
    raise_nofile,
    wait_for,
    ws_frame,
)

pytestmark = pytest.mark.timeout(600)

MIB = 1 << 20
#: n clients from loopback (one address prefix): lift the per-client and connection bounds.
_UNBOUNDED = ("--max-sessions-per-client", "0", "--max-connections-per-ip", "0", "--max-connections", "0")
P = get_profile("nimbus.v1")


async def _connect_all(url: str, n: int, parallel: int = 32, **kw: Any) -> list[Any]:
    sem = asyncio.Semaphore(parallel)

    async def one() -> Any:
        async with sem:
            return await connect(url, websocket_impl=WebsocketsImpl, retry=RetryOptions(max_retries=0), **kw)

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def _close_all(conns: list[Any]) -> None:
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


# ------------------------------------------------------------------ streaming


async def _streaming(n: int, window: float) -> dict[str, Any]:
    raise_nofile(4 * n + 256)
    async with ServerProcess([*_UNBOUNDED, "--max-sessions", str(2 * n)]) as sp:
        await asyncio.sleep(0)
        base_rss = sp.rss()
        conns = await _connect_all(sp.url, n)
        counts = [0] * n
        errors: list[BaseException] = []
        try:
            chans = await asyncio.gather(
                *(c.open_session(TARGET, USER, None, command="exec head -c 100000000000 /dev/zero") for c in conns)
            )

            async def reader(i: int, ch: Any) -> None:
                try:
                    async for chunk in ch:
                        counts[i] += len(chunk)
                except Exception as exc:  # reported below
                    errors.append(exc)

            readers = [asyncio.create_task(reader(i, ch)) for i, ch in enumerate(chans)]
            # warm-up: every connection is streaming
            await wait_for(lambda: min(counts) > 512 * 1024 or errors, 60, "every connection streaming")
            assert not errors, errors[:3]
            start = list(counts)
            t0 = time.monotonic()
            peak = sp.rss()
            while time.monotonic() - t0 < window:  # the observation window, sampling the server's RSS
                await asyncio.sleep(0.1)
                peak = max(peak, sp.rss())
            elapsed = time.monotonic() - t0
            got = [counts[i] - start[i] for i in range(n)]
            assert not errors, errors[:3]
            assert all(c.error is None and c.state == "ready" for c in conns)
            for r in readers:
                r.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        finally:
            await _close_all(conns)
    fair = sum(got) / n
    jain = sum(got) ** 2 / (n * sum(g * g for g in got))
    return {
        "connections": n,
        "window_s": round(elapsed, 1),
        "total_MBps": round(sum(got) / elapsed / 1e6, 1),
        "per_conn_MBps_min": round(min(got) / elapsed / 1e6, 2),
        "per_conn_MBps_median": round(statistics.median(got) / elapsed / 1e6, 2),
        "per_conn_MBps_max": round(max(got) / elapsed / 1e6, 2),
        "min_over_fair_share": round(min(got) / fair, 2),
        "jain_index": round(jain, 3),
        "server_rss_base_MiB": round(base_rss / MIB, 1),
        "server_rss_peak_MiB": round(peak / MIB, 1),
        "server_rss_per_conn_KiB": round((peak - base_rss) / n / 1024, 1),
    }


def _check_streaming(fig: dict[str, Any]) -> None:
    assert fig["min_over_fair_share"] >= 0.5, fig
    # per connection: one channel's credit window (256 KiB, adaptive up to 2 MiB) plus one 64 KiB
    # read and the socket buffers -- far below this bound, which catches anything unbounded
    assert fig["server_rss_per_conn_KiB"] < 3 * 1024, fig


async def test_50_streaming_connections_fair_and_bounded() -> None:
    fig = await _streaming(50, window=4.0)
    figure("load_streaming", run="fast", **fig)
    _check_streaming(fig)


@pytest.mark.stress
async def test_stress_200_streaming_connections_fair_and_bounded() -> None:
    fig = await _streaming(200, window=10.0)
    figure("load_streaming", run="stress", **fig)
    _check_streaming(fig)


# ------------------------------------------------------------------ idle


async def _idle(n: int, window: float, heartbeat: float) -> dict[str, Any]:
    raise_nofile(4 * n + 256)
    async with ServerProcess([*_UNBOUNDED, "--max-sessions", str(2 * n)]) as sp:
        base_rss = sp.rss()
        t_connect = time.monotonic()
        conns = await _connect_all(sp.url, n, heartbeat_interval=heartbeat)
        connect_s = time.monotonic() - t_connect
        try:
            await wait_for(lambda: all(c.rtt_ms is not None for c in conns), 3 * heartbeat + 10, "a heartbeat on every connection")
            rss = sp.rss()
            cpu0 = sp.cpu()
            t0 = time.monotonic()
            while time.monotonic() - t0 < window:  # observation window: idle, heartbeats only
                await asyncio.sleep(0.25)
                rss = max(rss, sp.rss())
            elapsed = time.monotonic() - t0
            cpu = sp.cpu() - cpu0
            assert all(c.state == "ready" and c.error is None for c in conns)
            rtts = sorted(c.rtt_ms for c in conns)
        finally:
            await _close_all(conns)
    return {
        "connections": n,
        "heartbeat_s": heartbeat,
        "window_s": round(elapsed, 1),
        "connect_all_s": round(connect_s, 1),
        "server_cpu_percent": round(100 * cpu / elapsed, 2),
        "server_cpu_us_per_conn_per_s": round(1e6 * cpu / elapsed / n, 1),
        "server_rss_per_conn_KiB": round((rss - base_rss) / n / 1024, 1),
        "rtt_ms_p50": round(rtts[len(rtts) // 2], 2),
        "rtt_ms_max": round(rtts[-1], 2),
    }


def _check_idle(fig: dict[str, Any]) -> None:
    assert fig["server_rss_per_conn_KiB"] < 256, fig
    assert fig["server_cpu_percent"] < 50, fig


async def test_200_idle_connections_cost() -> None:
    fig = await _idle(200, window=4.0, heartbeat=1.0)
    figure("load_idle", run="fast", **fig)
    _check_idle(fig)


@pytest.mark.stress
async def test_stress_1000_idle_connections_cost() -> None:
    fig = await _idle(1000, window=20.0, heartbeat=2.0)
    figure("load_idle", run="stress", **fig)
    _check_idle(fig)


# ------------------------------------------------------------------ slow lorises


async def _healthy_stream(url: str, nbytes: int) -> float:
    """Stream ``nbytes`` through a fresh connection; returns MB/s."""
    conn = await connect(url, websocket_impl=WebsocketsImpl)
    try:
        ch = await conn.open_session(TARGET, USER, None, command=f"exec head -c {nbytes} /dev/zero")
        t0 = time.monotonic()
        got = 0
        async for chunk in ch:
            got += len(chunk)
        assert got == nbytes
        return nbytes / (time.monotonic() - t0) / 1e6
    finally:
        await conn.close()


async def _echo_rtts(url: str, rounds: int) -> list[float]:
    conn = await connect(url, websocket_impl=WebsocketsImpl)
    try:
        ch = await conn.open_session(TARGET, USER, None, command="exec cat")
        it = ch.__aiter__()
        out = []
        for i in range(rounds):
            msg = f"ping {i}\n".encode()
            t0 = time.monotonic()
            await ch.send(msg)
            got = b""
            while len(got) < len(msg):
                got += await asyncio.wait_for(it.__anext__(), 10)
            assert got == msg
            out.append(time.monotonic() - t0)
        return out
    finally:
        await conn.close()


async def _stingy(url: str, command: str, credit: int, lorises: list[Wire]) -> None:
    """A client that opens a noisy channel, grants ``credit`` once and then never reads its socket."""
    w = await Wire.open(url, P, timeout=10)
    lorises.append(w)
    await w.hello(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v1", True)))
    await w.send(Open(1, Target("127.0.0.1", 22), User("loris"), None, command))
    await w.expect_ctl(OpenOk, 1)
    if credit:
        await w.grant(1, credit)


async def _byte_trickler(port: int, lorises: list[RawWs]) -> None:
    """Upgrade, hello, then announce a 1 MiB binary frame and send its first bytes only."""
    r = await RawWs.connect(port)
    lorises.append(r)
    assert await r.handshake(RawWs.upgrade_request(port)) == 101
    await r.send(ws_frame(1, b'{"t":"hello","proto":1,"auth":{"scheme":"none"}}'))
    await r.read_frame()
    frame = ws_frame(OP_BINARY, b"\x01\0\0\0\x01" + bytes(MIB - 64))
    await r.send(frame[:1000])  # the rest would follow a byte at a time


async def _header_trickler(port: int, lorises: list[RawWs]) -> None:
    """Send the first bytes of an upgrade request and stop (headers a byte at a time)."""
    r = await RawWs.connect(port)
    lorises.append(r)
    req = RawWs.upgrade_request(port)
    for b in req[:40]:
        await r.send(bytes([b]))


async def test_slow_lorises_hold_bounded_memory_and_block_nobody() -> None:
    """20 zero-credit readers, 5 never-reading 4 MiB-credit clients, 20 frame tricklers, 20 header tricklers."""
    raise_nofile(2048)
    # 67 connections from loopback, one address prefix: above the default 64 per address.
    async with ServerProcess(["--max-connections-per-ip", "256"]) as sp:
        solo = await _healthy_stream(sp.url, 64 * MIB)
        solo_rtt = await _echo_rtts(sp.url, 20)
        base = sp.rss()
        wires: list[Wire] = []
        raws: list[RawWs] = []
        try:
            await asyncio.gather(*(_stingy(sp.url, "exec cat /dev/zero", 0, wires) for _ in range(20)))
            await asyncio.gather(*(_stingy(sp.url, "exec cat /dev/zero", 4 * MIB, wires) for _ in range(5)))
            await asyncio.gather(*(_byte_trickler(sp.port, raws) for _ in range(20)))
            await asyncio.gather(*(_header_trickler(sp.port, raws) for _ in range(20)))
            # the never-reading clients fill their credit, then the server must stop reading for them
            peak = sp.rss()
            loaded = await _healthy_stream(sp.url, 64 * MIB)
            rtts = await _echo_rtts(sp.url, 20)
            peak = max(peak, sp.rss())
            for r in raws[:20]:  # tricklers keep trickling: one more byte each
                await r.send(b"\0")
            assert all(w.close_code is None for w in wires)  # they are slow, not misbehaving
        finally:
            for w in wires:
                w.abort()
            for r in raws:
                r.abort()
    grown = peak - base
    fig = {
        "zero_credit": 20, "never_reading_4MiB_credit": 5, "frame_tricklers": 20, "header_tricklers": 20,
        "server_rss_growth_MiB": round(grown / MIB, 1),
        "healthy_stream_MBps_solo": round(solo, 1), "healthy_stream_MBps_with_lorises": round(loaded, 1),
        "echo_rtt_ms_p50_solo": round(1000 * statistics.median(solo_rtt), 2),
        "echo_rtt_ms_p50_with_lorises": round(1000 * statistics.median(rtts), 2),
        "echo_rtt_ms_max_with_lorises": round(1000 * max(rtts), 2),
    }
    figure("load_slow_loris", **fig)
    # Bounds: zero-credit -> at most one 64 KiB read each; never-reading -> their 4 MiB credit each;
    # tricklers -> their partial frame/request (websockets buffers); plus per-connection overhead.
    assert grown < 20 * 256 * 1024 + 5 * 5 * MIB + 40 * 1.2 * MIB, fig
    # Nobody is starved.  A floor, not a speed claim (bench/ has those): the other xdist
    # worker's Chromium shares the 2 cores, and loaded/solo was seen as low as 0.19 from that
    # alone; a server busy on the lorises' backends would fall far below 5 %.
    assert loaded > 0.05 * solo, fig
    assert max(rtts) < 1.0, fig


async def test_frame_trickler_is_closed_by_the_idle_timeout(make_server: Any) -> None:
    """A client that never completes a message cannot hold its connection past the idle timeout (4012)."""
    from nimbus_websocket.core import ServerConfig

    srv = await make_server(config=ServerConfig(idle_timeout=1.0))
    lorises: list[RawWs] = []
    await _byte_trickler(srv.port, lorises)
    r = lorises[0]
    t0 = time.monotonic()
    code = None
    for _ in range(60):  # bounded: a byte every 0.1 s, far slower than 1 MiB would need
        try:
            await r.send(b"\0")
            op, payload = await r.read_frame(0.1)
        except TimeoutError:
            continue
        except (asyncio.IncompleteReadError, ConnectionError):
            code = 1006
            break
        if op == OP_CLOSE:
            code = struct.unpack(">H", payload[:2])[0]
            break
    r.abort()
    assert code == 4012, code
    assert time.monotonic() - t0 < 5.0  # the 1 s idle timeout, plus headroom for a loaded machine
