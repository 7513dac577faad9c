"""Browser benchmark: plain JavaScript WebSocket vs the Pyodide client, in one headless Chromium.

Chromium is launched directly (``/usr/bin/chromium --headless ...`` with a
page URL) -- no Playwright or DevTools attached while measuring (an attached
driver slows WebSocket delivery several-fold).  The page
(``bench/browser_bench.html`` + ``browser_bench.mjs``) fetches its plan from
this process and POSTs every result back over HTTP; everything is on
127.0.0.1 and served from the project's own files (Pyodide from
``build/pyodide-dist``, the facade from ``web_runtime/js``).

Measured, in this order, on one fresh page:

* **boot**: ``loadNimbus({indexURL})`` = Pyodide boot + wheel install
  (fetched from the local HTTP server, nothing cached);  target <= 3 s;
* **stream**, per frame size (4 KiB, 64 KiB), first byte to last byte:
  (a) a plain JavaScript ``WebSocket`` receiving ``--mb`` MB from a bare
  ``websockets`` sender (synthetic: pre-built frames, no protocol);
  (b) the Pyodide client through the JS facade (``ch.on("data")``) receiving
  the same amount through the protocol from the **reference server**
  (``head -c N /dev/zero`` on pipes, no PTY; ``max_read`` = frame size);
  (b') the same client from a **synthetic nimbus sender** (pre-built data
  frames, honouring credit) -- isolates the client from the server's cost;
  (c) the plain stream into a bare Python handler (``ev.data.to_bytes()``
  and a counter, one run): the ceiling of any Python on the receive path;
  target: (b) >= 0.7 x (a) at 64 KiB;
* **echo**: one byte, round trip, ``--echo`` times: (a) plain WebSocket to a
  bare echo server; (b) the Pyodide client to the reference server running
  ``cat`` on a PTY (``plain-ws``/``nimbus-ws``); then key event -> byte on
  screen through xterm.js on both sides (``plain``/``nimbus``: ``term.input()``
  -> send -> echo -> xterm's write callback), measured in alternating blocks.
  ``--isolated`` serves the page cross-origin isolated (``performance.now()``
  at 5 us instead of 100 us; it slows streams, so only for echo figures).

``--profile`` adds a cProfile of the Python receive path (64 KiB, synthetic
sender) inside Pyodide.

    python bench/browser.py [--mb 200] [--runs 3] [--echo 300] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import mimetypes
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, percentile, scratch_dir, table
from nimbus_websocket.core.server import ServerConfig
from nimbus_websocket.node_runtime.server import Server, ServerOptions
from websockets.asyncio.server import ServerConnection, serve

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "build" / "pyodide-dist"
FACADE = ROOT / "web_runtime" / "js" / "nimbus.mjs"
BENCH = Path(__file__).resolve().parent
XTERM = ROOT / "node_modules" / "@xterm" / "xterm"
CHROMIUM = os.environ.get("NIMBUS_CHROMIUM", "/usr/bin/chromium")
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIZES = (4096, 65536)
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".wasm": "application/wasm",  # a wrong type makes Pyodide 314 hang
    ".json": "application/json",
    ".zip": "application/zip",
    ".whl": "application/zip",
    ".map": "application/json",
}


# ------------------------------------------------------------------- HTTP


class Page:
    """The HTTP side: static files, the plan, and the results the page POSTs."""

    def __init__(self, config: dict[str, Any], loop: asyncio.AbstractEventLoop, *, isolated: bool = False) -> None:
        self.config = config
        #: Serve the page cross-origin isolated (COOP + COEP): a precise ``performance.now()``.
        self.isolated = isolated
        self.loop = loop
        self.results: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.httpd: ThreadingHTTPServer | None = None

    def start(self) -> int:
        page = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/config":
                    return self._send(200, json.dumps(page.config).encode(), "application/json")
                if path.startswith("/dist/"):
                    return self._file(DIST, path[len("/dist/") :])
                if path == "/js/nimbus.mjs":
                    return self._file(FACADE.parent, "nimbus.mjs")
                name = Path(path).name
                if path.startswith("/bench/") and name.startswith("browser_") and name.endswith((".html", ".mjs")):
                    return self._file(BENCH, Path(path).name)
                if path in ("/xterm/xterm.js", "/xterm/xterm.css"):
                    return self._file(XTERM, "lib/xterm.js" if path.endswith(".js") else "css/xterm.css")
                return self._send(404, b"not found\n", "text/plain")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = urlsplit(self.path).path
                if path == "/result":
                    item = json.loads(body)
                    page.loop.call_soon_threadsafe(page.results.put_nowait, item)
                elif path == "/log":
                    print(f"  [page] {body.decode(errors='replace')}", flush=True)
                self._send(204, b"", "text/plain")

            def _file(self, base: Path, rel: str) -> None:
                target = (base / rel).resolve()
                if base.resolve() not in target.parents or not target.is_file():
                    return self._send(404, b"not found\n", "text/plain")
                ctype = (
                    TYPES.get(target.suffix)
                    or mimetypes.guess_type(target.name)[0]
                    or "application/octet-stream"
                )
                self._send(200, target.read_bytes(), ctype)

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                # Cross-origin isolated (``isolated``): performance.now() at 5 us instead of
                # 100 us, for the echo figures; every resource of the page is same-origin.  Not
                # for streams: isolation costs both sides throughput (a third to a half here).
                if page.isolated:
                    self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                    self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
                self.end_headers()
                if body:
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="bench-http").start()
        return int(self.httpd.server_address[1])

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


# ------------------------------------------------------- synthetic servers



async def collect_results(queue: asyncio.Queue[dict[str, Any]], timeout: float) -> tuple[list[dict[str, Any]], int]:
    """Gather the page's reports until ``done``/``error``/timeout; ``(results, exit status)``."""
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            print("timed out waiting for the page", file=sys.stderr)
            return results, 1
        try:
            item = await asyncio.wait_for(queue.get(), left)
        except TimeoutError:
            continue
        if item["kind"] == "error":
            print(f"page error: {item['message']}", file=sys.stderr)
            return results, 1
        if item["kind"] == "done":
            return results, 0
        results.append(item)

