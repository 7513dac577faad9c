"""A resuming ``hello`` with a token no server issued: what the server's resume limits say."""

from __future__ import annotations

import secrets

from nimbus_websocket.core import Auth, Hello, HelloCaps, ResumeRequest
from nimbus_websocket.node_runtime.conformance.wire import ServerClosed, WireClient


async def failed_resume(c: WireClient, token: str) -> int:
    """Send it on ``c`` (bearer ``token``); the close code (4011 refused, 4004 over the budget)."""
    await c.send(Hello(auth=Auth("bearer", token), caps=HelloCaps("nimbus.v1", False),
                       resume=ResumeRequest(f"{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}", None)))
    try:
        m = await c.recv(10)
    except ServerClosed as exc:
        return exc.code
    raise AssertionError(f"an unknown resume token was answered with {m}")
