"""PTY stream throughput and keystroke echo: reference server vs a bare bridge.

Prints, from one run on this machine:

* (0) **raw PTY read** -- no network, no asyncio: this process reads a PTY
  running ``cat FILE`` (select + 64 KiB reads) -- the ceiling;
* (a) **baseline bridge** -- no protocol: a PTY running ``cat FILE`` is read
  (same 64 KiB coalescing as the server) and each read is sent as one binary
  WebSocket message by a bare ``websockets`` server to a bare client;
* (b) **nimbus** -- the reference server, local PTY backend, to the CPython
  client (``connect()`` + ``async for``), same file, same PTY;

for ``cat`` of a file (default 200 MB) and keystroke echo p50/p99 (one byte
typed into ``cat`` on a PTY, echoed by the terminal driver).  Targets:
throughput >= 0.95x the bridge; echo p50 <= 1.3x the bridge's.

    python bench/stream.py [--mb 200] [--runs 3] [--echo 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, median_range, percentile, scratch_dir, spawn_pty, table
from nimbus_websocket.node_runtime import WebsocketsImpl, connect
from nimbus_websocket.node_runtime.server import Server, ServerOptions
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection, serve

TARGET = {"host": "localhost", "port": 22}
USER = {"username": "bench"}
TERM = {"cols": 80, "rows": 24, "env": {"TERM": "xterm"}}


# ----------------------------------------------------------------- raw PTY
def raw_pty_read(path: str, size: int, timeout: float = 600.0) -> float:
    """MB/s of reading a PTY running ``cat path`` (spawn to EOF), no network."""
    t0 = time.perf_counter()
    proc, fd = spawn_pty(["cat", path])
    n = 0
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 1.0)
            if not r:
                continue
            try:
                d = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:  # EIO: cat exited and the slave side is closed
                break
            if not d:
                break
            n += len(d)
        dt = time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()
        os.close(fd)
    assert n >= size, (n, size)
    return size / dt / 1e6


# ----------------------------------------------------------------- baseline
class Bridge:
    """PTY -> websockets -> client, nothing else."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.server = None

    async def handler(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        proc, fd = spawn_pty(self.argv)
        # At most 4 reads in flight, like a bounded window; reading stops when full.
        q: asyncio.Queue[bytes | None] = asyncio.Queue()
        reading = True
        eof = False

        def readable() -> None:
            nonlocal reading, eof
            chunks, got = [], 0
            while got < 65536:
                try:
                    d = os.read(fd, 65536 - got)
                except BlockingIOError:
                    break
                except OSError:
                    d = b""
                if not d:
                    loop.remove_reader(fd)
                    reading, eof = False, True
                    if chunks:
                        q.put_nowait(b"".join(chunks))
                    q.put_nowait(None)
                    return
                chunks.append(d)
                got += len(d)
            if chunks:
                q.put_nowait(b"".join(chunks))
                if q.qsize() >= 4:
                    loop.remove_reader(fd)
                    reading = False

        loop.add_reader(fd, readable)

        async def pump_in() -> None:
            async for msg in ws:
                os.write(fd, msg if isinstance(msg, bytes) else msg.encode())
            q.put_nowait(None)  # the client left

        t = asyncio.create_task(pump_in())
        try:
            while (item := await q.get()) is not None:
                await ws.send(item)
                if not reading and not eof and q.qsize() < 4:
                    reading = True
                    loop.add_reader(fd, readable)
            await ws.close()
        finally:
            t.cancel()
            with contextlib.suppress(OSError):
                loop.remove_reader(fd)
            proc.kill()
            proc.wait()
            os.close(fd)

    async def __aenter__(self) -> str:
        self.server = await serve(self.handler, "127.0.0.1", 0, compression=None, max_size=1 << 20, ping_interval=None)
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/"

    async def __aexit__(self, *a: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def bridge_stream(path: str, size: int) -> float:
    async with Bridge(["cat", path]) as url:
        t0 = time.perf_counter()
        n = 0
        async with ws_connect(url, compression=None, max_size=1 << 20) as ws:
            async for msg in ws:
                n += len(msg)
        dt = time.perf_counter() - t0
    assert n >= size, (n, size)
    return size / dt / 1e6


async def bridge_echo(samples: int) -> list[float]:
    async with Bridge(["cat"]) as url, ws_connect(url, compression=None) as ws:
        out = []
        for i in range(samples):
            b = bytes([97 + i % 26])
            t0 = time.perf_counter()
            await ws.send(b)
            while b not in await ws.recv():
                pass
            out.append(time.perf_counter() - t0)
        return out


# -------------------------------------------------------------------- nimbus
async def nimbus_stream(path: str, size: int) -> float:
    srv = Server(ServerOptions(port=0, pty_command=f"exec cat {path}"))
    await srv.start()
    try:
        t0 = time.perf_counter()
        conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
        ch = await conn.open_session(target=TARGET, user=USER, term=TERM)
        n = 0
        async for chunk in ch:
            n += len(chunk)
        dt = time.perf_counter() - t0
        await conn.close()
    finally:
        await srv.stop()
    assert n >= size, (n, size)
    return size / dt / 1e6


async def nimbus_echo(samples: int) -> list[float]:
    srv = Server(ServerOptions(port=0, pty_command="exec cat"))
    await srv.start()
    try:
        conn = await connect(srv.url, websocket_impl=WebsocketsImpl)
        ch = await conn.open_session(target=TARGET, user=USER, term=TERM)
        it = ch.__aiter__()
        out = []
        for i in range(samples):
            b = bytes([97 + i % 26])
            t0 = time.perf_counter()
            await ch.send(b)
            while b not in await it.__anext__():
                pass
            out.append(time.perf_counter() - t0)
        await conn.close()
        return out
    finally:
        await srv.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--echo", type=int, default=300)
    args = ap.parse_args()
    size = args.mb * 1_000_000
    with tempfile.NamedTemporaryFile(prefix="nimbus-bench-", dir=scratch_dir()) as f:
        block = os.urandom(1 << 20)
        for _ in range(size // len(block) + 1):
            f.write(block)
        f.flush()
        raw, base, ours = [], [], []
        for _ in range(args.runs):  # interleaved, so drift hits both alike
            raw.append(raw_pty_read(f.name, size))
            base.append(await bridge_stream(f.name, size))
            ours.append(await nimbus_stream(f.name, size))
    be = await bridge_echo(args.echo)
    ne = await nimbus_echo(args.echo)
    bm, bmin, bmax = median_range(base)
    om, omin, omax = median_range(ours)
    rm, rmin, rmax = median_range(raw)
    print(f"# PTY stream and echo ({machine()}); cat of {args.mb} MB, {args.runs} runs, {args.echo} echoes")
    print(f"raw PTY read (no network): {rm:.1f} ({rmin:.1f}-{rmax:.1f}) MB/s")
    print(
        table(
            ["figure", "baseline bridge", "nimbus (server -> CPython client)", "ratio", "target", "met"],
            [
                [
                    "PTY cat MB/s (median, min-max)",
                    f"{bm:.1f} ({bmin:.1f}-{bmax:.1f})",
                    f"{om:.1f} ({omin:.1f}-{omax:.1f})",
                    f"{om / bm:.2f}x",
                    ">= 0.95x",
                    "yes" if om / bm >= 0.95 else "NO",
                ],
                [
                    "echo p50 ms",
                    f"{percentile(be, 50) * 1e3:.3f}",
                    f"{percentile(ne, 50) * 1e3:.3f}",
                    f"{percentile(ne, 50) / percentile(be, 50):.2f}x",
                    "<= 1.3x",
                    "yes" if percentile(ne, 50) / percentile(be, 50) <= 1.3 else "NO",
                ],
                [
                    "echo p99 ms",
                    f"{percentile(be, 99) * 1e3:.3f}",
                    f"{percentile(ne, 99) * 1e3:.3f}",
                    f"{percentile(ne, 99) / percentile(be, 99):.2f}x",
                    "-",
                    "-",
                ],
            ],
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
