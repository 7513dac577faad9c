"""Issue 14 item 2: behind a reverse proxy -- ``--base-path`` and ``--trust-proxy``.

* ``node_runtime/server/proxy.py`` (pure): the base path's normal form and
  refusals; ``X-Forwarded-For`` believed only from a trusted peer, the
  right-most address that is not a trusted proxy;
* against the real server: with ``base_path="/term/"`` the page, its assets,
  the WebSocket (``/term/ws/ssh``, ``--path`` relative to it) and
  ``/term/metrics`` answer under the prefix, everything outside is 404 and
  ``/term`` is 301 to ``/term/``;
* ``trust_proxy``: a trusted peer's ``X-Forwarded-For`` names the client in the
  ``connect`` log line and keys the failed-resume budget (two forwarded
  clients, two budgets); from an untrusted peer the header is ignored (one
  loopback budget); a forwarded hello is never anonymous (4003), a direct one
  from the server's own user still is.

The same against real nginx and Chromium: tests/e2e/test_deploy_nginx.py.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest
from nimbus_websocket.core import get_profile
from nimbus_websocket.core.registry import peer_prefix
from nimbus_websocket.node_runtime.cli import build_parser
from nimbus_websocket.node_runtime.conformance.wire import ServerClosed, Wire, WireClient
from nimbus_websocket.node_runtime.server import Server, ServerOptions
from nimbus_websocket.node_runtime.server.cli import options_from_args
from nimbus_websocket.node_runtime.server.proxy import (
    TrustedProxies,
    normalize_base_path,
    parse_address,
)
from support.resume_probe import failed_resume
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.timeout(60)

TOKEN = "proxy-" + secrets.token_hex(8)
P = get_profile("nimbus.v1")


# --------------------------------------------------------------- pure parts
@pytest.mark.parametrize(
    ("given", "normal"),
    [("/", "/"), ("", "/"), ("term", "/term/"), ("/term", "/term/"), ("/term/", "/term/"), ("a/b", "/a/b/"), ("/a/b/", "/a/b/")],
)
def test_base_path_normal_form(given: str, normal: str) -> None:
    assert normalize_base_path(given) == normal


@pytest.mark.parametrize("bad", ["/a/../b/", "/./", "//x/", "/a//b/", "/t?x=1", "/t#f", "/t%2e/", "/a b/", "/t\x00/", "/t\\x/"])
def test_base_path_refuses_what_is_no_literal_prefix(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_base_path(bad)


@pytest.mark.parametrize(
    ("text", "addr"),
    [
        ("192.0.2.7", "192.0.2.7"),
        (" 192.0.2.7 ", "192.0.2.7"),
        ("192.0.2.7:5678", "192.0.2.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::1"),
        ("unknown", None),
        ("_hidden", None),
        ("[2001:db8::1", None),
        ("", None),
    ],
)
def test_parse_address(text: str, addr: str | None) -> None:
    got = parse_address(text)
    assert (None if got is None else str(got)) == addr


def test_trust_proxy_entries() -> None:
    t = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8", "fd00::/8", "::ffff:192.0.2.1", "10.1.2.3/8"])
    assert [str(n) for n in t.networks] == ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8", "192.0.2.1/32"]
    assert t.trusts("127.0.0.1") and t.trusts("10.200.0.9") and t.trusts("fd12::1") and t.trusts("::ffff:10.0.0.1")
    assert t.trusts("192.0.2.1")
    assert not t.trusts("127.0.0.2") and not t.trusts("11.0.0.1") and not t.trusts("::1") and not t.trusts("?")
    assert not TrustedProxies.parse([])
    for bad in ("localhost", "10.0.0.0/33", "", "1.2.3.4:80"):
        with pytest.raises(ValueError, match="--trust-proxy"):
            TrustedProxies.parse([bad])


def test_forwarded_for_only_from_a_trusted_peer_and_right_most_untrusted() -> None:
    t = TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8"])
    # an untrusted peer: whatever it claims is ignored
    assert t.client_address("198.51.100.1", ["203.0.113.9"]) == "198.51.100.1"
    # a trusted peer without the header: the peer
    assert t.client_address("127.0.0.1", []) == "127.0.0.1"
    # one proxy: the address it appended
    assert t.client_address("127.0.0.1", ["203.0.113.9"]) == "203.0.113.9"
    # the client's own (spoofed) entries are left of the one the trusted proxy wrote
    assert t.client_address("127.0.0.1", ["1.1.1.1, 2.2.2.2, 203.0.113.9"]) == "203.0.113.9"
    # a chain of trusted proxies is walked through
    assert t.client_address("127.0.0.1", ["1.1.1.1, 203.0.113.9, 10.0.0.5, 10.9.9.9"]) == "203.0.113.9"
    # several headers read as one list, in order
    assert t.client_address("127.0.0.1", ["1.1.1.1", "203.0.113.9, 10.0.0.5"]) == "203.0.113.9"
    # every entry trusted: the left-most one
    assert t.client_address("127.0.0.1", ["10.0.0.7, 10.0.0.5"]) == "10.0.0.7"
    # garbage where an address belongs: the nearest hop a trusted proxy wrote
    assert t.client_address("127.0.0.1", ["203.0.113.9, unknown"]) == "127.0.0.1"
    assert t.client_address("127.0.0.1", ["unknown, 10.0.0.5"]) == "10.0.0.5"
    # ports and brackets are dropped, IPv6 kept
    assert t.client_address("127.0.0.1", ["[2001:db8::7]:4711"]) == "2001:db8::7"
    assert t.client_address("127.0.0.1", [" , 203.0.113.9 ,"]) == "203.0.113.9"
    # nobody trusted: never believed
    assert TrustedProxies().client_address("127.0.0.1", ["203.0.113.9"]) == "127.0.0.1"


def test_cli_flags() -> None:
    args = build_parser().parse_args(
        ["serve", "--base-path", "term", "--trust-proxy", "127.0.0.1", "--trust-proxy", "10.0.0.0/8"]
    )
    opts = options_from_args(args)
    assert opts.base_path == "/term/" and opts.trust_proxy == ("127.0.0.1", "10.0.0.0/8")
    assert options_from_args(build_parser().parse_args(["serve"])).base_path == "/"
    for argv in (["--base-path", "/a/../b"], ["--trust-proxy", "proxy.example"]):
        with pytest.raises(SystemExit, match="nimbus-ws serve: "):
            options_from_args(build_parser().parse_args(["serve", *argv]))


def test_server_refuses_a_bad_base_path() -> None:
    with pytest.raises(ValueError):
        Server(ServerOptions(base_path="/a/../b/"))


# ------------------------------------------------------- the real server
async def http(port: int, target: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    """One hand-written ``GET``: ``(status, headers (lower-case names), body)``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        out = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        n = int(out.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(n), 10) if n else b""
        return int(lines[0].split()[1]), out, body
    finally:
        writer.close()


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "vendor").mkdir(parents=True)
    (site / "index.html").write_text("<!doctype html><title>page</title>")
    (site / "app.mjs").write_text("export const x = 1;\n")
    (site / "vendor" / "lib.js").write_text("var lib;\n")
    return site


