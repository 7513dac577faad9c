"""Share links (issue 18) against the real server: owner and viewers over real WebSockets, real shells.

Read-only and read-write viewers, a late join during vim (the screen, not a
tail of bytes), a slow viewer while the owner streams 100 MB, revocation
(4016), a viewer's own network drop (resume), and what a share token can
never do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pyte
import pytest
from nimbus_websocket.core import Open, OpenErr, Target, Term, User
from nimbus_websocket.core.aio import ChannelError
from nimbus_websocket.core.errors import CloseError
from nimbus_websocket.core.share import MAX_GRANTS_PER_CHANNEL
from nimbus_websocket.node_runtime import RetryOptions, WebsocketsImpl, connect
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.server import Server
from nimbus_websocket.node_runtime.server.share_hub import (
    MAX_BACKLOG,
    VIEW_MAX_PENDING,
    ShareHub,
    _Screen,
)

try:  # tests/ as a rootless directory (default) or as a package
    from support.proxy import TcpProxy, wait_until
except ImportError:  # pragma: no cover
    from tests.support.proxy import TcpProxy, wait_until

pytestmark = pytest.mark.timeout(90)

T = {"host": "localhost", "port": 22}
U = {"username": "owner"}
SHELL = "exec bash --norc --noprofile -i"
MakeServer = Callable[..., Awaitable[Server]]


def term(cols: int = 80, rows: int = 24) -> dict[str, Any]:
    return {"cols": cols, "rows": rows, "env": {"TERM": "xterm-256color"}}


def screen_of(data: bytes, cols: int = 80, rows: int = 24) -> list[str]:
    """What a terminal shows after ``data`` (pyte, with the server's tolerant screen)."""
    s = _Screen(cols, rows)
    pyte.ByteStream(s).feed(data)
    return [line.rstrip() for line in s.display]


async def until(buf: bytearray, needle: bytes, timeout: float = 15) -> None:
    assert await wait_until(lambda: needle in buf, timeout), (
        f"{needle!r} never arrived; got ...{bytes(buf[-300:])!r}"
    )


async def viewer_of(srv: Server, token: str, **kw: Any) -> Any:
    return await connect(
        srv.url,
        websocket_impl=WebsocketsImpl,
        auth=lambda: {"scheme": "bearer", "token": token},
        **kw,
    )


async def test_owner_with_a_read_only_and_a_read_write_viewer(make_server: MakeServer) -> None:
    srv = await make_server(pty_command=SHELL)
    owner = await connect(srv.url, websocket_impl=WebsocketsImpl)
    out = bytearray()
    ch = await owner.open_session(T, U, term(100, 30), on={"data": out.extend})
    await ch.send("echo ready-$((6*7))\n")
    await until(out, b"ready-42")
    watchers: list[Any] = []
    ch.on("viewers", watchers.append)
    ro, rw = await ch.share("read"), await ch.share("write", ttl=600)
    assert ro.mode == "read" and rw.mode == "write" and ro.token != rw.token
    assert rw.expires - time.time() == pytest.approx(600, abs=5)
    v1, v2 = await viewer_of(srv, ro.token), await viewer_of(srv, rw.token)
    got1, got2 = bytearray(), bytearray()
    c1 = await v1.open_session(T, {"username": "v1"}, term(), on={"data": got1.extend})
    c2 = await v2.open_session(T, {"username": "v2"}, term(), on={"data": got2.extend})
    await until(got1, b"ready-42")  # the screen as it is, first
    await until(got2, b"ready-42")
    assert await wait_until(lambda: c1.term_size == (100, 30) and c2.term_size == (100, 30), 10)
    assert await wait_until(lambda: len(ch.viewers) == 2, 10)
    assert sorted(v.mode for v in ch.viewers) == ["read", "write"] and {
        v.grant for v in ch.viewers
    } == {ro.grant, rw.grant}
    # Read-only input, and any viewer's resize, are refused without a disconnect.
    await c1.send("echo from-ro-$((1+1))\n")
    c1.resize(40, 10)
    c2.resize(50, 12)
    await c2.send("echo from-rw-$((2+2))\n")  # the read-write viewer types into the owner's shell
    await until(out, b"from-rw-4")
    await until(got1, b"from-rw-4")
    await ch.send("stty size\n")
    await until(out, b"30 100")  # the owner's size rules
    assert b"from-ro-2" not in out and v1.state == "ready"
    await ch.send("echo live-$((7*7))\n")
    for buf in (out, got1, got2):
        await until(buf, b"live-49")
    await v1.close()
    assert await wait_until(lambda: len(ch.viewers) == 1, 10)
    await v2.close()
    await owner.close()
    assert watchers  # the owner heard of every change


async def test_a_late_joiner_during_vim_sees_vims_screen(make_server: MakeServer) -> None:
    srv = await make_server(pty_command="exec vim -N -u NONE -i NONE --noplugin -n")
    owner = await connect(srv.url, websocket_impl=WebsocketsImpl)
    out = bytearray()
    ch = await owner.open_session(T, U, term(), on={"data": out.extend})
    await until(out, b"~")
    await ch.send("ifirst line\nsecond line\x1b")
    await until(out, b"second line")
    await ch.send(":set number\r")
    assert await wait_until(lambda: "  2 second line" in screen_of(bytes(out))[1], 10)
    link = await ch.share("read")
    viewer = await viewer_of(srv, link.token)
    got = bytearray()
    await viewer.open_session(T, {"username": "late"}, term(), on={"data": got.extend})
    want = screen_of(bytes(out))
    assert await wait_until(lambda: screen_of(bytes(got)) == want, 10), (
        screen_of(bytes(got)),
        want,
    )
    # Then live: what the owner does next shows up the same on both.
    await ch.send("Othird line\x1b")
    await until(out, b"third line")
    assert await wait_until(lambda: screen_of(bytes(got)) == screen_of(bytes(out)), 10)
    await viewer.close()
    await ch.send(":q!\r")
    await owner.close()


async def test_a_slow_viewer_never_slows_the_owner_and_ends_on_the_right_screen(
    make_server: MakeServer,
) -> None:
    srv = await make_server(pty_command=SHELL)
    size = 100_000_000
    stream = f"head -c {size} /dev/zero | tr '\\0' x; echo; echo done-$((6*7))\n"

    async def owner_run(viewer: bool) -> tuple[float, bytes, Any]:
        owner = await connect(srv.url, websocket_impl=WebsocketsImpl)
        tail = bytearray()  # the last bytes, for markers
        truth = _Screen(
            80, 24
        )  # the owner's own screen, every byte fed (long plain runs are cheap)
        feed = pyte.ByteStream(truth).feed
        pending = bytearray()

        def on_data(d: bytes) -> None:
            tail.extend(d)
            del tail[: max(0, len(tail) - MAX_BACKLOG)]
            pending.extend(d)
            if len(pending) > 4 << 20:
                feed(bytes(pending))
                pending.clear()

        ch = await owner.open_session(T, U, term(), on={"data": on_data})
        await ch.send("stty -echo; echo go-$((1+1))\n")
        await until(tail, b"go-2")
        slow = None
        if viewer:
            link = await ch.share("read")
            slow = await viewer_of(srv, link.token)
            got = bytearray()

            async def sip(
                d: bytes,
            ) -> None:  # 64 KiB/s: consumption earns credit, so this is its pace
                got.extend(d)
                await asyncio.sleep(len(d) / 65536)

            vch = await slow.open_session(T, {"username": "slow"}, term(), on={"data": sip})
            assert await wait_until(lambda: b"go-2" in got, 10)
            slow = (slow, vch, got)
        t0 = time.monotonic()
        await ch.send(stream)
        assert await wait_until(lambda: b"done-42" in tail, 60)
        took = time.monotonic() - t0
        if slow is not None:
            hub = next(s.hub for s in srv._sinks.values() if s.hub is not None)
            assert isinstance(hub, ShareHub)
            assert (
                hub.model.dropped > 0
            )  # the model lagged and dropped, instead of slowing the owner
            (view,) = hub.viewers
            assert (
                view.skips >= 1
            )  # it fell behind and skips ahead (a snapshot follows once it drained)
            vsink = next(s for s in srv._sinks.values() if s.session.view is not None)
            assert vsink.unsent() <= VIEW_MAX_PENDING + (1 << 20)  # bounded: never the 100 MB
        feed(bytes(pending))
        return took, [line.rstrip() for line in truth.display], (owner, slow)

    solo, _, (o1, _) = await owner_run(False)
    await o1.close()
    shared, want, (o2, slow) = await owner_run(True)
    print(
        f"\nowner streams 100 MB: alone {size / solo / 1e6:.0f} MB/s, with a 64 KiB/s viewer {size / shared / 1e6:.0f} MB/s"
    )
    # Not tied to the viewer's pace: an owner held back by a 64 KiB/s viewer would need
    # ~25 min for the 100 MB.  A ratio to the solo run is no floor here (on 2 loaded cores
    # the shared run also carries the share model: 3.4x slower was seen, CPU-starved);
    # the owner-vs-alone figure (target 0.9x) is measured in bench/share.py.
    assert size / shared > 50 * 65536, (solo, shared)
    slow_conn, vch, got = slow
    assert want[-3:] == ["x" * 80, "done-42", "bash-5.2#"] or "done-42" in want[-2], want[-4:]
    ok = await wait_until(lambda: screen_of(bytes(got)) == want, 30)
    assert ok, (screen_of(bytes(got))[-4:], want[-4:])
    await slow_conn.close()
    await o2.close()


async def test_revoking_or_expiry_closes_the_viewer_with_4016_and_the_link_stops_working(
    make_server: MakeServer,
) -> None:
    srv = await make_server(pty_command=SHELL)
    owner = await connect(srv.url, websocket_impl=WebsocketsImpl)
    ch = await owner.open_session(T, U, term())
    link = await ch.share("read")
    viewer = await viewer_of(srv, link.token, retry=RetryOptions(max_retries=2, base_ms=20))
    await viewer.open_session(T, {"username": "v"}, term())
    assert await wait_until(lambda: len(ch.viewers) == 1, 10)
    ch.unshare(link.grant)
    err = await asyncio.wait_for(viewer.wait_closed(), 10)
    assert isinstance(err, CloseError) and err.ws_code == 4016 and "revoked" in err.message
    assert await wait_until(lambda: ch.viewers == (), 10)
    with pytest.raises(CloseError) as ei:  # the token is dead for good
        await viewer_of(srv, link.token)
    assert ei.value.ws_code == 4003 and "share link" in ei.value.message
    # A short link expires on its own.
    short = await ch.share("read", ttl=1)
    late = await viewer_of(srv, short.token)
    await late.open_session(T, {"username": "v"}, term())
    err = await asyncio.wait_for(late.wait_closed(), 10)
    assert isinstance(err, CloseError) and err.ws_code == 4016 and "expired" in err.message
    # The owner's session never noticed.
    assert owner.state == "ready" and ch.state == "open"
    await owner.close()


async def test_a_viewer_survives_its_own_network_drop(make_server: MakeServer) -> None:
    srv = await make_server(pty_command=SHELL)
    owner = await connect(srv.url, websocket_impl=WebsocketsImpl)
    ch = await owner.open_session(T, U, term())
    link = await ch.share("read")
    proxy = await TcpProxy(srv.port).start()
    states: list[str] = []
    viewer = await connect(
        f"ws://127.0.0.1:{proxy.port}/ws/ssh",
        websocket_impl=WebsocketsImpl,
        auth=lambda: {"scheme": "bearer", "token": link.token},
        retry=RetryOptions(base_ms=20, max_delay_ms=200),
        on={"statechange": lambda e: states.append(e.new)},
    )
    got = bytearray()
    vch = await viewer.open_session(T, {"username": "v"}, term(), on={"data": got.extend})
    await ch.send("echo one-$((1*11))\n")
    await until(got, b"one-11")
    proxy.cut()
    assert await wait_until(lambda: "reconnecting" in states and viewer.state == "ready", 15)
    await ch.send("echo two-$((2*11))\n")
    await until(got, b"two-22")
    assert vch.state == "open" and len(ch.viewers) == 1
    await viewer.close()
    await owner.close()
    await proxy.stop()


async def test_a_share_token_opens_only_its_terminal(make_server: MakeServer) -> None:
    srv = await make_server(pty_command=SHELL)
    owner = await connect(srv.url, websocket_impl=WebsocketsImpl)
    ch = await owner.open_session(T, U, term())
    link = await ch.share("write")
    # Raw wire: the viewer's hello_ok offers nothing beyond the view.
    w = await WireClient.connect(srv.url)
    ok = await w.hello(token=link.token)
    assert (
        ok.caps.view == "write" and not ok.caps.files and not ok.caps.share and not ok.caps.command
    )
    await w.open(1, term=Term(80, 24, {}))
    for extra in ({"command": "id"}, {}):  # a second channel, a command: refused
        await w.send(Open(2, Target("localhost", 22), User("x"), Term(80, 24, {}), **extra))
        m = await w.until(lambda m: isinstance(m, OpenErr) and m.id == 2)
        assert isinstance(m, OpenErr) and m.code == "POLICY_DENIED"
    await w.close()
    viewer = await viewer_of(srv, link.token)
    vch = await viewer.open_session(T, {"username": "v"}, term())
    with pytest.raises(ChannelError):  # a viewer cannot share what it watches
        await vch.share("read")
    await viewer.close()
    # Limits: at most MAX_GRANTS_PER_CHANNEL links per terminal (one is in use above).
    for _ in range(MAX_GRANTS_PER_CHANNEL - 1):
        await ch.share("read")
    with pytest.raises(ChannelError) as ei:
        await ch.share("read")
    assert ei.value.code == "CHANNEL_LIMIT"
    await owner.close()
    # A server with sharing off says so up front.
    off = await make_server(pty_command=SHELL, share=False)
    o2 = await connect(off.url, websocket_impl=WebsocketsImpl)
    c2 = await o2.open_session(T, U, term())
    with pytest.raises(ChannelError) as ei:
        await c2.share("read")
    assert ei.value.code == "UNSUPPORTED"
    await o2.close()


async def test_nimbus_ws_share_and_connect_share(make_server: MakeServer) -> None:
    """The CLI pair: `nimbus-ws share` prints a link; `nimbus-ws connect --share LINK` watches."""
    import os
    import re
    import sys

    srv = await make_server(pty_command=SHELL)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nimbus_websocket",
        "share",
        srv.url,
        "--ttl",
        "600",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    viewer = None
    try:
        assert owner.stdin is not None and owner.stderr is not None and owner.stdout is not None
        lines: list[str] = []
        while not any("connect --share" in ln for ln in lines):
            line = await asyncio.wait_for(owner.stderr.readline(), 20)
            assert line, f"share ended early: {lines}"
            lines.append(line.decode())
        page = next(ln for ln in lines if "share link (read-only" in ln)
        assert re.search(r"http://127\.0\.0\.1:\d+/\?share=nshare\.", page), page
        link = re.search(r"--share '([^']+)'", "".join(lines))
        assert link is not None
        owner.stdin.write(b"echo owner-says-$((6*7))\n")
        await owner.stdin.drain()
        viewer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nimbus_websocket",
            "connect",
            "--share",
            link.group(1),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert viewer.stdout is not None and viewer.stdin is not None and viewer.stderr is not None
        seen = bytearray()
        while b"owner-says-42" not in seen:
            chunk = await asyncio.wait_for(viewer.stdout.read(4096), 20)
            assert chunk, f"viewer ended early: {bytes(seen)!r}"
            seen += chunk
        note = await asyncio.wait_for(viewer.stderr.readline(), 10)
        assert b"read-only" in note, note
        joined = await asyncio.wait_for(owner.stderr.readline(), 10)
        assert b"viewer joined" in joined, joined
        viewer.stdin.write(b"echo viewer-typed-$((1+1))\n")  # read-only: not sent
        owner.stdin.write(b"echo after-$((7*7))\n")
        await viewer.stdin.drain()
        await owner.stdin.drain()
        while b"after-49" not in seen:
            chunk = await asyncio.wait_for(viewer.stdout.read(4096), 20)
            assert chunk
            seen += chunk
        assert b"viewer-typed-2" not in seen
    finally:
        for p in (viewer, owner):
            if p is not None and p.returncode is None:
                p.kill()
                await p.wait()
