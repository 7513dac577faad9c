"""Issue 14, item 1: the reference server over TLS (``--cert``/``--key``, ``https://``, ``wss://``).

Each test makes its own CA and a server certificate for 127.0.0.1 in
``tmp_path`` (``support/tls_certs.py``), starts the real server on a free
port and talks to it with a real ``websockets`` client:

* a client trusting the test CA opens ``wss://``, runs a command in a PTY;
* ``ws://`` (no TLS) to the TLS port and a client not trusting the CA fail,
  and the server keeps serving;
* the page's own origin is ``https://host:port`` (``http://`` is refused);
* ``nimbus-ws serve --cert --key`` does the same from the command line.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from nimbus_websocket.core.profiles import get_profile
from nimbus_websocket.node_runtime.conformance.wire import Wire, WireClient
from nimbus_websocket.node_runtime.server import Server
from nimbus_websocket.node_runtime.server.tls import server_ssl_context
from support.serve_cli import ServeProcess
from support.tls_certs import TlsFiles, make_tls
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage

pytestmark = pytest.mark.timeout(60)

PTY = "exec bash --norc --noprofile -i"
PROFILE = get_profile("nimbus.v1")


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path / "tls")


@pytest.fixture
async def tls_server(make_server: Callable[..., Awaitable[Server]], tls: TlsFiles) -> Server:
    return await make_server(pty_command=PTY, cert=str(tls.cert), key=str(tls.key))


async def wss_client(url: str, ctx: ssl.SSLContext | None, origin: str | None = None) -> WireClient:
    """The kit's wire client over a ``websockets`` connection made with ``ctx``."""
    ws = await asyncio.wait_for(
        connect(
            url,
            ssl=ctx,
            subprotocols=list(PROFILE.subprotocols),  # type: ignore[arg-type]
            origin=origin,  # type: ignore[arg-type]
            compression=None,
            proxy=None,
            ping_interval=None,
            open_timeout=10,
        ),
        15,
    )
    return WireClient(Wire(ws, PROFILE, timeout=10))


async def run_command(c: WireClient) -> None:
    """hello, a PTY channel, a command's output and its exit status."""
    await c.hello()
    await c.open(1)
    await c.type(1, "echo tls-$((6*7)); exit 5\n")
    await c.until_output(1, b"tls-42")
    assert (await c.until_exit(1)).code == 5
    await c.close()


async def test_wss_runs_a_command_in_a_pty(tls_server: Server, tls: TlsFiles) -> None:
    assert tls_server.tls
    assert tls_server.url == f"wss://127.0.0.1:{tls_server.port}/ws/ssh"
    assert tls_server.access_url == tls_server.url
    c = await wss_client(tls_server.url, tls.client_context())
    tls_info = c.ws.transport.get_extra_info("ssl_object")
    assert tls_info is not None and tls_info.version() in ("TLSv1.2", "TLSv1.3")
    await run_command(c)


async def test_plain_ws_to_the_tls_port_fails(tls_server: Server, tls: TlsFiles) -> None:
    plain = f"ws://127.0.0.1:{tls_server.port}/ws/ssh"
    with pytest.raises(InvalidMessage, match="did not receive a valid HTTP response"):
        await wss_client(plain, None)  # the server answers a TLS alert, not HTTP
    await run_command(await wss_client(tls_server.url, tls.client_context()))  # still serving


async def test_client_not_trusting_the_ca_fails(tls_server: Server, tls: TlsFiles) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await wss_client(tls_server.url, ssl.create_default_context())  # the system's CAs only
    other = make_tls(tls.ca.parent / "other")  # a CA the server's certificate is not from
    with pytest.raises(ssl.SSLCertVerificationError):
        await wss_client(tls_server.url, other.client_context())
    await run_command(await wss_client(tls_server.url, tls.client_context()))


async def test_own_origin_is_https(tls_server: Server, tls: TlsFiles) -> None:
    port = tls_server.port
    c = await wss_client(tls_server.url, tls.client_context(), origin=f"https://127.0.0.1:{port}")
    await run_command(c)
    with pytest.raises(Exception, match="403"):
        await wss_client(tls_server.url, tls.client_context(), origin=f"http://127.0.0.1:{port}")


async def test_page_over_https(make_server: Callable[..., Awaitable[Server]], tls: TlsFiles, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>tls page</title>\n")
    srv = await make_server(static_dir=str(site), ssl_context=server_ssl_context(str(tls.cert), str(tls.key)))
    assert srv.access_url == f"https://127.0.0.1:{srv.port}/"

    def get() -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=tls.client_context(), timeout=10)
        try:
            conn.request("GET", "/")
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    status, body = await asyncio.to_thread(get)
    assert status == 200 and b"tls page" in body


def test_context_is_server_side_tls12_or_later(tls: TlsFiles) -> None:
    ctx = server_ssl_context(str(tls.cert), str(tls.key))
    assert ctx.protocol == ssl.PROTOCOL_TLS_SERVER
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    combined = tls.cert.parent / "both.pem"  # --cert alone: the key in the same file
    combined.write_bytes(tls.cert.read_bytes() + tls.key.read_bytes())
    server_ssl_context(str(combined))


# ----------------------------------------------------------------- the CLI




async def test_cli_serves_wss(serve_cli: Callable[..., ServeProcess], tls: TlsFiles) -> None:
    sp = serve_cli("--cert", str(tls.cert), "--key", str(tls.key), "--pty-command", PTY)
    url = await sp.started()
    assert url.startswith("wss://127.0.0.1:") and url.endswith("/ws/ssh"), url
    await run_command(await wss_client(url, tls.client_context()))
    assert await sp.stop() == 0, sp.lines[-10:]
    assert not any("Traceback" in line for line in sp.lines), sp.lines
