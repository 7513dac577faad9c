"""Issue 13 item 12: ``/metrics`` is not public, and clients cannot mint labels.

Against the real server, over plain HTTP (``http.client``):

* with ``--token``, ``GET /metrics`` without credentials, with a wrong token,
  another scheme or the token in the query is 401 (``WWW-Authenticate:
  Bearer``); with ``Authorization: Bearer <token>`` it is 200;
* a loopback-bound server answers ``/metrics`` only under a loopback ``Host``
  (a DNS-rebinding page names its own domain: 421), and refuses a foreign
  ``Origin`` as the upgrade does (403), even with the right token;
* without a token, ``/metrics`` follows the anonymous rule: the server's own
  user gets it, another local user (``setpriv --reuid=65534``) gets 401;
* 50 connections closing with the distinct codes 3000..3049 leave at most the
  :class:`CloseCode` labels plus ``other`` in ``nimbus_close_codes``.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import re
import secrets
import shutil
import subprocess
import sys
from typing import Any

import pytest
from nimbus_websocket.core.errors import CloseCode
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.server import Server

pytestmark = pytest.mark.timeout(60)

TOKEN = "metrics-" + secrets.token_hex(12)
NOBODY = 65534


def _get_sync(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)  # a "Host" in headers replaces the default
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


async def get(port: int, path: str = "/metrics", **headers: str) -> tuple[int, dict[str, str], bytes]:
    """``GET path`` with ``headers`` (``_`` in a name becomes ``-``): ``(status, headers, body)``."""
    return await asyncio.to_thread(_get_sync, port, path, {k.replace("_", "-"): v for k, v in headers.items()})


async def test_with_a_token_metrics_wants_the_bearer(make_server: Any) -> None:
    srv: Server = await make_server(tokens=(TOKEN,), metrics=True)
    refused = {
        "no credentials": await get(srv.port),
        "wrong token": await get(srv.port, Authorization=f"Bearer {TOKEN[:-1]}x"),
        "token prefix": await get(srv.port, Authorization=f"Bearer {TOKEN[:-1]}"),
        "empty bearer": await get(srv.port, Authorization="Bearer "),
        "basic": await get(srv.port, Authorization="Basic " + base64.b64encode(f"x:{TOKEN}".encode()).decode()),
        "bare token": await get(srv.port, Authorization=TOKEN),
        "query": await get(srv.port, f"/metrics?token={TOKEN}"),
    }
    for what, (status, headers, body) in refused.items():
        assert status == 401, what
        assert headers.get("www-authenticate", "").startswith("Bearer"), what
        assert b"nimbus_" not in body, what
    for scheme in ("Bearer", "bearer"):  # the scheme is case-insensitive (RFC 9110 11.1)
        status, headers, body = await get(srv.port, Authorization=f"{scheme} {TOKEN}")
        assert status == 200 and b"nimbus_connections" in body, scheme
        assert headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "localhost.evil.example:{port}", "", "[::1"],
)
async def test_a_foreign_host_is_refused_even_with_the_token(make_server: Any, host: str) -> None:
    """DNS rebinding: the attacker's page fetches /metrics under its own name."""
    srv: Server = await make_server(tokens=(TOKEN,), metrics=True)
    status, _, body = await get(srv.port, Authorization=f"Bearer {TOKEN}", Host=host.format(port=srv.port))
    assert status == 421 and b"nimbus_" not in body
    for ok_host in (f"127.0.0.1:{srv.port}", f"localhost:{srv.port}", "[::1]"):
        assert (await get(srv.port, Authorization=f"Bearer {TOKEN}", Host=ok_host))[0] == 200, ok_host


async def test_a_foreign_origin_is_refused_as_at_the_upgrade(make_server: Any) -> None:
    srv: Server = await make_server(tokens=(TOKEN,), metrics=True)
    auth = f"Bearer {TOKEN}"
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{srv.port + 1}"):
        status, _, body = await get(srv.port, Authorization=auth, Origin=origin)
        assert status == 403 and b"nimbus_" not in body, origin
    assert (await get(srv.port, Authorization=auth, Origin=f"http://127.0.0.1:{srv.port}"))[0] == 200


def _as_nobody() -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("running a process as another user needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv missing (util-linux)")
    for cand in ("/usr/bin/python3", sys.executable):
        if os.access(cand, os.X_OK):
            return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", cand]
    pytest.skip("no python3 for the other user")


async def test_without_a_token_metrics_is_for_the_servers_own_user_only(make_server: Any) -> None:
    srv: Server = await make_server(metrics=True)
    status, _, body = await get(srv.port)  # this process: the server's own UID
    assert status == 200 and b"nimbus_connections" in body
    code = (
        f"import http.client,sys; c=http.client.HTTPConnection('127.0.0.1', {srv.port}, timeout=10);"
        " c.request('GET', '/metrics', headers={'Authorization': 'Bearer anything'}); r=c.getresponse();"
        " sys.stdout.write(f'{r.status} {int(b\"nimbus_\" in r.read())}')"
    )
    proc = await asyncio.create_subprocess_exec(
        *_as_nobody(), "-c", code, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/"
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert out.decode() == "401 0"  # another local user: no anonymous metrics


_LABEL = re.compile(rb'^nimbus_close_codes_total\{code="([^"]*)"\} ([0-9.e+]+)$', re.M)


async def _close_labels(port: int) -> dict[str, float]:
    status, _, body = await get(port, Authorization=f"Bearer {TOKEN}")
    assert status == 200
    return {m[1].decode(): float(m[2]) for m in _LABEL.finditer(body)}


async def test_client_close_codes_cannot_mint_labels(make_server: Any) -> None:
    srv: Server = await make_server(tokens=(TOKEN,), metrics=True)
    for code in range(3000, 3050):
        c = await WireClient.connect(srv.url)
        await c.close(code)
    labels: dict[str, float] = {}
    async with asyncio.timeout(20):  # each connection is counted as its handler ends
        while sum(labels.values()) < 50:
            labels = await _close_labels(srv.port)
            await asyncio.sleep(0.02)
    known = {str(int(c)) for c in CloseCode}
    assert set(labels) <= known | {"other"}, labels
    assert labels.get("other", 0) >= 50, labels
    assert not any(label.startswith("30") for label in labels)
