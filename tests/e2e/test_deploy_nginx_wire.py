"""Issue 14 item 2 over the raw wire through real nginx: who the client is, and no anonymous shell.

nginx runs the recipe of docs/deploy.md (``X-Forwarded-For
$proxy_add_x_forwarded_for``) in front of reference servers on loopback.
The test client connects to nginx from ``127.0.0.2`` and sends its own,
forged ``X-Forwarded-For: 198.51.100.7``; nginx appends ``127.0.0.2``.

* (d) ``--trust-proxy 127.0.0.1`` (nginx): the client is ``127.0.0.2`` -- the
  forged entry is left of what the trusted proxy wrote, ignored -- logged as
  ``peer=127.0.0.2 via=127.0.0.1:...``; ``--trust-proxy 127.0.0.0/8`` (the
  client's host is a trusted proxy too): the client is ``198.51.100.7`` and
  its failed resumes use that address's budget (another address: its own);
  no ``--trust-proxy``: the header is ignored, the client is nginx;
* (e) no token: nginx's workers run as another user than the server
  (``nobody`` here), so an anonymous hello through the proxy is refused with
  4003 even with a recipe that sends no forwarding header (the socket's
  owner decides), while the same hello straight to the server is accepted;
  and with the recipe's ``X-Forwarded-For`` a forwarded hello is never
  anonymous, whoever owns the proxy.

The same rules unit by unit: tests/server/test_proxy.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nginx_proc import Nginx, have_nginx, proxy_settings
from nimbus_websocket.core import get_profile
from nimbus_websocket.core.registry import peer_prefix
from nimbus_websocket.node_runtime.conformance.wire import ServerClosed, Wire, WireClient
from nimbus_websocket.node_runtime.server import Server
from support.resume_probe import failed_resume
from websockets.asyncio.client import connect

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not have_nginx(), reason="nginx is not installed (make setup installs Debian's nginx)"),
]

TOKEN = "deploy-" + secrets.token_hex(12)
FORGED = "198.51.100.7"
P = get_profile("nimbus.v1")


@pytest.fixture
def nginx_for(tmp_path: Path) -> Iterator[Callable[..., Nginx]]:
    """``nginx_for({"/a/": server, ...}, settings=None)``: nginx proxying each prefix (stripped) to a server."""
    started: list[Nginx] = []

    def make(routes: dict[str, Server], settings: str | None = None) -> Nginx:
        locations = "".join(
            f"""
        location {prefix} {{
            proxy_pass http://127.0.0.1:{srv.port}/;
            include /etc/nginx/nimbus-ws.conf;
        }}"""
            for prefix, srv in routes.items()
        )
        nginx = Nginx(tmp_path / f"nginx{len(started)}", locations, settings=settings)
        started.append(nginx)
        return nginx.start()

    yield make
    for nginx in started:
        nginx.stop()


async def _via(nginx: Nginx, prefix: str, xff: str | None = FORGED, source: str = "127.0.0.2") -> WireClient:
    """A wire client to ``nginx``'s ``prefix`` from ``source``, sending ``X-Forwarded-For: xff``."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", nginx.port)), 10)
        ws = await asyncio.wait_for(
            connect(f"ws://127.0.0.1:{nginx.port}{prefix}ws/ssh", sock=sock,
                    additional_headers={"X-Forwarded-For": xff} if xff else {},
                    subprotocols=list(P.subprotocols), compression=None, proxy=None, ping_interval=None,
                    open_timeout=10),
            15,
        )
    except BaseException:
        sock.close()
        raise
    return WireClient(Wire(ws, P, timeout=10))


async def _failed_resume(c: WireClient) -> int:
    return await failed_resume(c, TOKEN)


def _records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "nimbus_websocket.server" and getattr(r, "event", None) == event]


async def test_trust_proxy_through_nginx(make_server: Any, nginx_for: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nimbus_websocket.server")
    only_nginx: Server = await make_server(tokens=(TOKEN,), trust_proxy=("127.0.0.1",))
    chain: Server = await make_server(tokens=(TOKEN,), trust_proxy=("127.0.0.0/8",), resume_failure_limit=2)
    nobody: Server = await make_server(tokens=(TOKEN,))
    nginx = nginx_for({"/a/": only_nginx, "/b/": chain, "/c/": nobody})

    # nginx trusted: the address nginx saw; the forged entry is ignored
    c = await _via(nginx, "/a/")
    await c.hello(TOKEN)
    await c.close()
    (rec,) = _records(caplog, "connect")
    assert (rec.peer, re.match(r"127\.0\.0\.1:\d+$", rec.via or "") is not None) == ("127.0.0.2", True), vars(rec)
    (auth,) = _records(caplog, "auth")
    assert auth.peer == "127.0.0.2"

    # the client's host trusted too: the address it forwarded, with its own resume budget
    caplog.clear()
    codes = [await _failed_resume(await _via(nginx, "/b/")) for _ in range(3)]
    assert codes == [4011, 4011, 4004], codes
    assert await _failed_resume(await _via(nginx, "/b/", xff="198.51.100.8")) == 4011
    assert {peer_prefix(FORGED), peer_prefix("198.51.100.8")} == set(chain.registry.resume_limiter._failures)
    assert [r.peer for r in _records(caplog, "connect")] == [FORGED] * 3 + ["198.51.100.8"]

    # nobody trusted: the header is ignored; the client is nginx itself
    caplog.clear()
    c = await _via(nginx, "/c/")
    await c.hello(TOKEN)
    await c.close()
    (rec,) = _records(caplog, "connect")
    assert re.match(r"127\.0\.0\.1:\d+$", rec.peer) and getattr(rec, "via", None) is None, vars(rec)


async def test_no_anonymous_shell_through_nginx(make_server: Any, nginx_for: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nimbus_websocket.server")
    srv: Server = await make_server(pty_command="exec cat")  # loopback, no token: the server's own user only
    # straight to the server, as its own user: anonymous is fine
    direct = await WireClient.connect(srv.url)
    assert (await direct.hello(None)).resume is not None
    await direct.close()

    # the documented recipe (X-Forwarded-For): never anonymous, whoever runs nginx
    nginx = nginx_for({"/t/": srv})
    c = await _via(nginx, "/t/", xff=None, source="127.0.0.1")
    with pytest.raises(ServerClosed) as exc:
        await c.hello(None)
    assert exc.value.code == 4003

    # a recipe without forwarding headers: the socket's owner decides -- nginx's worker
    bare = "\n".join(ln for ln in proxy_settings().splitlines() if "X-Forwarded" not in ln)
    nginx = nginx_for({"/t/": srv}, settings=bare)
    uids = nginx.worker_uids()
    assert uids, "no nginx worker found"
    if os.getuid() in uids:
        pytest.skip(f"nginx's workers run as the server's user here (uids {uids}): nothing tells them apart")
    caplog.clear()
    c = await _via(nginx, "/t/", xff=None, source="127.0.0.1")
    with pytest.raises(ServerClosed) as exc:
        await c.hello(None)
    assert exc.value.code == 4003
    (auth,) = _records(caplog, "auth")
    assert auth.ok is False and auth.peer_uid in uids, vars(auth)
