"""The browser runtime in Pyodide (Node and Chromium) against real servers on 127.0.0.1.

The reference server runs as a child process (``nimbus-ws serve --port 0
--pty-command 'exec /bin/sh'``): a channel opened without ``term`` is ``sh``
on pipes (byte-exact output, separate stderr), with ``term`` ``sh`` on a PTY.
The backpressure test uses :class:`~web.web_servers.StallServer`, which stops
reading once the client granted credit.  The servers' URLs are passed to the
Pyodide code as arguments; helpers travel as source (``web_helpers_src``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_pyodide import run_in_pyodide
from web.web_servers import ServeProcess, StallServer

pytestmark = pytest.mark.timeout(120)

HELPERS = Path(__file__).resolve().parents[1] / "web" / "pyodide_helpers.py"


@pytest.fixture(scope="module")
def web_helpers_src() -> str:
    """Source of tests/web/pyodide_helpers.py (executed inside Pyodide)."""
    return HELPERS.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def sh_server(web_server_main: tuple[str, int, Any]) -> Iterator[ServeProcess]:
    """The reference server; channels run ``/bin/sh``.  The test pages come from
    pytest-pyodide's web server, another origin: allow-listed (docs/security.md, 2)."""
    host, port, _ = web_server_main
    with ServeProcess("--pty-command", "exec /bin/sh", "--allow-origin", f"http://{host}:{port}") as srv:
        yield srv


# ------------------------------------------------------------------ session


@run_in_pyodide
async def _session_roundtrip(selenium: Any, helpers_src: str, url: str) -> dict[str, Any]:
    import types

    from nimbus_websocket.web_runtime import ResumeOptions, WebConnection, connect

    h = types.ModuleType("h")
    exec(helpers_src, h.__dict__)
    rec = h.Recorder()
    conn = await connect(url, resume=ResumeOptions(storage="memory"), on=rec.listeners())
    assert isinstance(conn, WebConnection)
    result: dict[str, Any] = {
        "state": conn.state,
        "protocol": conn.protocol,
        "profile": conn.profile,
    }

    # Pipes: input in, stdout and stderr out byte-exact, more than one credit window, exit code.
    out, err = bytearray(), bytearray()
    ch = await conn.open_session(h.TARGET, h.USER, on={"data": out.extend, "stderr": err.extend})
    await ch.send(
        b"printf 'a\\000b\\377'; echo oops >&2; head -c 600000 /dev/zero | tr '\\000' x; exit 3\n"
    )
    result["exit"] = await ch.wait_closed()
    result["out_ok"] = bytes(out) == b"a\x00b\xff" + b"x" * 600_000
    result["out_len"] = len(out)
    result["err"] = bytes(err).decode()

    # PTY: resize reaches the terminal, signals, str input.
    screen = bytearray()
    pty = await conn.open_session(
        h.TARGET, h.USER, {"cols": 80, "rows": 24}, on={"data": screen.extend}
    )
    pty.resize(101, 33)
    await pty.send("stty size\n")
    await h.wait_for(lambda: b"33 101" in screen, 10, "stty size output")
    # The job prints a marker once it runs in the foreground (the quotes keep
    # the echo of the typed line from matching it), so INT cannot be lost.
    await pty.send("sh -c 'echo job-sta\"\"rted; exec sleep 30'\n")
    await h.wait_for(lambda: b"job-started" in screen, 10, "the job to start")
    await pty.signal("INT")
    await pty.send("exit 7\n")
    result["pty_exit"] = await pty.wait_closed()

    result["rtt_is_number_or_none"] = conn.rtt_ms is None or conn.rtt_ms >= 0
    result["buffered"] = conn.buffered_amount
    await conn.close()
    result["closed_state"] = conn.state
    result["codes"] = rec.codes()
    result["diag_extras"] = sorted(set(rec.diags[-1]) & {"buffered_amount", "rtt_ms"})
    result["grants"] = sum(1 for k, _ in rec.kinds() if k == "credit_grant")
    result["sockets"] = conn.sockets_opened
    result["live_proxies"] = conn.socket.live_proxies
    return result


