"""Issue 13, item 1: without a token, only the server's own user gets a shell.

* ``node_runtime/server/peercred.py``: the kernel socket table's rows parsed
  (IPv4, IPv6, IPv4-mapped, both byte orders, headers and orphans), and the
  real lookup on live loopback sockets -- one of them owned by ``nobody``;
* the attack: a client run as another local user (``setpriv --reuid=65534``,
  the standard-library client ``tests/support/rawws.py``) sends ``hello``
  without a token to a tokenless server on 127.0.0.1 and is closed 4003; with a
  token configured, the same user's valid token passes; the server's own user
  still connects anonymously;
* ``serve --host <non-loopback>`` without a token draws one, prints one URL
  carrying it, refuses anonymous clients, and the printed URL works;
* running as root logs that every shell is a root shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nimbus_websocket.core import Auth, Hello, HelloCaps, get_profile
from nimbus_websocket.core.errors import CloseCode
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.server import Server, peercred
from nimbus_websocket.node_runtime.server.peercred import (
    SocketEntry,
    find_peer,
    parse_address,
    parse_line,
)
from nimbus_websocket.node_runtime.server.policy import AuthPolicy
from reliability.rel_util import ServerProcess

pytestmark = pytest.mark.timeout(90)

P = get_profile("nimbus.v1")
NOBODY = 65534
RAWWS = Path(__file__).resolve().parents[1] / "support" / "rawws.py"
V4, V6 = ipaddress.IPv4Address, ipaddress.IPv6Address

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
# 127.0.0.1:8765 <- 127.0.0.1:40000, both ends (the server's socket owned by 0, the client's by 1000)
V4_SERVER = "   3: 0100007F:223D 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 5001 1 0 20 4 30 10 -1"
V4_CLIENT = "   4: 0100007F:9C40 0100007F:223D 01 00000000:00000000 00:00000000 00000000  1000        0 5002 1 0 20 4 30 10 -1"
V4_ORPHAN = "   5: 0100007F:9C41 0100007F:223D 06 00000000:00000000 03:00000E5B 00000000     0        0 0 3 0"
# [::1]:8765 <- [::1]:40000, client owned by 65534
V6_CLIENT = (
    "   0: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:223D 01"
    " 00000000:00000000 00:00000000 00000000 65534        0 6002 1 0 20 4 30 10 -1"
)
# ::ffff:127.0.0.1:40000 -> ::ffff:127.0.0.1:8765 (a dual-stack client socket), owner 1000
MAPPED_CLIENT = (
    "   1: 0000000000000000FFFF00000100007F:9C40 0000000000000000FFFF00000100007F:223D 01"
    " 00000000:00000000 00:00000000 00000000  1000        0 7002 1 0 20 4 30 10 -1"
)


# ------------------------------------------------------------------ parsing


def test_parse_address_ipv4_ipv6_and_mapped() -> None:
    assert parse_address("0100007F:223D", "little") == (V4("127.0.0.1"), 8765)
    assert parse_address("7F000001:223D", "big") == (V4("127.0.0.1"), 8765)
    assert parse_address("0202000A:0016", "little") == (V4("10.0.2.2"), 22)
    assert parse_address("00000000000000000000000001000000:223D", "little") == (V6("::1"), 8765)
    assert parse_address("00000000000000000000000000000001:223D", "big") == (V6("::1"), 8765)
    # fd00::2, each 32-bit word in host (little-endian) order
    assert parse_address("000000FD000000000000000002000000:0050", "little") == (V6("fd00::2"), 80)
    # IPv4-mapped IPv6 comes back as IPv4, so both tables' spellings compare equal
    assert parse_address("0000000000000000FFFF00000100007F:223D", "little") == (V4("127.0.0.1"), 8765)
    for bad in ("0100007F", "0100007F:22", "100007F:223D", "XYZ0007F:223D", ""):
        with pytest.raises(ValueError):
            parse_address(bad, "little")


def test_parse_line_columns_header_and_garbage() -> None:
    assert parse_line(HEADER, "little") is None
    assert parse_line("", "little") is None
    assert parse_line("   3: 0100007F:223D garbage", "little") is None
    e = parse_line(V4_CLIENT, "little")
    assert e == SocketEntry(local=(V4("127.0.0.1"), 40000), remote=(V4("127.0.0.1"), 8765), state=1, uid=1000, inode=5002)
    v6 = parse_line(V6_CLIENT, "little")
    assert v6 is not None and v6.uid == NOBODY and v6.local == (V6("::1"), 40000)


def test_find_peer_is_the_reverse_entry_and_skips_orphans() -> None:
    server_local, server_remote = (V4("127.0.0.1"), 8765), (V4("127.0.0.1"), 40000)
    table = [HEADER, V4_SERVER, V4_ORPHAN, V4_CLIENT]
    hit = find_peer(table, server_local, server_remote, "little")
    assert hit is not None and hit.uid == 1000 and hit.inode == 5002  # not the server's own row (uid 0)
    # the orphan (inode 0, e.g. TIME_WAIT, printed with uid 0) is never an owner
    assert find_peer(table, server_local, (V4("127.0.0.1"), 40001), "little") is None
    assert find_peer([HEADER, V4_SERVER], server_local, server_remote, "little") is None
    six = find_peer([HEADER, V6_CLIENT], (V6("::1"), 8765), (V6("::1"), 40000), "little")
    assert six is not None and six.uid == NOBODY
    # an IPv4 connection whose client made a dual-stack socket: found in tcp6 under mapped addresses
    mapped = find_peer([HEADER, MAPPED_CLIENT], server_local, server_remote, "little")
    assert mapped is not None and mapped.uid == 1000


def test_tables_and_unknown_addresses() -> None:
    assert peercred.tables_for((V4("127.0.0.1"), 1), (V4("127.0.0.1"), 2)) == ("tcp", "tcp6")
    assert peercred.tables_for((V6("::1"), 1), (V6("::1"), 2)) == ("tcp6",)
    assert peercred.normalize_ip("::ffff:127.0.0.1") == V4("127.0.0.1")
    assert peercred.peer_uid(None, None) is None
    assert peercred.peer_uid("/run/x.sock", "") is None
    assert peercred.peer_uid(("127.0.0.1", 1), ("127.0.0.1", 2), proc_net="/nonexistent") is None


# ------------------------------------------------------------------ the real table


def _pair(family: int, bind: str, connect: str) -> tuple[socket.socket, socket.socket, socket.socket]:
    ls = socket.socket(family)
    ls.bind((bind, 0))
    ls.listen(8)
    client = socket.socket(socket.AF_INET6 if ":" in connect else socket.AF_INET)
    client.connect((connect, ls.getsockname()[1]))
    server, _ = ls.accept()
    return ls, client, server


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    ("family", "bind", "connect"),
    [
        (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
        (socket.AF_INET6, "::1", "::1"),
        (socket.AF_INET6, "::", "127.0.0.1"),  # dual-stack server, IPv4 client: mapped addresses
        (socket.AF_INET, "127.0.0.1", "::ffff:127.0.0.1"),  # IPv6 client socket, IPv4 server
    ],
    ids=["ipv4", "ipv6", "mapped-server", "mapped-client"],
)
def test_real_lookup_finds_our_own_uid(family: int, bind: str, connect: str) -> None:
    if (family == socket.AF_INET6 or ":" in connect) and not _has_ipv6():
        pytest.skip("no IPv6 loopback")
    socks = _pair(family, bind, connect)
    try:
        server = socks[2]
        assert peercred.peer_uid(server.getsockname(), server.getpeername()) == os.geteuid()
        # a peer address no socket has: unknown, so not trusted
        gone = (server.getpeername()[0], 1)
        assert peercred.peer_uid(server.getsockname(), gone) is None
    finally:
        for s in socks:
            s.close()


def _attacker_python() -> str:
    """A Python that ``nobody`` can run (the venv may sit under a 0700 directory)."""
    for cand in ("/usr/bin/python3", sys.executable):
        if os.access(cand, os.X_OK):
            return cand
    pytest.skip("no python3 for the other user")


@pytest.fixture
def as_nobody() -> list[str]:
    """The command prefix that runs a Python as uid/gid 65534 with no groups."""
    if os.geteuid() != 0:
        pytest.skip("running a process as another user needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv missing (util-linux)")
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", _attacker_python()]


def test_real_lookup_sees_another_users_socket(as_nobody: list[str]) -> None:
    """A ``nobody`` process holds a connection open: the lookup names uid 65534."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]
    code = (
        f"import socket,sys; s=socket.create_connection(('127.0.0.1', {port})); sys.stdout.write('up\\n');"
        " sys.stdout.flush(); sys.stdin.read()"
    )
    proc = subprocess.Popen([*as_nobody, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/")
    try:
        ls.settimeout(20)
        server, _ = ls.accept()
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        assert peercred.peer_uid(server.getsockname(), server.getpeername()) == NOBODY
        server.close()
    finally:
        proc.kill()
        proc.wait(10)
        ls.close()


def test_lookup_among_a_thousand_sockets() -> None:
    """Correct among 1000 open connections (2000 rows); the time is printed (docs/security.md, 1)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1024)
    pairs: list[tuple[socket.socket, socket.socket]] = []
    try:
        for _ in range(1000):
            c = socket.create_connection(ls.getsockname())
            s, _ = ls.accept()
            pairs.append((c, s))
        rows = sum(1 for _ in open("/proc/net/tcp", encoding="ascii"))
        times = []
        for _, s in (pairs[0], pairs[500], pairs[-1]):
            t = time.perf_counter()
            assert peercred.peer_uid(s.getsockname(), s.getpeername()) == os.geteuid()
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert peercred.peer_uid(("127.0.0.1", 1), ("127.0.0.1", 2)) is None  # a miss reads both tables
        miss = time.perf_counter() - t
        print(f"peer lookup, {rows} rows in /proc/net/tcp: hit {max(times) * 1e3:.1f} ms (worst of 3), miss {miss * 1e3:.1f} ms")
    finally:
        for c, s in pairs:
            c.close()
            s.close()
        ls.close()


# ------------------------------------------------------------------ the attack


def _hello(token: str | None = None) -> str:
    auth = Auth("bearer", token) if token is not None else Auth("none")
    frame = P.encode_ctl(Hello(auth=auth, caps=HelloCaps("nimbus.v1")))
    assert isinstance(frame, str)
    return frame


async def _raw_as(
    prefix: list[str], port: int, hello: str, host: str = "127.0.0.1", max_frames: int = 0
) -> dict[str, Any]:
    """Run tests/support/rawws.py (its source via ``-c``) under ``prefix``; its JSON answer."""
    req = {
        "host": host, "port": port, "path": "/ws/ssh", "subprotocol": "nimbus.ssh.v1", "send": [hello],
        "timeout": 20, "max_frames": max_frames,
    }
    proc = await asyncio.create_subprocess_exec(
        *prefix, "-c", RAWWS.read_text(encoding="utf-8"), json.dumps(req),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, err.decode()
    res: dict[str, Any] = json.loads(out)
    return res


def _auth_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "auth"]


async def test_another_local_user_gets_4003_from_a_tokenless_server(
    make_server: Any, as_nobody: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nimbus_websocket.server")
    srv: Server = await make_server(pty_command="exec true")
    res = await _raw_as(as_nobody, srv.port, _hello())
    assert res["uid"] == NOBODY and res["status"] == 101
    assert res["close_code"] == CloseCode.AUTH_FAILED, res
    assert not any('"hello_ok"' in f for f in res["frames"]), res
    # a token it made up does not help either: the server has none to match
    res = await _raw_as(as_nobody, srv.port, _hello("guess"))
    assert res["close_code"] == CloseCode.AUTH_FAILED, res
    refused = [r for r in _auth_records(caplog) if not r.ok]
    assert len(refused) == 2 and all(r.peer_uid == NOBODY for r in refused)
    # (b) the server's own user still gets in without a token
    c = await WireClient.connect(srv.url)
    await c.hello()
    await c.close()
    ok = [r for r in _auth_records(caplog) if r.ok]
    assert ok and ok[-1].peer_uid == os.geteuid() and ok[-1].principal == "anonymous"


async def test_another_local_user_with_a_valid_token_passes(make_server: Any, as_nobody: list[str]) -> None:
    tok = "peer-tok-" + os.urandom(8).hex()
    srv: Server = await make_server(tokens=(tok,), pty_command="exec true")
    res = await _raw_as(as_nobody, srv.port, _hello(tok), max_frames=1)
    assert res["status"] == 101 and res["frames"] and '"hello_ok"' in res["frames"][0], res
    res = await _raw_as(as_nobody, srv.port, _hello())
    assert res["close_code"] == CloseCode.AUTH_FAILED, res
    # with a token configured the server's own user needs it too (no anonymous side door)
    c = await WireClient.connect(srv.url)
    await c.send(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v1")))
    assert await c.expect_close() == CloseCode.AUTH_FAILED


async def test_unknown_peer_uid_is_refused() -> None:
    """The policy on its own: anonymous needs a known UID equal to the server's."""
    pol = AuthPolicy(uid=1234)
    assert pol.anonymous_possible
    assert await pol.authenticate("none", None, peer_uid=1234) == "anonymous"
    assert await pol.authenticate("none", None, peer_uid=None) is None
    assert await pol.authenticate("none", None, peer_uid=0) is None
    assert await pol.authenticate("none", None) is None
    assert not AuthPolicy(("t",)).anonymous_possible
    assert not AuthPolicy(loopback=False).anonymous_possible
    assert await AuthPolicy(loopback=False, uid=5).authenticate("none", None, peer_uid=5) is None


# ------------------------------------------------------------------ non-loopback host


def _non_loopback_ip() -> str:
    """An address of this machine that is not loopback (0.0.0.0 when there is none)."""
    cands: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, contextlib.suppress(OSError):
        s.connect(("192.0.2.1", 9))  # picks the outgoing address; no packet is sent
        cands.append(s.getsockname()[0])
    with contextlib.suppress(OSError):
        cands += socket.gethostbyname_ex(socket.gethostname())[2]
    for ip in cands:
        if not ipaddress.ip_address(ip).is_loopback:
            try:
                with socket.socket() as t:
                    t.bind((ip, 0))
                return ip
            except OSError:
                continue
    return "0.0.0.0"


@pytest.fixture(scope="module")
def public_ip() -> Iterator[str]:
    yield _non_loopback_ip()


_TOKEN_URL = re.compile(r"open ((?:ws|http)://\S+\?token=([A-Za-z0-9_-]+))")


async def test_non_loopback_host_without_token_generates_one(public_ip: str, tmp_path: Path) -> None:
    connect_ip = "127.0.0.1" if public_ip == "0.0.0.0" else public_ip
    async with ServerProcess(["--host", public_ip, "--pty-command", "exec true"]) as sp:
        lines = [ln for ln in sp.lines if "?token=" in ln]
        assert len(lines) == 1, sp.lines
        m = _TOKEN_URL.search(lines[0])
        assert m is not None, lines[0]
        url, token = m.group(1), m.group(2)
        assert len(token) >= 43  # token_urlsafe(32): 256 bits
        assert url.startswith("ws://") and f":{sp.port}/ws/ssh?token=" in url
        ws_url = f"ws://{connect_ip}:{sp.port}/ws/ssh"
        # anonymous: refused, even for the server's own user
        c = await WireClient.connect(ws_url)
        await c.send(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v1")))
        assert await c.expect_close() == CloseCode.AUTH_FAILED
        # the printed token works
        c = await WireClient.connect(ws_url)
        await c.hello(token)
        await c.close()
        # and so does the printed URL itself, as `nimbus-ws connect` takes it
        printed = url if public_ip != "0.0.0.0" else f"{ws_url}?token={token}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nimbus_websocket", "connect", printed, "-T",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
    # with a static directory the line names the page, which reads ?token= (demo_site/app.mjs)
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>")
    async with ServerProcess(["--host", public_ip, "--static", str(tmp_path)]) as sp:
        lines = [ln for ln in sp.lines if "?token=" in ln]
        assert len(lines) == 1 and re.search(rf"open http://\S+:{sp.port}/\?token=[A-Za-z0-9_-]{{43,}}", lines[0]), sp.lines


# ------------------------------------------------------------------ root


async def test_running_as_root_warns_that_every_shell_is_a_root_shell(
    make_server: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="nimbus_websocket.server")
    if os.geteuid() != 0:
        monkeypatch.setattr(os, "geteuid", lambda: 0)
    await make_server()
    warned = [r for r in caplog.records if getattr(r, "event", None) == "running_as_root"]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert "every shell is a root shell" in warned[0].getMessage()
    caplog.clear()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    await make_server()
    assert not [r for r in caplog.records if getattr(r, "event", None) == "running_as_root"]
