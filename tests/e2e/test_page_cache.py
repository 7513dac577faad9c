"""Issue 14, item 4, in Chromium: a small page that stays cached, with an accurate progress bar.

Against the reference server serving the built site (``site_server``), with
CDP's Network domain watching what crosses the wire:

* the first load gets every asset from ``assets/<hash>/`` with ``Cache-Control:
  public, max-age=31536000, immutable`` and, for the runtime files, brotli
  (``Content-Encoding: br``: fewer bytes on the wire than the file has), and
  the loader's byte count ends exactly at ``bootBytes`` (the decoded sizes)
  although the wire carried far fewer; the preloads in ``index.html`` are
  used (each runtime file is requested once);
* a reload asks the network for ``index.html`` alone (revalidated; and the
  server's few bytes of terminal options), takes every
  asset from the cache, stays under 100 KB on the wire, and resumes the same
  shell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from demo_page import Demo

pytestmark = pytest.mark.timeout(180)

IMMUTABLE = "public, max-age=31536000, immutable"


class Wire:
    """HTTP responses and bytes of one page, from CDP (the terminal's WebSocket left out)."""

    def __init__(self, cdp: Any) -> None:
        self.responses: dict[str, dict[str, Any]] = {}
        self.bytes = 0
        self.from_cache: set[str] = set()
        self._ws: set[str] = set()
        cdp.on("Network.webSocketCreated", lambda e: self._ws.add(e["requestId"]))
        cdp.on("Network.responseReceived", self._response)
        cdp.on("Network.loadingFinished", self._finished)
        cdp.on("Network.requestServedFromCache", lambda e: self.from_cache.add(e["requestId"]))
        cdp.send("Network.enable")

    def _response(self, e: dict[str, Any]) -> None:
        r = e["response"]
        if e["requestId"] in self._ws or not r["url"].startswith("http"):
            return
        headers = {k.lower(): v for k, v in r.get("headers", {}).items()}
        cached = bool(r.get("fromDiskCache") or r.get("fromMemoryCache")) or e["requestId"] in self.from_cache
        self.responses[e["requestId"]] = {"url": r["url"], "status": r["status"], "headers": headers, "cache": cached}

    def _finished(self, e: dict[str, Any]) -> None:
        if e["requestId"] not in self._ws:
            self.bytes += int(e.get("encodedDataLength", 0))

    def reset(self) -> None:
        self.responses.clear()
        self.from_cache.clear()
        self.bytes = 0


def test_first_load_is_compressed_and_immutable_and_reload_costs_one_304(
    site_server: Any, site_dir: Path, context: Any
) -> None:
    meta = json.loads((site_dir / "site.json").read_text())
    page = context.new_page()
    wire = Wire(context.new_cdp_session(page))
    demo = Demo(page).open(site_server.http_url)
    demo.wait_ready()
    demo.set_prompt()
    demo.run("echo first-$((6*7))", r"^first-42$")

    # First load: every asset from a hashed folder, immutable; the runtime compressed.
    by_name = {r["url"].rsplit("/", 1)[-1] or "index.html": r for r in wire.responses.values()}
    assets = [r for r in wire.responses.values() if "/assets/" in r["url"]]
    assert len(assets) >= 10, sorted(by_name)
    for r in assets:
        assert r["status"] == 200 and r["headers"].get("cache-control") == IMMUTABLE, r
    for name in ("pyodide.asm.wasm", "python_stdlib.zip", Path(meta["wheel"]).name, "xterm.js"):
        assert by_name[name]["headers"].get("content-encoding") == "br", by_name[name]
    # index.html preloads them; the boot's own fetch() uses the preload (one request each).
    urls = [r["url"] for r in wire.responses.values()]
    for name in ("pyodide.asm.wasm", "python_stdlib.zip", Path(meta["wheel"]).name, "pyodide.asm.mjs"):
        assert sum(u.endswith("/" + name) for u in urls) == 1, (name, urls)
    raw = sum((site_dir / f).stat().st_size for f in (meta["runtime"] + "pyodide.asm.wasm", meta["runtime"] + "python_stdlib.zip"))
    assert wire.bytes < raw * 0.6, (wire.bytes, raw)
    # The loader counted the decoded bytes: exactly what site.json says the boot fetches.
    boot = demo.wait("() => { const b = window.nimbusDemo.boot; return b && b.loaded === b.total && b; }",
                     what="the loader's count to reach bootBytes")
    assert boot["total"] == meta["bootBytes"], boot
    assert by_name["index.html"]["headers"].get("cache-control") == "no-cache"

    # Reload: index.html revalidated (304), everything else from the cache; the shell resumed.
    wire.reset()
    page.reload()
    demo.wait_ready()
    network = [r for r in wire.responses.values() if not r["cache"]]
    names = [r["url"].rsplit("/", 1)[-1] or "index.html" for r in network]
    # index.html, and the server's terminal options (page-config.json, a few bytes, not cached)
    assert sorted(names) in (["index.html"], ["index.html", "page-config.json"]), network
    # (CDP reports a revalidated response with the cached status; the wire carried only its 304 head)
    assert wire.bytes < 100_000, wire.bytes
    demo.run("echo again-$((6*7))", r"^again-42$")