async def test_base_path_serves_everything_under_the_prefix(make_server: Any, tmp_path: Path) -> None:
    srv: Server = await make_server(
        base_path="/term/", static_dir=str(_site(tmp_path)), tokens=(TOKEN,), metrics=True, pty_command="exec cat"
    )
    port = srv.port
    assert srv.url == f"ws://127.0.0.1:{port}/term/ws/ssh"
    assert srv.access_url == f"http://127.0.0.1:{port}/term/"
    status, _, body = await http(port, "/term/")
    assert (status, body) == (200, b"<!doctype html><title>page</title>")
    assert (await http(port, "/term/index.html"))[0] == 200
    assert (await http(port, "/term/app.mjs"))[2] == b"export const x = 1;\n"
    assert (await http(port, "/term/vendor/lib.js"))[0] == 200
    # /term -> /term/ (the query kept), so that the page's relative URLs resolve under it
    status, headers, _ = await http(port, "/term")
    assert (status, headers["location"]) == (301, "/term/")
    assert "content-security-policy" in headers
    status, headers, _ = await http(port, "/term?token=x&a=1")
    assert (status, headers["location"]) == (301, "/term/?token=x&a=1")
    # outside the prefix: nothing
    for outside in ("/", "/index.html", "/app.mjs", "/metrics", "/ws/ssh", "/terminal/", "/ter", "/term.html", "/x/term/"):
        assert (await http(port, outside))[0] == 404, outside
    # the WebSocket is at /term/ws/ssh only
    with pytest.raises(InvalidStatus) as exc:
        await WireClient.connect(f"ws://127.0.0.1:{port}/ws/ssh")
    assert exc.value.response.status_code == 404
    c = await WireClient.connect(srv.url)
    await c.hello(TOKEN)
    await c.open(1)
    await c.type(1, "under-the-prefix\n")
    await c.until_output(1, b"under-the-prefix")
    await c.close()
    # /term/metrics, with the token
    status, _, body = await http(port, "/term/metrics", f"Authorization: Bearer {TOKEN}\r\n")
    assert status == 200 and b"nimbus" in body
    assert (await http(port, "/term/metrics"))[0] == 401