async def synthetic(ws: ServerConnection) -> None:
    """``/stream`` (plain binary frames), ``/echo``, ``/nimbus`` (credit-respecting nimbus.v1 sender)."""
    url = urlsplit(ws.request.path)
    q = {k: int(v[0]) for k, v in parse_qs(url.query).items()}
    if url.path == "/stream":
        await ws.recv()  # "go"
        frame = bytes(q["size"])
        for _ in range(q["total"] // q["size"]):
            await ws.send(frame)
        rest = q["total"] % q["size"]
        if rest:
            await ws.send(bytes(rest))
        with contextlib.suppress(Exception):
            await ws.wait_closed()
    elif url.path == "/echo":
        async for msg in ws:
            await ws.send(msg)
    elif url.path == "/nimbus":
        await nimbus_sender(ws, q["size"], q["total"])


async def nimbus_sender(ws: ServerConnection, size: int, total: int) -> None:
    """The smallest ``nimbus.v1`` server that streams ``total`` bytes honouring credit."""
    json.loads(await ws.recv())  # hello
    caps = {"flow": "credit", "maxFrame": 1 << 20, "profileAccepted": "nimbus.v1", "ack": False}
    await ws.send(json.dumps({"t": "hello_ok", "server": "bench-synthetic", "caps": caps}))
    state = {"credit": 0, "cid": 0}
    more = asyncio.Event()
    opened = asyncio.Event()
    closed = asyncio.Event()

    async def reader() -> None:
        async for msg in ws:
            if not isinstance(msg, str):
                continue
            m = json.loads(msg)
            if m["t"] == "open":
                state["cid"] = m["id"]
                await ws.send(json.dumps({"t": "open_ok", "id": m["id"]}))
                opened.set()
            elif m["t"] == "flow":
                state["credit"] += m["credit"]
                more.set()
            elif m["t"] == "ping":
                await ws.send(json.dumps({"t": "pong", "ts": m["ts"]}))
            elif m["t"] == "close":
                await ws.send(json.dumps({"t": "close", "id": m["id"]}))
                closed.set()

    rt = asyncio.create_task(reader())
    try:
        await opened.wait()
        head = bytes([1]) + int(state["cid"]).to_bytes(4, "big")
        payload = bytes(size)
        frame = head + payload
        sent = 0
        while sent < total:
            while state["credit"] <= 0:
                more.clear()
                await more.wait()
            n = min(size, total - sent, state["credit"])
            await ws.send(frame if n == size else head + payload[:n])
            state["credit"] -= n
            sent += n
        await ws.send(json.dumps({"t": "exit", "id": state["cid"], "code": 0}))
        await asyncio.wait_for(closed.wait(), 30)
        await rt
    finally:
        rt.cancel()


# ------------------------------------------------------------------- run


def fmt_ms(x: float) -> str:
    return f"{x:.2f}"


async def run(args: argparse.Namespace) -> int:
    if not (DIST / "pyodide.mjs").is_file():
        print(f"{DIST} missing: run `make setup` first", file=sys.stderr)
        return 2
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        print(f"Chromium not found at {CHROMIUM}", file=sys.stderr)
        return 2
    total = int(args.mb * 1_000_000)
    loop = asyncio.get_running_loop()
    ws_server = await serve(
        synthetic,
        "127.0.0.1",
        0,
        select_subprotocol=lambda _ws, offered: (
            "nimbus.ssh.v1" if "nimbus.ssh.v1" in offered else None
        ),
        compression=None,
        max_size=None,
        ping_interval=None,
        max_queue=64,
    )
    plain_port = ws_server.sockets[0].getsockname()[1]
    # The page's origin must be allowed by the reference servers (OriginPolicy: the
    # page is served by this process's HTTP server, not by the nimbus server).
    page = Page({}, loop, isolated=args.isolated)
    http_port = page.start()
    origins = (f"http://127.0.0.1:{http_port}",)
    refs: dict[int, Server] = {}
    for size in SIZES:
        refs[size] = Server(
            ServerOptions(
                host="127.0.0.1",
                port=0,
                pty_command=f"exec head -c {total} /dev/zero",
                config=ServerConfig(max_read=size),
                allow_origins=origins,
            )
        )
        await refs[size].start()
    echo = Server(ServerOptions(host="127.0.0.1", port=0, pty_command="exec cat", allow_origins=origins))
    await echo.start()
    config = {
        "sizes": list(SIZES),
        "total": total,
        "runs": args.runs,
        "echo": args.echo,
        "profile": args.profile,
        "profileSort": args.profile_sort,
        "profileSize": args.profile_size,
        "plain": f"ws://127.0.0.1:{plain_port}",
        "reference": {str(s): srv.url for s, srv in refs.items()},
        "echoServer": echo.url,
    }
    page.config = config
    profile_dir = tempfile.mkdtemp(prefix="nimbus-bench-chromium-", dir=scratch_dir())
    url = f"http://127.0.0.1:{http_port}/bench/browser_bench.html"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {machine()}; Chromium {chromium_version()}; load average {load}")
    print(f"page: {url} (Chromium launched directly, no driver attached)")
    browser = subprocess.Popen(
        [CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={profile_dir}", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        results, status = await collect_results(page.results, args.timeout)
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
        page.stop()
        ws_server.close()
        for srv in (*refs.values(), echo):
            await srv.stop()
        shutil.rmtree(profile_dir, ignore_errors=True)
    report(results, args)
    if args.json:  # raw results for bench/run.py
        Path(args.json).write_text(
            json.dumps({"chromium": chromium_version(), "status": status, "results": results})
        )
    return status


def chromium_version() -> str:
    try:
        out = subprocess.run(
            [CHROMIUM, "--version"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    m = re.search(r"\d+\.\d+\.\d+\.\d+", out)
    return m.group(0) if m else (out.strip() or "?")


def mbps(r: dict[str, Any]) -> float:
    return float(r["bytes"]) / (float(r["ms"]) / 1000) / 1e6


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\nload average after the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores are shared)"
    )
    boot = [r for r in results if r["kind"] == "boot"]
    if boot:
        b = boot[0]
        verdict = "ok" if b["totalMs"] <= 3000 else "MISSED"
        print(
            f"Pyodide boot + wheel install: {b['bootMs']:.0f} ms + {b['installMs']:.0f} ms = "
            f"{b['totalMs']:.0f} ms  (target <= 3000 ms: {verdict})"
        )
        files = ", ".join(
            f"{f['file']} {f['bytes'] / 1e6:.1f} MB @{f['startMs']:.0f}+{f['ms']:.0f} ms"
            for f in b.get("fetched", [])
        )
        print(f"  fetched from the local server: {files}")
    streams = [r for r in results if r["kind"] == "stream"]
    rows = []
    for size in SIZES:

        def med(who: str, size: int = size) -> float | None:
            xs = [mbps(r) for r in streams if r["who"] == who and r["size"] == size]
            return statistics.median(xs) if xs else None

        a, b, c = med("plain"), med("nimbus-reference"), med("nimbus-synthetic")
        bare = med("bare-python")
        if a is None:
            continue
        ratio_b = None if b is None else b / a
        ratio_c = None if c is None else c / a
        target = ""
        if size == 65536 and ratio_b is not None:
            target = "ok" if ratio_b >= 0.7 else "MISSED"
        rows.append(
            [
                f"{size // 1024} KiB",
                f"{a:.0f}",
                "-" if b is None else f"{b:.0f}",
                "-" if ratio_b is None else f"{ratio_b:.2f}x",
                "-" if c is None else f"{c:.0f}",
                "-" if ratio_c is None else f"{ratio_c:.2f}x",
                "-" if bare is None else f"{bare:.0f} ({bare / a:.2f}x)",
                target,
            ]
        )
    if rows:
        print(
            f"\nStream, {args.mb:g} MB, MB/s (median of {args.runs} runs, first byte -> last byte):"
        )
        print(
            table(
                [
                    "frame",
                    "(a) plain JS",
                    "(b) Pyodide<-reference",
                    "(b)/(a)",
                    "(b') Pyodide<-synthetic",
                    "(b')/(a)",
                    "(c) bare Python handler",
                    "target (b)>=0.7x @64K",
                ],
                rows,
            )
        )
    echoes = {r["who"]: r["rtts"] for r in results if r["kind"] == "echo"}
    if echoes:
        rows = []
        for who, label in (
            ("plain", "(a) plain JS <- echo server"),
            ("nimbus", "(b) Pyodide <- reference (cat)"),
        ):
            xs = echoes.get(who)
            if xs:
                rows.append(
                    [
                        label,
                        fmt_ms(percentile(xs, 50)),
                        fmt_ms(percentile(xs, 95)),
                        fmt_ms(max(xs)),
                        len(xs),
                    ]
                )
        print("\nEcho round trip of one byte, ms:")
        print(table(["", "p50", "p95", "max", "n"], rows))
        if "plain" in echoes and "nimbus" in echoes:
            print(
                f"ratio p50 (b)/(a): {percentile(echoes['nimbus'], 50) / percentile(echoes['plain'], 50):.2f}x"
            )
    prof = [r for r in results if r["kind"] == "profile"]
    if prof:
        p = prof[0]
        print(
            f"\ncProfile of the Pyodide receive path (64 KiB frames, synthetic sender; {mbps(p):.0f} MB/s under the profiler):"
        )
        print(p["text"])


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mb", type=float, default=200, help="MB per stream run (default 200)")
    ap.add_argument("--runs", type=int, default=3, help="runs per frame size (median reported)")
    ap.add_argument("--echo", type=int, default=300, help="echo round trips")
    ap.add_argument("--profile", action="store_true", help="cProfile the Pyodide receive path")
    ap.add_argument(
        "--profile-sort", default="tottime", help="pstats sort key (tottime, cumulative)"
    )
    ap.add_argument(
        "--profile-size", type=int, default=65536, help="frame size of the profiled stream"
    )
    ap.add_argument(
        "--isolated", action="store_true", help="serve the page cross-origin isolated (precise timers)"
    )
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for the page")
    ap.add_argument(
        "--json", metavar="PATH", help="also write the raw page results as JSON to PATH"
    )
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
