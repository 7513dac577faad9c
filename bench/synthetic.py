"""Synthetic stream (no PTY, no process) and one-byte echo: raw ``websockets`` vs the protocol.

Everything runs in this one process on 127.0.0.1 (server and client share
one asyncio loop, as in ``bench/stream.py``):

* **raw websockets** -- a bare ``websockets`` server sends ``--mb`` MB as
  pre-built binary frames of ``--frame`` bytes to a bare ``websockets``
  client (no protocol, no flow control beyond TCP's);
* **nimbus, synthetic backend** -- the reference server with a
  ``backend_factory`` whose backend produces the same bytes from memory
  (one ``--frame``-sized chunk per event-loop turn while the session's
  read budget allows, like the PTY backend's reader), to the CPython
  client (``connect()`` + ``async for``); ``term=None``;
* **nimbus, pipes** -- the same with the built-in backend running
  ``head -c N /dev/zero`` on pipes (``term=None``, ``max_read`` = frame).

Echo: one byte, round trip, over raw ``websockets`` (an echo handler).

Timing runs from ``connect`` to the last byte.  Target (issue): nimbus
(synthetic backend) >= 0.6x raw websockets at 64 KiB frames.

    python bench/synthetic.py [--mb 200] [--frame 65536] [--runs 5] [--echo 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, median_range, percentile, table
from nimbus_websocket.core.server import ServerConfig
from nimbus_websocket.node_runtime import WebsocketsImpl, connect
from nimbus_websocket.node_runtime.server import Server, ServerOptions
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection, serve

TARGET = {"host": "localhost", "port": 22}
USER = {"username": "bench"}
TARGET_RATIO = 0.6


# ------------------------------------------------------------------ raw
async def raw_stream(total: int, frame: int) -> float:
    """MB/s of ``total`` bytes in ``frame``-byte binary messages, bare websockets both ends."""
    payload = bytes(frame)

    async def handler(ws: ServerConnection) -> None:
        sent = 0
        while sent < total:
            n = min(frame, total - sent)
            await ws.send(payload if n == frame else payload[:n])
            sent += n
        await ws.close()

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        t0 = time.perf_counter()
        n = 0
        async with ws_connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=None, ping_interval=None) as ws:
            async for msg in ws:
                n += len(msg)
        dt = time.perf_counter() - t0
    assert n == total, (n, total)
    return total / dt / 1e6


async def raw_echo(samples: int) -> list[float]:
    """Round trips (s) of one byte through a bare websockets echo handler."""

    async def handler(ws: ServerConnection) -> None:
        async for msg in ws:
            await ws.send(msg)

    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with ws_connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None) as ws:
            out = []
            for i in range(samples):
                b = bytes([97 + i % 26])
                t0 = time.perf_counter()
                await ws.send(b)
                await ws.recv()
                out.append(time.perf_counter() - t0)
            return out


# --------------------------------------------------------------- nimbus
class SyntheticBackend:
    """A backend with no process: ``total`` zero bytes in ``frame``-sized reads, credit permitting."""

    def __init__(self, sink: Any, total: int, frame: int) -> None:
        self.sink = sink
        self.left = total
        self.frame = frame
        self.chunk = bytes(frame)
        self.paused = True
        self.closed = False
        self.scheduled = False
        self.loop = asyncio.get_running_loop()

    async def start(self) -> None:
        pass

    def pause(self, paused: bool) -> None:
        self.paused = paused
        self._schedule()

    def _schedule(self) -> None:
        if not self.scheduled and not self.paused and not self.closed and self.left > 0:
            self.scheduled = True
            self.loop.call_soon(self._emit)

    def _emit(self) -> None:
        # One read per loop turn, like LocalProcessBackend's reader callback.
        self.scheduled = False
        if self.paused or self.closed:
            return
        n = min(self.frame, self.left, self.sink.read_budget())
        if n <= 0:
            return  # the core pauses us; pause(False) reschedules
        self.sink.output("stdout", self.chunk if n == self.frame else self.chunk[:n])
        self.left -= n
        if self.left == 0:
            self.sink.exited(0, None)
        else:
            self._schedule()

    def write(self, data: bytes) -> None:
        self.sink.input_written(len(data))

    def eof(self) -> None:
        pass

    def resize(self, cols: int, rows: int) -> None:
        pass

    def signal(self, sig: str) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        pass


async def _nimbus_receive(srv: Server, total: int, **client: Any) -> float:
    await srv.start()
    try:
        t0 = time.perf_counter()
        conn = await connect(srv.url, websocket_impl=WebsocketsImpl, **client)
        ch = await conn.open_session(target=TARGET, user=USER, term=None)
        n = 0
        async for chunk in ch:
            n += len(chunk)
        dt = time.perf_counter() - t0
        await conn.close()
    finally:
        await srv.stop()
    assert n == total, (n, total)
    return total / dt / 1e6


async def nimbus_synthetic(total: int, frame: int, **client: Any) -> float:
    """MB/s through the protocol from a process-less backend (reference server -> CPython client).

    ``client``: extra ``connect()`` keywords (e.g. ``window``, ``max_window``)."""
    opts = ServerOptions(
        port=0,
        config=ServerConfig(max_read=frame),
        backend_factory=lambda sink, _ev: SyntheticBackend(sink, total, frame),
    )
    return await _nimbus_receive(Server(opts), total, **client)


async def nimbus_pipes(total: int, frame: int) -> float:
    """MB/s through the protocol from ``head -c`` on pipes (reference server -> CPython client)."""
    opts = ServerOptions(port=0, pty_command=f"exec head -c {total} /dev/zero", config=ServerConfig(max_read=frame))
    return await _nimbus_receive(Server(opts), total)


# ------------------------------------------------------------------ CLI
async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200)
    ap.add_argument("--frame", type=int, default=65536)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--echo", type=int, default=300)
    args = ap.parse_args()
    total = int(args.mb * 1e6)
    res: dict[str, list[float]] = {"raw": [], "synthetic": [], "pipes": []}
    for _ in range(args.runs):  # interleaved
        res["raw"].append(await raw_stream(total, args.frame))
        res["synthetic"].append(await nimbus_synthetic(total, args.frame))
        res["pipes"].append(await nimbus_pipes(total, args.frame))
    echo = await raw_echo(args.echo)
    base = median_range(res["raw"])[0]
    rows = []
    for key, label in (("raw", "raw websockets"), ("synthetic", "nimbus, synthetic backend"), ("pipes", "nimbus, head -c on pipes")):
        m, lo, hi = median_range(res[key])
        rows.append([label, f"{m:.0f} ({lo:.0f}-{hi:.0f})", f"{m / base:.2f}x"])
    print(f"# synthetic stream, {args.mb:g} MB in {args.frame} B frames, {args.runs} runs ({machine()})")
    print(table(["stream", "MB/s median (min-max)", "x raw"], rows))
    ratio = median_range(res["synthetic"])[0] / base
    print(f"target: synthetic >= {TARGET_RATIO}x raw: {ratio:.2f}x {'met' if ratio >= TARGET_RATIO else 'MISSED'}")
    with contextlib.suppress(ZeroDivisionError):
        print(f"raw websockets echo: p50 {percentile(echo, 50) * 1e3:.3f} ms, p99 {percentile(echo, 99) * 1e3:.3f} ms")


if __name__ == "__main__":
    asyncio.run(main())