def test_handshake_open_data_resize_signal_exit(
    selenium_nimbus: Any, web_helpers_src: str, sh_server: ServeProcess
) -> None:
    r = _session_roundtrip(selenium_nimbus, web_helpers_src, sh_server.url)
    assert (r["state"], r["protocol"], r["profile"]) == ("ready", "nimbus.ssh.v1", "nimbus.v1")
    assert r["exit"] == 3
    assert r["out_ok"], r["out_len"]
    assert r["err"] == "oops\n"
    assert r["pty_exit"] == 7
    assert r["closed_state"] == "closed"
    codes = r["codes"]
    for code in ("transport_selected", "hello_sent", "hello_ok", "resume_store_clear"):
        assert code in codes, codes
    if selenium_nimbus.browser == "node":
        # Node has no WebSocketStream and no sessionStorage: both reported.
        assert "websocketstream_unavailable" in codes
        assert "resume_store_unavailable" not in codes  # memory was asked for explicitly
    assert r["diag_extras"] == ["buffered_amount", "rtt_ms"]
    assert r["grants"] >= 3  # 600 kB through a 256 KiB window
    assert (r["sockets"], r["live_proxies"]) == (1, 0)
    assert r["rtt_is_number_or_none"] and r["buffered"] >= 0


# ------------------------------------------------------------ reconnect


@run_in_pyodide
async def _reconnect(selenium: Any, helpers_src: str, url: str) -> dict[str, Any]:
    import types

    from nimbus_websocket.web_runtime import BrowserWebSocket, ResumeOptions, RetryOptions, connect

    h = types.ModuleType("h")
    exec(helpers_src, h.__dict__)
    rec = h.Recorder()
    sockets: list[BrowserWebSocket] = []

    def factory(u: str, protocols: list[str]) -> BrowserWebSocket:
        s = BrowserWebSocket(u, protocols)
        sockets.append(s)
        return s

    conn = await connect(
        url,
        resume=ResumeOptions(storage="memory"),
        retry=RetryOptions(base_ms=20, max_delay_ms=100),
        socket_factory=factory,
        on=rec.listeners(),
    )
    out = bytearray()
    ch = await conn.open_session(h.TARGET, h.USER, on={"data": out.extend})
    await ch.send(b"echo ready; exec cat\n")  # sh reads ahead: send the rest once cat runs
    await h.wait_for(lambda: bytes(out) == b"ready\n", 10, "cat to start")
    await ch.send(b"one\n")
    await h.wait_for(lambda: bytes(out) == b"ready\none\n", 10, "first echo")
    for i in range(3):  # three drops, each resumed exactly once
        sockets[-1].abort("test drop")
        await h.wait_for(
            lambda n=i: len(sockets) == n + 2 and conn.state == "ready", 10, "reconnect"
        )
    await ch.send(b"two\n")
    await h.wait_for(lambda: bytes(out) == b"ready\none\ntwo\n", 10, "echo after the drops")
    old_proxies = [s.live_proxies for s in sockets[:-1]]
    await conn.close()
    return {
        "out": bytes(out).decode(),
        "old_proxies": old_proxies,
        "last_proxies": sockets[-1].live_proxies,
        "states": rec.states,
        "resumed": rec.codes().count("resume_accepted"),
        "channel_state": ch.state,
    }


def test_socket_drops_resume_and_proxies_are_destroyed(
    selenium_nimbus: Any, web_helpers_src: str, sh_server: ServeProcess
) -> None:
    r = _reconnect(selenium_nimbus, web_helpers_src, sh_server.url)
    assert r["out"] == "ready\none\ntwo\n"
    assert r["resumed"] == 3
    assert r["states"].count("reconnecting") == 3
    assert r["old_proxies"] == [0, 0, 0]  # no proxy leak across reconnects
    assert r["last_proxies"] == 0
    assert r["channel_state"] == "closed"


