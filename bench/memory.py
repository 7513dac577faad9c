"""Memory: server RSS per idle / streaming connection, client heap during a stream.

The server runs in a subprocess (this file with ``--serve KIND``); its RSS
is read from ``/proc/PID/status`` (``VmRSS``) by this process, which holds
the client connections.  Each figure has a baseline from a bare
``websockets`` server measured in the same run, interleaved:

* **idle**: after one warm-up connection (imports, first-use caches), open
  ``--idle`` connections (nimbus: ``connect()`` until ready, no channel;
  baseline: a bare ``websockets`` connection whose handler waits), wait
  until the server settles, ``(RSS_after - RSS_before) / N``.  Target
  (issue): <= 64 KiB per idle connection;
* **streaming**: ``--streams`` connections each receiving an endless stream
  (nimbus: a channel running ``cat /dev/zero`` on pipes; baseline: a bare
  ``websockets`` handler sending 64 KiB frames), all read by this process
  as fast as it can; peak RSS over ``--stream-seconds`` minus before, / N;
* **client heap**: a fresh client process (this file with ``--client``)
  receives ``--mb`` MB (nimbus: channel on ``cat /dev/zero``, 64 KiB reads;
  baseline: bare ``websockets`` client from the bare sender): peak
  ``tracemalloc`` (traced from before ``connect``), and, in a separate run
  without tracemalloc, peak RSS (``VmHWM``) minus RSS before ``connect``.

    python bench/memory.py [--runs 5] [--idle 200] [--streams 10] [--mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, median_range, table

HERE = Path(__file__).resolve()
TARGET = {"host": "localhost", "port": 22}
USER = {"username": "bench"}
FRAME = 65536
IDLE_TARGET_KIB = 64.0


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found for {pid}")


# ---------------------------------------------------------------- servers
#: Connections the reference server takes from one address in this bench (the idle figure
#: opens ``--idle`` of them, 200 by default, at once).
IDLE_CAP = 1100


async def serve(kind: str) -> None:
    """Run a server until SIGTERM; print ``PORT n`` once listening."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "nimbus":
        from nimbus_websocket.core import ServerConfig
        from nimbus_websocket.node_runtime.server import Server, ServerOptions

        # The per-address and per-client caps (every client here is 127.0.0.1, without a
        # token) raised by option to what the idle figure opens, plus a margin; nothing
        # else differs from the defaults.
        cap = IDLE_CAP
        cfg = ServerConfig(max_sessions=cap, max_sessions_per_principal=cap, max_sessions_per_peer=cap)
        srv = Server(ServerOptions(port=0, pty_command="exec cat /dev/zero", max_connections=cap,
                                   max_connections_per_ip=cap, config=cfg))
        await srv.start()
        port = int(srv.url.split(":")[2].split("/")[0])
        print(f"PORT {port}", flush=True)
        await asyncio.wait_for(stop.wait(), 3600)
        await srv.stop()
    else:
        from websockets.asyncio.server import ServerConnection
        from websockets.asyncio.server import serve as ws_serve

        payload = bytes(FRAME)

        async def handler(ws: ServerConnection) -> None:
            # /stream: endless 64 KiB frames; /stream?total=N: N bytes, then close.
            path, _, query = ws.request.path.partition("?")
            if path.startswith("/stream"):
                left = int(query.removeprefix("total=")) if query.startswith("total=") else -1
                with contextlib.suppress(Exception):
                    while left != 0:
                        n = FRAME if left < 0 else min(FRAME, left)
                        await ws.send(payload if n == FRAME else payload[:n])
                        left = left - n if left > 0 else left
                    await ws.close()
            else:
                await ws.wait_closed()

        async with ws_serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as s:
            print(f"PORT {next(iter(s.sockets)).getsockname()[1]}", flush=True)
            await asyncio.wait_for(stop.wait(), 3600)


