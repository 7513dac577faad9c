"""HTTP side, auth, origin, metrics, resume and shutdown of the reference server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from nimbus_websocket.core import (
    Auth,
    CloseCode,
    DataFrame,
    Flow,
    Hello,
    HelloCaps,
    HelloOk,
    ResumeChannel,
    ResumeRequest,
)
from nimbus_websocket.node_runtime.conformance.wire import WireClient
from nimbus_websocket.node_runtime.server import Server
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.timeout(60)


def _http(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


async def test_static_files_with_mime_types(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "index.html").write_text("<h1>hi</h1>")
    (tmp_path / "a.mjs").write_text("export {}")
    (tmp_path / "x.wasm").write_bytes(b"\0asm")
    (tmp_path / "secret.txt").write_text("no")
    srv: Server = await make_server(static_dir=str(tmp_path / "."))
    base = f"http://127.0.0.1:{srv.port}"
    st, ct, body = await asyncio.to_thread(_http, base + "/")
    assert (st, body) == (200, b"<h1>hi</h1>") and ct.startswith("text/html")
    st, ct, _ = await asyncio.to_thread(_http, base + "/a.mjs")
    assert st == 200 and ct.startswith("text/javascript")
    st, ct, _ = await asyncio.to_thread(_http, base + "/x.wasm")
    assert st == 200 and ct == "application/wasm"
    st, _, _ = await asyncio.to_thread(_http, base + "/../../etc/passwd")
    assert st == 404
    st, _, _ = await asyncio.to_thread(_http, base + "/%2e%2e/%2e%2e/etc/passwd")
    assert st == 404


async def test_metrics_endpoint(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = await make_server(metrics=True, pty_command="exec bash --norc --noprofile -i")
    c = await WireClient.connect(srv.url)
    await c.hello()
    await c.open(1)
    await c.type(1, "echo m-$((1+1))\n")
    await c.until_output(1, b"m-2")
    st, ct, body = await asyncio.to_thread(_http, f"http://127.0.0.1:{srv.port}/metrics")
    text = body.decode()
    assert st == 200 and ct.startswith("text/plain")
    assert 'nimbus_bytes_total{direction="out",kind="data"}' in text
    assert "nimbus_connections 1.0" in text and "nimbus_channels 1.0" in text
    await c.close()


async def test_origin_allow_list(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = await make_server(allow_origins=("http://good.example",))
    with pytest.raises(InvalidStatus) as ei:
        await WireClient.connect(srv.url, origin="http://evil.example")
    assert ei.value.response.status_code == 403
    ok = await WireClient.connect(srv.url, origin="http://good.example")
    await ok.hello()
    await ok.close()


async def test_loopback_default_origin_is_same_host(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = await make_server()
    with pytest.raises(InvalidStatus):
        await WireClient.connect(srv.url, origin="http://evil.example")
    c = await WireClient.connect(srv.url, origin=f"http://127.0.0.1:{srv.port}")
    await c.hello()
    await c.close()


async def test_bearer_tokens(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = await make_server(tokens=("s3cret",))
    c = await WireClient.connect(srv.url)
    await c.send(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v1")))
    assert await c.expect_close() == 4003
    c = await WireClient.connect(srv.url)
    await c.send(Hello(auth=Auth("bearer", "wrong"), caps=HelloCaps("nimbus.v1")))
    assert await c.expect_close() == 4003
    c = await WireClient.connect(srv.url)
    await c.hello(token="s3cret")
    await c.close()


async def test_auth_hook_principal_binds_resume(make_server) -> None:  # type: ignore[no-untyped-def]
    async def hook(scheme: str, token: str | None) -> str | None:
        return {"alice-jwt": "alice", "bob-jwt": "bob"}.get(token or "")

    srv: Server = await make_server(auth_hook=hook)
    a = await WireClient.connect(srv.url)
    ok = await a.hello(token="alice-jwt")
    assert ok.resume is not None
    await a.close(4000)  # not 1000: the session is kept for resume
    b = await WireClient.connect(srv.url)
    await b.send(Hello(auth=Auth("bearer", "bob-jwt"), caps=HelloCaps("nimbus.v1", True), resume=ResumeRequest(ok.resume.token, ())))
    assert await b.expect_close() == 4011
    a2 = await WireClient.connect(srv.url)
    ok2 = await a2.hello(token="alice-jwt", resume=ResumeRequest(ok.resume.token, ()))
    assert ok2.caps.resumed == ()
    await a2.close()


async def test_resume_replays_exactly_what_was_missed(pty_server: Server) -> None:
    c = await WireClient.connect(pty_server.url)
    ok = await c.hello()
    assert ok.resume is not None
    opened = await c.open(1, credit=0)
    # A stream of numbered lines, consumed with explicit credit and acks.
    await c.type(1, "seq 1 200000 | tr '\\n' ' '; echo END\n")
    await c.send(Flow(1, 100_000))
    got = 0
    while got < 60_000:
        m = await c.recv()
        if isinstance(m, DataFrame):
            got += len(m.payload)
    await c.send(Flow(1, 0, ack=got))  # acknowledge some, then lose the rest in flight
    rx = got
    c.ws.transport.abort()  # the network drops: no close frame
    first = bytes(c.out[1])[:rx]
    r = await WireClient.connect(pty_server.url)
    ok2 = await r.hello(resume=ResumeRequest(ok.resume.token, (ResumeChannel(1, opened.resume_key or "", rx),)))
    assert ok2.caps.resumed is not None and [x.id for x in ok2.caps.resumed] == [1]
    await r.send(Flow(1, 4 << 20))
    await r.until_output(1, b"END", timeout=20)
    full = first + bytes(r.out[1])
    nums = full.split(b"seq 1 200000")[-1]
    tokens = [t for t in nums.replace(b"\r", b" ").replace(b"\n", b" ").split(b" ") if t.isdigit()]
    assert tokens == [str(i).encode() for i in range(1, 200_001)]
    # the token was single use
    again = await WireClient.connect(pty_server.url)
    await again.send(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v1", True), resume=ResumeRequest(ok.resume.token, ())))
    assert await again.expect_close() == 4011
    await r.close()


async def test_resume_after_retention_is_4011(make_server) -> None:  # type: ignore[no-untyped-def]
    from nimbus_websocket.core import ServerConfig

    srv: Server = await make_server(config=ServerConfig(retention=0.2))
    c = await WireClient.connect(srv.url)
    ok = await c.hello()
    assert ok.resume is not None
    await c.close(4000)
    for _ in range(1000):  # bounded (>= 10 s): the 0.2 s retention must have run out
        if len(srv.registry) == 0:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the session outlived its retention")
    r = await WireClient.connect(srv.url)
    await r.send(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v1", True), resume=ResumeRequest(ok.resume.token, ())))
    assert await r.expect_close() == 4011


async def test_sigterm_closes_with_1001_and_exits(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nimbus_websocket", "serve", "--port", "0", "--log-format", "json"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        url = None
        assert proc.stderr is not None
        for _ in range(50):
            line = await asyncio.to_thread(proc.stderr.readline)
            if "serving ws://" in line:
                url = line.split("serving ")[1].split()[0]
                break
        assert url, "server did not start"
        c = await WireClient.connect(url)
        await c.hello()
        await c.open(1)
        proc.send_signal(signal.SIGTERM)
        assert await c.expect_close() == 1001
        assert await asyncio.to_thread(proc.wait, 10) == 0
        rest = await asyncio.to_thread(proc.stderr.read)
        assert '"event": "shutdown"' in rest
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_logs_never_contain_payload_or_tokens(make_server, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    import logging

    caplog.set_level(logging.DEBUG, logger="nimbus_websocket")
    srv: Server = await make_server(tokens=("tok-XYZZY-123",), pty_command="exec bash --norc --noprofile -i")
    c = await WireClient.connect(srv.url)
    ok: HelloOk = await c.hello(token="tok-XYZZY-123")
    await c.open(1)
    await c.type(1, "echo PAYLOAD-SECRET-$((2+2))\n")
    await c.until_output(1, b"PAYLOAD-SECRET-4")
    await c.close()
    await asyncio.sleep(0)
    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "connect" in text and "open" in text
    for secret in ("tok-XYZZY-123", "PAYLOAD-SECRET", ok.resume.token if ok.resume else "x"):
        assert secret not in text


def test_target_rules_accept_bare_ipv6() -> None:
    from nimbus_websocket.core import Target
    from nimbus_websocket.node_runtime.server import TargetPolicy

    p = TargetPolicy(["::1", "[::2]:22", "db1:22"])
    assert p.allows(Target("::1", 5)) and p.allows(Target("[::1]", 2222))
    assert p.allows(Target("::2", 22)) and not p.allows(Target("::2", 23))
    assert p.allows(Target("db1", 22)) and not p.allows(Target("db1", 23))
    assert not p.allows(Target(":", 1))


def test_options_are_not_mutated_and_the_core_config_is_derived_once() -> None:
    from nimbus_websocket.core.server import ServerConfig
    from nimbus_websocket.node_runtime.server import Server, ServerOptions

    config = ServerConfig()
    opts = ServerOptions(pty_command="cat", config=config, resume_failure_limit=3)
    srv = Server(opts)
    assert opts.allow_client_command is None and opts.config is config  # untouched
    assert srv.config.allow_command is False  # the operator chose what runs
    assert srv.config.resume_failure_limit == 3 and srv.registry.config is srv.config
    assert Server(ServerOptions(pty_command="cat", allow_client_command=True)).config.allow_command
    # The defaults' only refinements: file transfer and share links on (the core's own default is off).
    assert ServerOptions().effective_config == ServerConfig(allow_files=True, allow_share=True)
    assert ServerOptions(pty_command="cat", share=False).effective_config.allow_files is False


async def test_max_sessions_from_the_command_line_refuses_the_next_with_4010() -> None:
    """``nimbus-ws serve --max-sessions 2``: a third session is refused, the first two work."""
    from nimbus_websocket.node_runtime.cli import build_parser
    from nimbus_websocket.node_runtime.server.cli import options_from_args

    args = build_parser().parse_args(["serve", "--port", "0", "--max-sessions", "2"])
    opts = options_from_args(args)
    assert opts.config.max_sessions == 2
    srv = Server(opts)
    await srv.start()
    try:
        first, second = await WireClient.connect(srv.url), await WireClient.connect(srv.url)
        assert await first.hello() is not None and await second.hello() is not None
        third = await WireClient.connect(srv.url)
        await third.send(Hello(auth=Auth("none"), caps=HelloCaps("nimbus.v1", True)))
        assert await third.expect_close() == CloseCode.SERVER_OVERLOAD
        await first.open(1)
        await first.type(1, "echo still-$((2+3))\n")
        await first.until_output(1, b"still-5")
        await first.close()
        await second.close()
    finally:
        await srv.stop()
