"""PTY ``cat`` stream with the server and the client in two processes.

``bench/stream.py`` runs server and client in one process (one event loop),
so the client's work is serialised with the server's PTY reads.  Here the
server -- the bare bridge of ``bench/stream.py`` or the reference server --
runs in a subprocess (this file with ``--serve``) and the client in this
process, as they would on two machines.  Same file, same PTY settings.

    python bench/pty_split.py FILE [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stream
from common import median_range
from nimbus_websocket.node_runtime import WebsocketsImpl, connect
from websockets.asyncio.client import connect as ws_connect

HERE = Path(__file__).resolve()


async def serve(kind: str, path: str) -> None:
    """Print the URL, serve until stdin closes (bounded: one hour)."""
    from nimbus_websocket.node_runtime.server import Server, ServerOptions

    loop = asyncio.get_running_loop()
    done = loop.run_in_executor(None, sys.stdin.read)
    if kind == "bridge":
        async with stream.Bridge(["cat", path]) as url:
            print(url, flush=True)
            await asyncio.wait_for(done, 3600)
    else:
        srv = Server(ServerOptions(port=0, pty_command=f"exec cat {path}"))
        await srv.start()
        print(srv.url, flush=True)
        try:
            await asyncio.wait_for(done, 3600)
        finally:
            await srv.stop()


async def split_stream(kind: str, path: str) -> float:
    """MB/s of ``cat path`` from a server subprocess (``bridge`` or ``nimbus``) to a client here."""
    size = os.path.getsize(path)
    proc = subprocess.Popen(
        [sys.executable, str(HERE), "--serve", kind, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        url = url.strip()
        if not url.startswith("ws://"):
            raise RuntimeError(f"{kind} server did not start")
        n = 0
        t0 = time.perf_counter()
        if kind == "bridge":
            async with ws_connect(url, compression=None, max_size=1 << 20) as ws:
                async for msg in ws:
                    n += len(msg)
        else:
            conn = await connect(url, websocket_impl=WebsocketsImpl)
            ch = await conn.open_session(target=stream.TARGET, user=stream.USER, term=stream.TERM)
            async for chunk in ch:
                n += len(chunk)
        dt = time.perf_counter() - t0
        if kind != "bridge":
            await conn.close()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert n >= size, (n, size)
    return size / dt / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--serve", choices=["bridge", "nimbus"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.file))
        return 0
    res: dict[str, list[float]] = {"bridge": [], "nimbus": []}
    for _ in range(args.runs):
        for kind in res:
            res[kind].append(asyncio.run(split_stream(kind, args.file)))
    for kind, xs in res.items():
        m, lo, hi = median_range(xs)
        print(f"{kind:7} {m:.1f} ({lo:.1f}-{hi:.1f}) MB/s")
    print(f"ratio {median_range(res['nimbus'])[0] / median_range(res['bridge'])[0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
