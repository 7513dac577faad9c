"""Issue 13 item 11: resume attacks against the real server, over the raw wire.

* Another principal (the server has two tokens) who knows a victim's session
  id -- it is not secret -- sends 10 wrong secrets for it: each is refused
  with 4011 and the same reason as an unknown id, and the victim still
  resumes (its revocation budget only counts its own principal's tries).
* An attacker rotating source addresses 127.0.0.2 ... 127.0.0.20 shares one
  per-prefix budget (all of 127.0.0.0/8 is one key): past it, every resume
  attempt from the machine is refused with 4004 before any lookup; a hello
  without resume still works.

The core's rules with a fake clock: tests/core/test_resume_limits.py.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from typing import Any

import pytest
from nimbus_websocket.core import Auth, Flow, Hello, HelloCaps, ResumeRequest, get_profile
from nimbus_websocket.node_runtime.conformance.wire import ServerClosed, Wire, WireClient
from nimbus_websocket.node_runtime.server import Server
from websockets.asyncio.client import connect

pytestmark = pytest.mark.timeout(60)

VICTIM = "victim-" + secrets.token_hex(8)
ATTACKER = "attacker-" + secrets.token_hex(8)
P = get_profile("nimbus.v1")


async def _client(srv: Server, source: str | None = None) -> WireClient:
    """A raw wire client; ``source`` binds its socket's local address (e.g. ``127.0.0.7``)."""
    if source is None:
        return await WireClient.connect(srv.url)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", srv.port)), 10)
        ws = await asyncio.wait_for(
            connect(srv.url, sock=sock, subprotocols=list(P.subprotocols),
                    compression=None, proxy=None, ping_interval=None, open_timeout=10),
            15,
        )
    except BaseException:
        sock.close()
        raise
    assert ws.local_address[0] == source
    return WireClient(Wire(ws, P, timeout=10))


async def _refusal(c: WireClient, token: str, resume: str) -> tuple[int, str]:
    """Send a resuming ``hello``; the server must close: ``(code, reason)``."""
    await c.send(Hello(auth=Auth("bearer", token), caps=HelloCaps("nimbus.v1", False),
                       resume=ResumeRequest(resume, None)))
    try:
        m = await c.recv(10)
    except ServerClosed as exc:
        return exc.code, exc.reason
    raise AssertionError(f"resume {resume[:20]}... was answered with {m}")


async def _victim(srv: Server) -> tuple[str, str]:
    """A victim session with a ``cat`` channel, its connection dropped: ``(token, sid)``."""
    v = await _client(srv)
    ok = await v.hello(VICTIM, ack=False)
    assert ok.resume is not None
    await v.open(1)
    await v.type(1, "before-drop\n")
    await v.until_output(1, b"before-drop")
    v.wire.abort()
    return ok.resume.token, ok.resume.token.split(".")[0]


async def test_another_principal_cannot_revoke_the_victims_resume(make_server: Any) -> None:
    srv: Server = await make_server(tokens=(VICTIM, ATTACKER), pty_command="exec cat")
    token, sid = await _victim(srv)
    answers = []
    for _ in range(10):  # twice max_resume_failures (5)
        a = await _client(srv)
        answers.append(await _refusal(a, ATTACKER, f"{sid}.{secrets.token_urlsafe(32)}"))
    a = await _client(srv)
    stranger = await _refusal(a, ATTACKER, f"{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}")
    assert set(answers) == {stranger}, (answers, stranger)  # a known id answers as an unknown one
    assert stranger[0] == 4011
    (session,) = srv.registry.sessions()
    assert session.failures == 0
    # the victim comes back: the session and its channel are intact
    v = await _client(srv)
    ok = await v.hello(VICTIM, ack=False, resume=ResumeRequest(token, None))
    assert ok.caps.resumed is not None and [c.id for c in ok.caps.resumed] == [1]
    await v.send(Flow(1, 1 << 20))  # credit restarts at 0 on a resumed channel
    await v.type(1, "after-attack\n")
    await v.until_output(1, b"after-attack")
    await v.close()


async def test_the_owners_own_wrong_secrets_still_revoke(make_server: Any) -> None:
    srv: Server = await make_server(tokens=(VICTIM, ATTACKER), pty_command="exec cat")
    token, sid = await _victim(srv)
    for _ in range(5):
        c = await _client(srv)
        assert (await _refusal(c, VICTIM, f"{sid}.{secrets.token_urlsafe(32)}"))[0] == 4011
    c = await _client(srv)
    assert (await _refusal(c, VICTIM, token))[0] == 4011  # revoked


async def test_rotating_loopback_sources_hit_one_budget(make_server: Any) -> None:
    srv: Server = await make_server(tokens=(VICTIM, ATTACKER), pty_command="exec cat", resume_failure_limit=10)
    token, sid = await _victim(srv)
    codes = []
    for i in range(2, 21):  # 127.0.0.2 ... 127.0.0.20: 19 sources, one prefix
        a = await _client(srv, f"127.0.0.{i}")
        codes.append((await _refusal(a, ATTACKER, f"{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}"))[0])
    assert codes == [4011] * 10 + [4004] * 9, codes
    assert len(srv.registry.resume_limiter) == 1
    # the budget is the machine's: a resume from 127.0.0.1 waits for the window too
    v = await _client(srv)
    assert (await _refusal(v, VICTIM, token))[0] == 4004
    # a new session (no resume) is not affected, from any source
    c = await _client(srv, "127.0.0.21")
    assert (await c.hello(ATTACKER)).resume is not None
    await c.close()
