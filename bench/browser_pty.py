"""The PTY ``cat`` stream and echo in headless Chromium: bridge vs this server -> Pyodide.

Reuses ``bench/browser.py``'s page (``browser_bench.html``/``.mjs``) and
HTTP side unchanged, with a different plan: one frame size, and every
stream comes off a real PTY, so the browser figures sit in the same table
as ``bench/stream.py``'s:

* ``plain`` -- a plain JavaScript ``WebSocket`` fed by the bare
  ``websockets`` **bridge** of ``bench/stream.py`` (a PTY running
  ``cat FILE``, each read one binary message; no protocol);
* ``nimbus-reference`` -- the Pyodide client through the JS facade, from the
  **reference server** whose backend is a PTY running ``cat FILE`` (a
  ``backend_factory`` forces the PTY: the page opens its channel without
  ``term``);
* ``nimbus-synthetic`` -- as in ``bench/browser.py`` (no PTY);
* echo: plain JS to the bridge on ``cat`` (PTY echo), and the Pyodide
  client to the reference server on a PTY running ``cat``.

Chromium is launched directly (no Playwright or DevTools attached), with a
fresh profile, so the page's boot figure is cold as well.

    python bench/browser_pty.py FILE [--runs 5] [--echo 300] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import browser
from common import scratch_dir
from nimbus_websocket.core.messages import Term
from nimbus_websocket.node_runtime.server import LocalProcessBackend, Server, ServerOptions
from stream import Bridge
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

FRAME = 65536


def pty_server(command: str, origins: tuple[str, ...] = ()) -> Server:
    """The reference server with a PTY backend whatever the page's ``open`` says;
    ``origins``: the page's origin (served by the bench's own HTTP server)."""
    term = Term(80, 24, {"TERM": "xterm"})
    return Server(
        ServerOptions(
            host="127.0.0.1",
            port=0,
            backend_factory=lambda sink, _ev: LocalProcessBackend(sink, term, command),
            allow_origins=origins,
        )
    )


async def run(path: str, runs: int, echo: int, timeout: float, isolated: bool = False) -> dict[str, Any]:
    total = os.path.getsize(path)
    stream_bridge = Bridge(["cat", path])
    echo_bridge = Bridge(["cat"])

    async def plain(ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path)
        # The page closes once it has counted the file's size; the PTY adds a
        # few bytes (\n -> \r\n), which the bridge may still be sending.
        with contextlib.suppress(ConnectionClosed):
            if url.path == "/stream":
                await ws.recv()  # the page's "go"; not for cat
                await stream_bridge.handler(ws)
            elif url.path == "/echo":
                await echo_bridge.handler(ws)
            elif url.path == "/nimbus":
                q = {k: int(v[0]) for k, v in parse_qs(url.query).items()}
                await browser.nimbus_sender(ws, q["size"], q["total"])

    ws_server = await serve(
        plain,
        "127.0.0.1",
        0,
        select_subprotocol=lambda _ws, offered: "nimbus.ssh.v1" if "nimbus.ssh.v1" in offered else None,
        compression=None,
        max_size=None,
        ping_interval=None,
    )
    page = browser.Page({}, asyncio.get_running_loop(), isolated=isolated)
    http_port = page.start()
    origins = (f"http://127.0.0.1:{http_port}",)
    ref = pty_server(f"exec cat {path}", origins)
    echo_srv = pty_server("exec cat", origins)
    await ref.start()
    await echo_srv.start()
    config = {
        "sizes": [FRAME],
        "total": total,
        "runs": runs,
        "echo": echo,
        "profile": False,
        "plain": f"ws://127.0.0.1:{ws_server.sockets[0].getsockname()[1]}",
        "reference": {str(FRAME): ref.url},
        "echoServer": echo_srv.url,
    }
    page.config = config
    profile_dir = tempfile.mkdtemp(prefix="nimbus-bench-chromium-", dir=scratch_dir())
    url = f"http://127.0.0.1:{http_port}/bench/browser_bench.html"
    chrome = subprocess.Popen(
        [browser.CHROMIUM, *browser.CHROME_FLAGS, f"--user-data-dir={profile_dir}", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        results, status = await browser.collect_results(page.results, timeout)
    finally:
        chrome.terminate()
        try:
            chrome.wait(10)
        except subprocess.TimeoutExpired:
            chrome.kill()
            chrome.wait()
        page.stop()
        ws_server.close()
        await ws_server.wait_closed()
        await ref.stop()
        await echo_srv.stop()
        shutil.rmtree(profile_dir, ignore_errors=True)
    return {"status": status, "results": results}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="the file cat streams through the PTY")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--echo", type=int, default=300)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--isolated", action="store_true",
                    help="serve the page cross-origin isolated: performance.now() at 5 us (for echo launches)")
    args = ap.parse_args()
    out = asyncio.run(run(args.file, args.runs, args.echo, args.timeout, args.isolated))
    if args.json:
        Path(args.json).write_text(json.dumps(out))
    for r in out["results"]:
        if r["kind"] == "stream":
            print(f"{r['who']:18} run {r['run']}: {browser.mbps(r):.1f} MB/s")
        elif r["kind"] == "boot":
            print(f"boot {r['totalMs']:.0f} ms")
        elif r["kind"] == "echo":
            xs = sorted(r["rtts"])
            print(f"echo {r['who']}: p50 {xs[len(xs) // 2]:.2f} ms")
    return out["status"]


if __name__ == "__main__":
    sys.exit(main())
