"""Rendered throughput: a PTY's output drawn by xterm.js in Chromium, plain JS vs the Pyodide client.

What the user sees.  The same file goes through a PTY running ``cat FILE``
and is rendered by xterm.js (80x24, DOM renderer, in a headless Chromium
launched directly -- no Playwright or DevTools attached):

* ``plain`` -- a plain JavaScript ``WebSocket`` reading the bare
  ``websockets`` **bridge** of ``bench/stream.py`` (no protocol, no flow
  control): every message straight into ``term.write``;
* ``nimbus`` -- the Pyodide client through the JS facade from the
  **reference server** (PTY backend), the demo page's way:
  ``ch.on("data", (bytes, done) => term.write(bytes, done))``, so credit
  follows xterm's write callback and the page's memory stays bounded.

Each run is timed from the first byte to xterm's write callback of the last
one; runs alternate plain, nimbus, plain...  The page samples its JS heap
(``performance.memory``, precise: ``--enable-precise-memory-info``) and
Pyodide's wasm memory every 50 ms: the plain side buffers whatever xterm has
not parsed yet, the nimbus side at most one credit window.

    python bench/browser_render.py [FILE] [--mb 20] [--runs 3] [--json PATH]

Without FILE a text file of ``--mb`` MB (100-column lines of base64) is made
in a scratch directory.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import browser
from browser_pty import pty_server
from common import scratch_dir, table
from stream import Bridge
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

#: Target (issue 16 item 5): rendered MB/s of the Pyodide client >= 0.9 x plain JS.
TARGET = 0.9


def make_text(path: Path, mb: float) -> None:
    """``mb`` MB of printable 100-column lines (base64 of random bytes, ``\\n`` line ends)."""
    total = int(mb * 1_000_000)
    with path.open("wb") as out:
        written = 0
        while written < total:
            block = base64.encodebytes(os.urandom(75 * 1000)).replace(b"\n", b"")
            lines = b"".join(block[i : i + 99] + b"\n" for i in range(0, len(block), 99))
            out.write(lines[: total - written])
            written += min(len(lines), total - written)


async def run(
    path: str, runs: int, timeout: float, connect: dict[str, Any] | None = None, tried: dict[str, Any] | None = None
) -> dict[str, Any]:
    data = Path(path).read_bytes()
    # The PTY turns every \n into \r\n (onlcr): what the page receives.
    expected = len(data) + data.count(b"\n")
    bridge = Bridge(["cat", path])

    async def plain(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            if urlsplit(ws.request.path).path == "/stream":
                await ws.recv()  # the page's "go"
                await bridge.handler(ws)

    ws_server = await serve(plain, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None)
    page = browser.Page({}, asyncio.get_running_loop())
    http_port = page.start()
    ref = pty_server(f"exec cat {path}", (f"http://127.0.0.1:{http_port}",))
    await ref.start()
    page.config = {
        "runs": runs,
        "expected": expected,
        "plain": f"ws://127.0.0.1:{ws_server.sockets[0].getsockname()[1]}",
        "reference": ref.url,
        "connect": connect or {},
        "tried": tried,
    }
    profile_dir = tempfile.mkdtemp(prefix="nimbus-bench-chromium-", dir=scratch_dir())
    url = f"http://127.0.0.1:{http_port}/bench/browser_render.html"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    chrome = subprocess.Popen(
        [browser.CHROMIUM, *browser.CHROME_FLAGS, "--enable-precise-memory-info",
         f"--user-data-dir={profile_dir}", url],
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
        shutil.rmtree(profile_dir, ignore_errors=True)
    return {"status": status, "results": results, "file_bytes": len(data), "expected": expected,
            "load_before": load, "load_after": ", ".join(f"{x:.2f}" for x in os.getloadavg())}


def mbps(r: dict[str, Any]) -> float:
    return float(r["bytes"]) / (float(r["ms"]) / 1000) / 1e6


def report(out: dict[str, Any]) -> None:
    renders = [r for r in out["results"] if r["kind"] == "render"]
    rows = []
    for who in ("plain", "nimbus", "nimbus-tried"):
        rs = [r for r in renders if r["who"] == who]
        if not rs:
            continue
        rows.append([
            who,
            f"{statistics.median(mbps(r) for r in rs):.1f}",
            f"{statistics.median(r['heapGrowth'] for r in rs) / 1e6:.1f}",
            f"{max(r['heapGrowth'] for r in rs) / 1e6:.1f}",
            f"{max(r['wasmPeak'] for r in rs) / 1e6:.0f}",
            f"{max(r['peakInflight'] for r in rs) / 1e6:.2f}",
            str(len(rs)),
        ])
    print(f"load average {out['load_before']} -> {out['load_after']}; {out['expected'] / 1e6:.1f} MB rendered per run")
    print(table(["", "MB/s (median)", "JS heap growth MB (median)", "max", "wasm peak MB", "unparsed peak MB", "n"], rows))
    ratios = [mbps(b) / mbps(a) for a, b in zip(
        [r for r in renders if r["who"] == "plain"], [r for r in renders if r["who"] == "nimbus"], strict=False)]
    if ratios:
        med = statistics.median(ratios)
        print(f"ratio nimbus/plain, median of per-run ratios: {med:.2f}x (target >= {TARGET}x: "
              f"{'ok' if med >= TARGET else 'MISSED'})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", help="the file cat streams through the PTY (default: generated text)")
    ap.add_argument("--mb", type=float, default=20, help="size of the generated file (default 20 MB)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--connect", default="{}", help="extra connect options of the Pyodide side (JSON)")
    ap.add_argument("--tried", help="connect options (JSON) of a third side, 'nimbus-tried', run after each pair")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nimbus-render-", dir=scratch_dir()) as tmp:
        path = args.file
        if path is None:
            path = str(Path(tmp) / "text.txt")
            make_text(Path(path), args.mb)
        tried = json.loads(args.tried) if args.tried else None
        out = asyncio.run(run(path, args.runs, args.timeout, json.loads(args.connect), tried))
    if args.json:
        Path(args.json).write_text(json.dumps(out))
    report(out)
    return int(out["status"])


if __name__ == "__main__":
    sys.exit(main())
