"""The gate: the first look at every WebSocket of a cluster instance (``Server.gate``).

It reads the first message (with the hello timeout), decodes it with the
core's profile for the connection's subprotocol, and decides:

* a connection carrying a valid relay credential (another instance relaying
  a client): the session machine answers it here, it is never relayed again;
* a ``hello`` asking to resume a session this instance does not hold, whose
  token carries this cluster's MAC, whose owner the directory names and
  which answers: **relayed** to the owner (:mod:`.relay`);
* a ``hello`` with a share link (``nshare.<session id>.…``) whose session
  another instance owns: relayed the same way -- the owner checks the link
  (4003 if it is not valid), and the viewer's session lives there;
* while draining, a ``hello`` without ``resume``: refused with 4010 (no new
  sessions; resumes go on);
* Redis unreachable for a foreign resume: 1013 (try again later, retryable:
  the client keeps its session and comes back);
* everything else -- a new session, a local resume, a forged token, an
  unknown or expired session, a dead or unreachable owner -- goes to the
  session machine with its first message, which applies the contract
  (4011, the failed-resume budget, 4004): no protocol rule is repeated here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection as WsConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request

from ...core.errors import CloseCode, ProtocolError
from ...core.messages import Hello
from ...core.profiles import DEFAULT_PROFILE, get_profile, profile_for_subprotocol
from ...core.resume import parse_token
from ...core.share import is_share_token, share_token_session
from .directory import Directory, Lookup, Owner
from .relay import relay, relay_headers
from .secret import RELAY_HEADER, ClusterSecret

if TYPE_CHECKING:
    from ..server.app import Server

__all__ = ["Gate"]

log = logging.getLogger("nimbus_websocket.cluster")

#: Seconds to open the relay to an owner before the resume is answered 4011.
RELAY_CONNECT_TIMEOUT = 2.0


class Gate:
    """``Server.gate`` of a cluster instance (or of a draining single server)."""

    def __init__(self, server: Server, instance: str, secret: ClusterSecret | None) -> None:
        self.server = server
        self.instance = instance
        self.secret = secret
        self.directory: Directory | None = None
        #: Set by a drain: no new sessions.
        self.draining = False
        self.relays_active = 0
        self.connect_timeout = RELAY_CONNECT_TIMEOUT

    def relayed_client(self, request: Request) -> str | None:
        """The client an authenticated relay forwards (one ``X-Nimbus-Relay``, one ``X-Forwarded-For``)."""
        if self.secret is None:
            return None
        creds = request.headers.get_all(RELAY_HEADER)
        if len(creds) != 1:
            return None
        fwd = request.headers.get_all("X-Forwarded-For")
        if len(fwd) != 1:
            return None
        client = fwd[0].strip()
        return client if self.secret.relay_valid(creds[0], client) is not None else None

    async def accept(self, ws: WsConnection) -> tuple[bool, str | bytes | None]:
        """``(handled, first)`` for :meth:`Server._handler` (see the module docstring)."""
        server = self.server
        request = ws.request
        if request is not None and self.relayed_client(request) is not None:
            if server.metrics is not None:
                server.metrics.relayed.labels("in").inc()
            return False, None
        if self.directory is None and not self.draining:
            return False, None
        try:
            async with asyncio.timeout(server.config.hello_timeout):
                first = await ws.recv()
        except TimeoutError:
            await ws.close(CloseCode.TIMEOUT, "no hello")
            return True, None
        except ConnectionClosed:
            return True, None
        hello = self._hello(ws, first)
        if hello is None:
            return False, first
        token = hello.auth.token if hello.auth is not None else None
        if hello.resume is None and is_share_token(token):
            # A share link: the viewer's session lives where the shared terminal does.
            sid = share_token_session(token or "")
            has = getattr(server.registry, "has", None)
            if sid is None or has is None or has(sid) or self.directory is None:
                return False, first  # ours, or malformed: the session machine answers (4003)
            return await self._relay_to(ws, first, sid)
        if hello.resume is None:
            if self.draining:
                log.info("new session refused: draining", extra={"event": "drain_refused"})
                await ws.close(CloseCode.SERVER_OVERLOAD, "server draining: no new sessions here")
                return True, None
            return False, first
        return await self._resume(ws, first, hello.resume.token)

    def _hello(self, ws: WsConnection, first: str | bytes) -> Hello | None:
        """``first`` decoded by the core's profile for the subprotocol, if it is a ``hello``."""
        profile = profile_for_subprotocol(ws.subprotocol) or get_profile(DEFAULT_PROFILE)
        try:
            msg = profile.decode(first, self.server.config.max_frame)
        except ProtocolError:
            return None  # the session machine closes with the contract's code
        return msg if isinstance(msg, Hello) else None

    async def _resume(self, ws: WsConnection, first: str | bytes, token: str) -> tuple[bool, str | bytes | None]:
        server, d, secret = self.server, self.directory, self.secret
        parsed = parse_token(token)
        registry = server.registry
        has = getattr(registry, "has", None)
        if d is None or secret is None or parsed is None or has is None or has(parsed[0]):
            return False, first  # ours, or malformed: the session machine answers
        ip, _ = server.client_address(ws)
        if registry.resume_limiter.blocked(ip, time.time()):
            return False, first  # over the failed-resume budget: the core answers 4004
        sid = secret.token_valid(token)
        if sid is None:
            return False, first  # not this cluster's token: refused here (4011), never relayed
        return await self._relay_to(ws, first, sid)

    async def _relay_to(self, ws: WsConnection, first: str | bytes, sid: str) -> tuple[bool, str | bytes | None]:
        """Relay the connection to the instance owning session ``sid`` (the core answers if none)."""
        server, secret = self.server, self.secret
        if secret is None:
            return False, first
        ip, _ = server.client_address(ws)
        started = time.monotonic()
        found = await self._find(sid)
        if found.state is Owner.DOWN:
            log.warning("resume deferred: directory down", extra={"event": "relay_directory_down"})
            await ws.close(CloseCode.TRY_AGAIN_LATER, "session directory unavailable, try again")
            return True, None
        if found.state is not Owner.FOUND or found.instance == self.instance:
            log.info("resume of an unknown session", extra={"event": "relay_no_owner", "owner": found.instance, "state": found.state})
            return False, first  # the core: 4011
        log.info("relay", extra={"event": "relay", "owner": found.instance, "peer": ip})
        metrics = server.metrics
        if metrics is not None:
            metrics.relayed.labels("out").inc()
        self.relays_active += 1
        try:
            result = await relay(
                ws,
                first,
                found.url,
                headers=relay_headers(RELAY_HEADER, secret.relay_credential(self.instance, ip), ip),
                max_frame=server.config.max_frame,
                connect_timeout=self.connect_timeout,
            )
        finally:
            self.relays_active -= 1
        if not result.connected:
            return False, first  # the owner is gone: the core answers 4011 at once
        if metrics is not None:
            metrics.relay_bytes.labels("to_owner").inc(result.to_owner)
            metrics.relay_bytes.labels("to_client").inc(result.to_client)
        log.info(
            "relay end",
            extra={
                "event": "relay_end",
                "owner": found.instance,
                "code": result.code,
                "to_owner": result.to_owner,
                "to_client": result.to_client,
                "ms": round((time.monotonic() - started) * 1000),
            },
        )
        return True, None

    async def _find(self, sid: str) -> Lookup:
        """The owner of ``sid``; a missing entry is asked once more a heartbeat later (a session
        created a moment ago, or a Redis that restarted and is being re-written)."""
        d = self.directory
        assert d is not None
        found = await d.lookup(sid)
        if found.state is Owner.MISSING:
            await asyncio.sleep(d.heartbeat * 1.5)
            found = await d.lookup(sid)
        return found