class ServerProc:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), "--serve", kind], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # bounded: the child prints it or exits
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"server {kind} did not start: {line!r}")
        self.port = int(line.split()[1])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/ssh" if self.kind == "nimbus" else f"ws://127.0.0.1:{self.port}/"

    def rss(self) -> int:
        return rss_kib(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        if self.kind == "raw":
            # No graceful shutdown needed: a bare websockets server would wait
            # out close_timeout for flooded clients that stopped reading.
            self.proc.kill()
        else:
            self.proc.terminate()  # the reference server ends its backends
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _settle(srv: ServerProc, seconds: float = 1.0) -> int:
    """RSS once it stopped changing (or after ``seconds``)."""
    last = srv.rss()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = srv.rss()
        if now == last:
            return now
        last = now
    return last


# ------------------------------------------------------------- idle conns
async def _open_clients(kind: str, url: str, n: int) -> list[Any]:
    if kind == "nimbus":
        from nimbus_websocket.node_runtime import WebsocketsImpl, connect

        async def one() -> Any:
            return await connect(url, websocket_impl=WebsocketsImpl)
    else:
        from websockets.asyncio.client import connect as ws_connect

        async def one() -> Any:
            return await ws_connect(url, compression=None, ping_interval=None)

    out: list[Any] = []
    for i in range(0, n, 20):  # 20 at a time: no accept-queue overflow
        out += await asyncio.wait_for(asyncio.gather(*(one() for _ in range(min(20, n - i)))), 60)
    return out


async def _close_clients(clients: list[Any]) -> None:
    await asyncio.wait_for(asyncio.gather(*(c.close() for c in clients), return_exceptions=True), 60)


async def idle_per_conn(kind: str, n: int) -> float:
    """KiB of server RSS per idle connection (first batch after one warm-up connection)."""
    srv = ServerProc(kind)
    try:
        await _close_clients(await _open_clients(kind, srv.url, 1))
        before = await _settle(srv)
        clients = await _open_clients(kind, srv.url, n)
        after = await _settle(srv, 2.0)
        await _close_clients(clients)
    finally:
        srv.stop()
    return (after - before) / n


# ------------------------------------------------------- streaming conns
async def streaming_per_conn(kind: str, n: int, seconds: float) -> tuple[float, float]:
    """(KiB of peak server RSS per streaming connection, aggregate MB/s received)."""
    srv = ServerProc(kind)
    got = [0] * n
    try:
        await _close_clients(await _open_clients(kind, srv.url, 1))
        before = await _settle(srv)
        stop = asyncio.Event()
        if kind == "nimbus":
            conns = await _open_clients(kind, srv.url, n)
            chans = [await c.open_session(target=TARGET, user=USER, term=None) for c in conns]

            async def drain(i: int) -> None:
                async for chunk in chans[i]:
                    got[i] += len(chunk)
                    if stop.is_set():
                        return
        else:
            conns = await _open_clients(kind, srv.url + "stream", n)

            async def drain(i: int) -> None:
                async for msg in conns[i]:
                    got[i] += len(msg)
                    if stop.is_set():
                        return

        tasks = [asyncio.create_task(drain(i)) for i in range(n)]
        peak = before
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(0.1)
            peak = max(peak, srv.rss())
        dt = time.monotonic() - t0
        total = sum(got)
        stop.set()
        if kind == "raw":
            # A flooded websockets client stops reading its socket (max_queue),
            # so it would not see a closing handshake: cut the connections.
            srv.stop()
            for c in conns:
                c.transport.abort()
        await _close_clients(conns)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        srv.stop()
    return (peak - before) / n, total / dt / 1e6


# ------------------------------------------------------------ client heap
async def client_heap(kind: str, url: str, total: int, trace: bool) -> dict[str, float]:
    """In a fresh process: receive ``total`` bytes; report peak traced heap or RSS growth."""
    import tracemalloc

    if kind == "nimbus":
        from nimbus_websocket.node_runtime import WebsocketsImpl, connect
    else:
        from websockets.asyncio.client import connect as ws_connect
    pid = os.getpid()
    rss0 = rss_kib(pid)
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    n = 0
    if kind == "nimbus":
        conn = await connect(url, websocket_impl=WebsocketsImpl)
        ch = await conn.open_session(target=TARGET, user=USER, term=None)
        async for chunk in ch:
            n += len(chunk)
            if n >= total:
                break
        dt = time.perf_counter() - t0
        await conn.close()
    else:
        async with ws_connect(f"{url}stream?total={total}", compression=None, ping_interval=None) as ws:
            async for msg in ws:
                n += len(msg)
            dt = time.perf_counter() - t0
    out = {"mbps": n / dt / 1e6}
    if trace:
        out["peak_kib"] = tracemalloc.get_traced_memory()[1] / 1024
        tracemalloc.stop()
    else:
        out["rss_growth_kib"] = float(rss_kib(pid, "VmHWM") - rss0)
    return out


def run_client_heap(kind: str, total: int, trace: bool) -> dict[str, float]:
    srv = ServerProc(kind)
    try:
        cmd = [sys.executable, str(HERE), "--client", kind, srv.url, str(total)] + (["--trace"] if trace else [])
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"client heap run failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        srv.stop()


# -------------------------------------------------------------- all of it
async def measure(runs: int, idle: int, streams: int, stream_seconds: float, mb: float) -> dict[str, Any]:
    """Every memory figure, ``runs`` interleaved rounds; returns raw samples."""
    res: dict[str, Any] = {
        "idle_kib": {"raw": [], "nimbus": []},
        "stream_kib": {"raw": [], "nimbus": []},
        "stream_mbps": {"raw": [], "nimbus": []},
        "heap_peak_kib": {"raw": [], "nimbus": []},
        "heap_rss_kib": {"raw": [], "nimbus": []},
        "heap_mbps": {"raw": [], "nimbus": []},
        "params": {"idle": idle, "streams": streams, "stream_seconds": stream_seconds, "mb": mb},
    }
    total = int(mb * 1e6)
    for _ in range(runs):
        for kind in ("raw", "nimbus"):
            res["idle_kib"][kind].append(await idle_per_conn(kind, idle))
            kib, mbps = await streaming_per_conn(kind, streams, stream_seconds)
            res["stream_kib"][kind].append(kib)
            res["stream_mbps"][kind].append(mbps)
            traced = await asyncio.to_thread(run_client_heap, kind, total, True)
            plain = await asyncio.to_thread(run_client_heap, kind, total, False)
            res["heap_peak_kib"][kind].append(traced["peak_kib"])
            res["heap_rss_kib"][kind].append(plain["rss_growth_kib"])
            res["heap_mbps"][kind].append(plain["mbps"])
        print(f"  memory run {len(res['idle_kib']['raw'])}: idle KiB/conn raw {res['idle_kib']['raw'][-1]:.1f}, "
              f"nimbus {res['idle_kib']['nimbus'][-1]:.1f}; streaming KiB/conn raw {res['stream_kib']['raw'][-1]:.0f}, "
              f"nimbus {res['stream_kib']['nimbus'][-1]:.0f}", flush=True)
    return res


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--streams", type=int, default=10)
    ap.add_argument("--stream-seconds", type=float, default=3.0)
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--serve", choices=["nimbus", "raw"], help=argparse.SUPPRESS)
    ap.add_argument("--client", nargs=3, metavar=("KIND", "URL", "BYTES"), help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    if args.client:
        kind, url, total = args.client
        print(json.dumps(asyncio.run(client_heap(kind, url, int(total), args.trace))))
        return 0
    res = asyncio.run(measure(args.runs, args.idle, args.streams, args.stream_seconds, args.mb))
    rows = []
    for key, label in (
        ("idle_kib", f"server KiB per idle connection (N={args.idle})"),
        ("stream_kib", f"server KiB per streaming connection (N={args.streams})"),
        ("heap_peak_kib", f"client tracemalloc peak KiB, {args.mb:g} MB stream"),
        ("heap_rss_kib", f"client RSS growth KiB, {args.mb:g} MB stream"),
    ):
        cells = []
        for kind in ("raw", "nimbus"):
            m, lo, hi = median_range(res[key][kind])
            cells.append(f"{m:,.1f} ({lo:,.1f}-{hi:,.1f})")
        rows.append([label, *cells])
    print(f"# memory, {args.runs} runs ({machine()})")
    print(table(["figure", "bare websockets", "nimbus"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
