"""Issue 13, item 2: exact same origin by default (cross-site WebSocket hijacking).

Each test starts the real server on 127.0.0.1 and sends the upgrade a page
from somewhere else would send (``Origin`` is what the browser puts there;
``tests/e2e/test_security_origin.py`` has Chromium do it):

* another loopback port, ``localhost`` for a ``127.0.0.1`` Host, another scheme:
  403; the request's own origin: 101;
* ``--allow-origin`` entries are exact origins (normalised: case, default
  port): the listed one 101, the same host on another port 403;
* ``--allow-origin '*'`` (and a malformed entry) stops the server at start with
  one line and no traceback; requests without ``Origin`` still upgrade (and
  still need auth).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from nimbus_websocket.node_runtime.server import Server, ServerOptions
from nimbus_websocket.node_runtime.server.policy import OriginPolicy, normalize_origin
from reliability.rel_util import RawWs

pytestmark = pytest.mark.timeout(60)


async def _upgrade(port: int, origin: str | None, host: str | None = None) -> int:
    """HTTP status of a hand-written upgrade with ``Origin: origin`` (101 = accepted)."""
    r = await RawWs.connect(port)
    try:
        headers = [("Origin", origin)] if origin is not None else []
        return await r.handshake(RawWs.upgrade_request(port, host=host, headers=headers))
    finally:
        r.abort()


async def test_default_is_the_exact_origin_of_the_request(make_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nimbus_websocket.server")
    srv: Server = await make_server()
    p = srv.port
    other = p + 1 if p < 65535 else p - 1
    cases = {
        f"http://127.0.0.1:{p}": 101,  # the page the server itself serves
        f"http://127.0.0.1:{other}": 403,  # python -m http.server, a notebook, a dev server
        "http://127.0.0.1": 403,  # port 80
        f"http://localhost:{p}": 403,  # another host string is another origin
        f"http://[::1]:{p}": 403,
        f"https://127.0.0.1:{p}": 403,  # another scheme
        f"ws://127.0.0.1:{p}": 403,
        f"HTTP://127.0.0.1:{p}": 101,  # case does not make an origin
        "null": 403,  # sandboxed frames, file:// pages
    }
    got = {o: await _upgrade(p, o) for o in cases}
    assert got == cases
    refused = [r for r in caplog.records if getattr(r, "event", None) == "origin_refused"]
    assert len(refused) == sum(1 for v in cases.values() if v == 403)
    # the Host decides the origin: a page opened as http://localhost:PORT is that origin
    assert await _upgrade(p, f"http://localhost:{p}", host=f"localhost:{p}") == 101
    # non-browser clients send no Origin: the upgrade goes on (auth still applies)
    assert await _upgrade(p, None) == 101


async def test_dns_rebinding_host_is_still_refused(make_server: Any) -> None:
    """A rebinding page has its own name in Origin and Host alike: same origin, but not loopback."""
    srv: Server = await make_server()
    p = srv.port
    assert await _upgrade(p, f"http://evil.example:{p}", host=f"evil.example:{p}") == 403
    assert await _upgrade(p, f"http://127.0.0.1.nip.io:{p}", host=f"127.0.0.1.nip.io:{p}") == 403


async def test_allow_list_entries_are_exact_origins(make_server: Any) -> None:
    srv: Server = await make_server(allow_origins=("http://app.test:8080", "HTTPS://Secure.Test:443/"))
    p = srv.port
    cases = {
        "http://app.test:8080": 101,
        "http://app.test:8081": 403,  # the same host on another port
        "http://app.test": 403,
        "https://app.test:8080": 403,
        "https://secure.test": 101,  # the entry was normalised: lower case, default port dropped
        "https://secure.test:443": 101,
        "https://secure.test:8443": 403,
        f"http://127.0.0.1:{p}": 101,  # the server's own pages still work
        f"http://127.0.0.1:{p + 1 if p < 65535 else p - 1}": 403,
    }
    assert {o: await _upgrade(p, o) for o in cases} == cases


def test_normalised_forms() -> None:
    assert normalize_origin("HTTP://Example.COM:80") == "http://example.com"
    assert normalize_origin("https://example.com:443/") == "https://example.com"
    assert normalize_origin("http://[0:0::1]:8080") == "http://[::1]:8080"
    for bad in ("*", "null", "", "example.com", "http://", "http://a/b", "http://a?x", "http://u@a", "http://a:x", "http://a\tb"):
        assert normalize_origin(bad) is None, bad
    assert OriginPolicy(("http://a.test:80",)).allowed == {"http://a.test"}


@pytest.mark.parametrize("entry", ["*", " * ", "example.com", "http://a.test/path", "null"])
def test_wildcard_and_malformed_entries_refuse_to_start(entry: str) -> None:
    with pytest.raises(ValueError):
        Server(ServerOptions(allow_origins=(entry,)))
    r = subprocess.run(
        [sys.executable, "-m", "nimbus_websocket", "serve", "--port", "0", "--allow-origin", entry],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "--allow-origin" in lines[0]
    if entry.strip() == "*":
        assert "refused" in lines[0] and "exact origins" in lines[0]