async def test_path_is_relative_to_the_base(make_server: Any) -> None:
    srv: Server = await make_server(base_path="/a/b", path="/sock", tokens=(TOKEN,))
    assert srv.url.endswith("/a/b/sock")
    c = await WireClient.connect(srv.url)
    await c.hello(TOKEN)
    await c.close()
    assert (await http(srv.port, "/sock"))[0] == 404
    # default base: the old behaviour
    plain: Server = await make_server(tokens=(TOKEN,))
    assert plain.url.endswith(f":{plain.port}/ws/ssh") and plain.base_path == "/"


async def _client(srv: Server, xff: str | None) -> WireClient:
    """A raw wire client from 127.0.0.1 sending ``X-Forwarded-For: xff`` (when given)."""
    headers = {"X-Forwarded-For": xff} if xff is not None else {}
    ws = await asyncio.wait_for(
        connect(srv.url, additional_headers=headers, subprotocols=list(P.subprotocols),
                compression=None, proxy=None, ping_interval=None, open_timeout=10),
        15,
    )
    return WireClient(Wire(ws, P, timeout=10))


async def _failed_resume(srv: Server, xff: str | None) -> int:
    """A resuming hello with an unknown token: the server's close code (4011 refused, 4004 over budget)."""
    return await failed_resume(await _client(srv, xff), TOKEN)


def _connect_peers(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str | None]]:
    return [
        (str(getattr(r, "peer", "")), getattr(r, "via", None))
        for r in caplog.records
        if r.name == "nimbus_websocket.server" and getattr(r, "event", None) == "connect"
    ]


async def test_trusted_proxy_names_the_client(make_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nimbus_websocket.server")
    srv: Server = await make_server(tokens=(TOKEN,), trust_proxy=("127.0.0.1",), resume_failure_limit=2)
    a, b = "203.0.113.7", "203.0.113.8"
    # the client's own claim is left of what the (trusted) proxy appended: ignored
    assert [await _failed_resume(srv, f"6.6.6.6, {a}") for _ in range(3)] == [4011, 4011, 4004]
    assert await _failed_resume(srv, b) == 4011  # another client: its own budget
    assert await _failed_resume(srv, None) == 4011  # the proxy itself (no header): loopback's budget
    assert {peer_prefix(a), peer_prefix(b)} <= set(srv.registry.resume_limiter._failures)
    peers = _connect_peers(caplog)
    assert [p for p, _ in peers[:4]] == [a, a, a, b], peers
    assert all(v is not None and v.startswith("127.0.0.1:") for _, v in peers[:4]), peers
    assert peers[4][0].startswith("127.0.0.1:") and peers[4][1] is None, peers


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(make_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nimbus_websocket.server")
    srv: Server = await make_server(tokens=(TOKEN,), trust_proxy=("10.0.0.1",), resume_failure_limit=2)
    # rotating claimed addresses from one untrusted peer: one (loopback) budget
    codes = [await _failed_resume(srv, f"203.0.113.{i}") for i in range(1, 4)]
    assert codes == [4011, 4011, 4004], codes
    assert set(srv.registry.resume_limiter._failures) == {peer_prefix("127.0.0.1")}
    peers = _connect_peers(caplog)
    assert len(peers) == 3 and all(p.startswith("127.0.0.1:") and v is None for p, v in peers), peers


async def test_a_forwarded_hello_is_never_anonymous(make_server: Any) -> None:
    srv: Server = await make_server(pty_command="exec cat")  # loopback, no token: the server's own user only
    direct = await _client(srv, None)
    assert (await direct.hello(None)).resume is not None  # same UID as the server: anonymous is fine
    await direct.close()
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        ws = await connect(srv.url, additional_headers={header: "127.0.0.1" if header != "Forwarded" else "for=127.0.0.1"},
                           subprotocols=list(P.subprotocols), compression=None, proxy=None, ping_interval=None, open_timeout=10)
        c = WireClient(Wire(ws, P, timeout=10))
        with pytest.raises(ServerClosed) as exc:
            await c.hello(None)
        assert exc.value.code == 4003, (header, exc.value)