# --------------------------------------------------------- backpressure


@run_in_pyodide
async def _backpressure(selenium: Any, helpers_src: str, url: str, ctl_url: str) -> dict[str, Any]:
    import asyncio
    import types

    from nimbus_websocket.web_runtime import ResumeOptions, connect

    h = types.ModuleType("h")
    exec(helpers_src, h.__dict__)
    # The contract's marks (8 MiB / 2 MiB).  The pause comes from one synchronous burst of
    # sends (bufferedAmount grows at once, nothing drains meanwhile); the 6 MiB between the
    # marks is more than the kernel can still absorb (client send buffer <= 4 MiB, the
    # server's receive buffer is tiny), so the pause holds until the server reads again.
    hwm, lwm = 8 << 20, 2 << 20
    rec = h.Recorder()
    conn = await connect(url, resume=ResumeOptions(storage="none"), on=rec.listeners())
    assert (conn.session.options.high_water_mark, conn.session.options.low_water_mark) == (hwm, lwm)
    got = bytearray()
    ch = await conn.open_session(h.TARGET, h.USER, on={"data": got.extend})
    await h.wait_for(lambda: ("credit_grant", None) in rec.kinds(), 10, "the first credit grant")
    granted0 = conn.session.channel(ch.id).credit.granted

    chunk = b"z" * (64 * 1024)
    progress = {"sent": 0}

    async def flood() -> None:
        for _ in range(1024):  # at most 64 MiB
            await ch.send(chunk)
            progress["sent"] += len(chunk)

    sender = asyncio.ensure_future(flood())
    # Bytes the server never reads pile up in bufferedAmount: transport pause, send waits.
    await h.wait_for(lambda: "transport" in conn.pause_reasons, 30, "transport pause")
    pauses_at = rec.kinds().count(("flow_pause", "transport"))
    high = [d for d in rec.diags if d["code"] == "backpressure_high"]
    sent_at_pause = progress["sent"]

    # Output consumed while paused earns no credit (160 KiB of a 256 KiB window: a grant would be due).
    assert (await h.ctl(ctl_url, f"send {160 * 1024}")) == "ok"
    await h.wait_for(lambda: len(got) == 160 * 1024, 10, "output while paused")
    still_paused = "transport" in conn.pause_reasons
    granted_while_paused = conn.session.channel(ch.id).credit.granted
    sent_while_paused = progress["sent"]
    pauses_before_drain = rec.kinds().count(("flow_pause", "transport"))

    # The server reads again: bufferedAmount falls below the low-water mark, credit resumes.
    assert (await h.ctl(ctl_url, "drain")) == "ok"
    await h.wait_for(lambda: sender.done(), 60, "the flood to finish")
    await h.wait_for(
        lambda: conn.buffered_amount < lwm and not conn.pause_reasons, 30, "flow resume"
    )
    await h.wait_for(
        lambda: conn.session.channel(ch.id).credit.granted > granted0, 10, "the deferred grant"
    )
    kinds = rec.kinds()
    await conn.close(4000)
    return {
        "granted0": granted0,
        "granted_while_paused": granted_while_paused,
        "still_paused": still_paused,
        "sent_at_pause": sent_at_pause,
        "sent_while_paused": sent_while_paused,
        "pauses_at": pauses_at,
        "pauses_before_drain": pauses_before_drain,
        "high_buffered": [d["buffered_amount"] for d in high],
        "resume_after": ("flow_resume", "transport") in kinds,
        "low": rec.codes().count("backpressure_low"),
        "sender_error": None if sender.exception() is None else repr(sender.exception()),
        "sent": progress["sent"],
    }


