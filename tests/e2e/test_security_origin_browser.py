"""Issue 13, item 2, in Chromium: a page on another loopback port cannot open the shell's WebSocket.

A second, plain HTTP server (``http.server``, as ``python -m http.server``
would be) on another 127.0.0.1 port serves a page whose script opens
``ws://127.0.0.1:<nimbus port>/ws/ssh``.  Chromium sends that page's origin;
the server refuses the upgrade (403, ``event=origin_refused``) and the page
sees the connection fail.  The same script served by the nimbus server itself
(same origin) opens -- so the refusal is about the origin, not the script.
"""

from __future__ import annotations

import http.server
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_server import ServerThread

PROBE_JS = """window.probe = new Promise((resolve) => {
  const url = new URLSearchParams(location.search).get("ws");
  const ws = new WebSocket(url, "nimbus.ssh.v1");
  ws.onopen = () => { resolve("open"); ws.close(); };
  ws.onerror = () => resolve("error");
  ws.onclose = (e) => resolve("close " + e.code);
});
"""
PROBE_HTML = '<!doctype html><meta charset="utf-8"><title>probe</title><script src="probe.js"></script>'


@pytest.fixture
def pages(tmp_path: Path) -> Path:
    (tmp_path / "probe.js").write_text(PROBE_JS)
    (tmp_path / "index.html").write_text(PROBE_HTML)
    return tmp_path


@pytest.fixture
def server(pages: Path) -> Iterator[ServerThread]:
    st = ServerThread(static_dir=str(pages), pty_command="exec true").start()
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture
def other_origin(pages: Path) -> Iterator[str]:
    """``http://127.0.0.1:<another port>/``: a plain http.server in a thread."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(pages)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "origin_refused"]


def test_page_on_another_loopback_port_cannot_open_the_websocket(
    context: Any, server: ServerThread, other_origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nimbus_websocket.server")
    ws_url = f"ws://127.0.0.1:{server.server.port}/ws/ssh"
    page = context.new_page()
    page.goto(f"{other_origin}?ws={ws_url}")
    outcome = page.evaluate("() => window.probe")
    assert outcome in ("error", "close 1006"), outcome
    deadline = time.monotonic() + 10
    while not _refusals(caplog) and time.monotonic() < deadline:  # logged before the 403 is sent
        time.sleep(0.01)
    refused = _refusals(caplog)
    assert refused and getattr(refused[0], "origin", None) == other_origin.rstrip("/"), [r.__dict__ for r in refused]
    # control: the same script from the server's own origin opens
    page2 = context.new_page()
    page2.goto(f"{server.http_url}?ws={ws_url}")
    assert page2.evaluate("() => window.probe") == "open"
    assert len(_refusals(caplog)) == len(refused)