@pytest.fixture
def stall_server() -> Iterator[StallServer]:
    """A server that stops reading once the client granted credit."""
    with StallServer() as srv:
        yield srv


def test_buffered_amount_over_high_water_pauses_credit(
    selenium_nimbus: Any, web_helpers_src: str, stall_server: StallServer
) -> None:
    r = _backpressure(selenium_nimbus, web_helpers_src, stall_server.url, stall_server.ctl_url)
    hwm = 8 << 20
    assert r["pauses_at"] == 1 and r["high_buffered"] and max(r["high_buffered"]) > hwm, r
    assert r["still_paused"], r
    # No new credit while paused, even though 160 KiB were consumed; and send() waited.
    assert r["granted_while_paused"] == r["granted0"], r
    assert r["sent_while_paused"] == r["sent_at_pause"], r
    assert r["pauses_before_drain"] == r["pauses_at"], r  # no flapping while the server stalled
    assert r["resume_after"] and r["low"] >= 1, r
    assert r["sender_error"] is None and r["sent"] == 64 * 1024 * 1024, r
    assert stall_server.stats["bytes_in"] >= 64 * 1024 * 1024


# -------------------------------------------------------------- verify


@run_in_pyodide
async def _verify(selenium: Any, helpers_src: str, url: str) -> dict[str, Any]:
    import types

    from nimbus_websocket.web_runtime import BrowserWebSocket, ResumeOptions, RetryOptions, connect

    h = types.ModuleType("h")
    exec(helpers_src, h.__dict__)

    class SilentSocket(BrowserWebSocket):
        """Drops everything it receives once ``silent``: a dead network, as an open socket sees it."""

        silent = False

        def _js_message(self, data: Any) -> None:
            if not self.silent:
                super()._js_message(data)

    sockets: list[SilentSocket] = []

    def factory(u: str, protocols: list[str]) -> SilentSocket:
        sockets.append(SilentSocket(u, protocols))
        return sockets[-1]

    rec = h.Recorder()
    conn = await connect(
        url,
        resume=ResumeOptions(storage="memory"),
        retry=RetryOptions(base_ms=20, max_delay_ms=100),
        verify_timeout=0.3,
        socket_factory=factory,
        on=rec.listeners(),
    )
    out = bytearray()
    ch = await conn.open_session(h.TARGET, h.USER, on={"data": out.extend})
    await ch.send(b"echo ready; exec cat\n")
    await h.wait_for(lambda: bytes(out) == b"ready\n", 10, "cat to start")

    conn.verify("test")  # a live socket answers the ping
    await h.wait_for(lambda: "connection_verified" in rec.codes(), 10, "verified")

    sockets[0].silent = True
    conn.verify("test")  # nothing comes back: dropped after 0.3 s, reconnected, resumed
    await h.wait_for(lambda: "connection_verify_failed" in rec.codes(), 10, "verify failure")
    await h.wait_for(lambda: len(sockets) == 2 and conn.state == "ready", 10, "reconnect")
    await ch.send(b"after\n")
    await h.wait_for(lambda: bytes(out) == b"ready\nafter\n", 10, "echo after the resume")
    await conn.close()
    return {
        "codes": rec.codes(),
        "states": rec.states,
        "proxies": [s.live_proxies for s in sockets],
    }


def test_verify_drops_a_silent_socket_and_resumes(
    selenium_nimbus: Any, web_helpers_src: str, sh_server: ServeProcess
) -> None:
    r = _verify(selenium_nimbus, web_helpers_src, sh_server.url)
    codes = r["codes"]
    assert codes.count("connection_suspect") == 2
    assert codes.count("connection_verified") == 1 and codes.count("connection_verify_failed") == 1
    assert codes.count("resume_accepted") == 1
    assert (
        r["states"][-3:] == ["authenticating", "ready", "closed"] and "reconnecting" in r["states"]
    )
    assert r["proxies"] == [0, 0]
