"""The instance-to-instance relay: a client's WebSocket forwarded to its session's owner.

The instance that receives a resume for another instance's session opens a
WebSocket to the owner's advertise URL (same path, same subprotocol, the
relay credential of :mod:`.secret`), sends it the client's ``hello``
unchanged, and from then on forwards every message unchanged in both
directions.  The relay never decodes, merges or splits a message, so the
owner's credit flow control and exactly-once positions hold end to end: the
client grants credit to the owner, the owner acknowledges to the client.

Bounded buffers: each message is written to the other side as soon as it is
parsed (the push path of :mod:`..ws_push`, no queue).  When the other side's
transport holds more than :data:`RELAY_HIGH_WATER` unsent bytes, the relay
stops reading this side (``pause_reading``) until it drained below
:data:`RELAY_LOW_WATER`, so TCP backpressure reaches the sender: a client that
stops reading stops the owner's socket, whose own marks pause the backend.
Per relayed connection and direction the relay holds at most the high-water
mark, plus one socket read (256 KiB) and one partly received message
(``max_frame``, 1 MiB) in the parser: about 1.5 MiB per direction, 3 MiB per
relayed connection (PROTOCOL.md section 11, docs/scale.md).

Close codes pass through: the owner's close is the client's close (4011,
4000, 1001...), the client's close is the owner's; a side that dropped
without a close is aborted on the other side, so the owner sees 1006 and
keeps the session for its retention window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import EXTERNAL_CLOSE_CODES
from websockets.protocol import State
from websockets.typing import Subprotocol

from ...core.errors import CloseCode, sendable_close_code, truncate_reason
from ..ws_push import PushMessages

__all__ = ["RELAY_HIGH_WATER", "RELAY_LOW_WATER", "RelayResult", "relay"]

log = logging.getLogger("nimbus_websocket.cluster")

#: Unsent bytes on one side past which the relay stops reading the other side.
RELAY_HIGH_WATER = 256 * 1024
#: ... and below which it reads again.
RELAY_LOW_WATER = 64 * 1024


class _Upstream(PushMessages, ClientConnection):
    """The relay's connection to the owner: each message pushed as it is parsed."""


@dataclass(slots=True)
class RelayResult:
    """How a relay ended: connected or not, bytes each way, the close code the client got."""

    connected: bool
    to_owner: int = 0
    to_client: int = 0
    code: int | None = None


class _Pipe:
    """Forward every message ``src`` receives to ``dst``; stop reading ``src`` while ``dst`` is full."""

    def __init__(self, src: Connection, dst: Connection, tasks: set[asyncio.Task[None]]) -> None:
        self.src, self.dst = src, dst
        self.bytes = 0
        self._held = False
        self._tasks = tasks

    def __call__(self, msg: str | bytes) -> None:
        dst = self.dst
        if dst.protocol.state is not State.OPEN:
            return
        if isinstance(msg, str):
            data = msg.encode()
            dst.protocol.send_text(data)
        else:
            data = msg
            dst.protocol.send_binary(data)
        self.bytes += len(data)
        dst.send_data()
        if not self._held and dst.transport.get_write_buffer_size() > RELAY_HIGH_WATER:
            self._held = True
            self.src.transport.pause_reading()
            task = asyncio.ensure_future(self._release())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _release(self) -> None:
        try:
            with contextlib.suppress(Exception):
                await self.dst.drain()  # returns once below the low-water mark (or closed)
        finally:
            self._held = False
            if not self.src.transport.is_closing():
                self.src.transport.resume_reading()


def _forward_code(code: int) -> int:
    """A close code the relay may send on: as received if the library may send it, else 4000
    (never 1000, which would end the session)."""
    return code if code in EXTERNAL_CLOSE_CODES or 3000 <= code <= 4999 else sendable_close_code(code)


async def relay(
    client: Connection,
    first: str | bytes,
    url: str,
    *,
    headers: dict[str, str],
    max_frame: int,
    connect_timeout: float,
) -> RelayResult:
    """Relay ``client`` (whose first message ``first`` was read) to the owner at ``url``.

    Returns once both sides are closed.  ``connected`` is False when the
    owner could not be reached within ``connect_timeout`` (the caller answers
    the client); nothing was sent to the client then.
    """
    sp = client.subprotocol
    try:
        async with asyncio.timeout(connect_timeout):
            up = await connect(
                url,
                subprotocols=[Subprotocol(sp)] if sp else None,
                additional_headers=headers,
                create_connection=_Upstream,
                compression=None,
                max_size=max_frame,
                ping_interval=None,
                open_timeout=None,
                close_timeout=5,
                write_limit=(RELAY_HIGH_WATER, RELAY_LOW_WATER),
                user_agent_header=None,
            )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ValueError) as exc:
        log.info("relay connect failed", extra={"event": "relay_unreachable", "url": url, "error": type(exc).__name__})
        return RelayResult(False)
    assert isinstance(up, _Upstream)
    if _can_splice(client, up):
        return await _splice(client, up, first)
    result = RelayResult(True)
    tasks: set[asyncio.Task[None]] = set()
    with contextlib.suppress(Exception):
        client.transport.set_write_buffer_limits(RELAY_HIGH_WATER, RELAY_LOW_WATER)
    to_owner, to_client = _Pipe(client, up, tasks), _Pipe(up, client, tasks)
    try:
        await up.send(first)
        to_owner.bytes += len(first) if isinstance(first, bytes) else len(first.encode())
        # Both pushes on: from here every message is forwarded from the protocol callback.
        up.push = to_client
        if isinstance(client, PushMessages):
            client.push = to_owner
        else:  # pragma: no cover - the server's connections always push
            raise RuntimeError("relay needs a push connection")
        await _drain_queues(client, up, to_owner, to_client)
        await _closed_either(client, up)
        result.code = await _close_other(client, up)
    except ConnectionClosed:
        result.code = await _close_other(client, up)
    finally:
        up.push = None
        for t in tasks:
            t.cancel()
        if up.state is not State.CLOSED:
            up.transport.abort()
    result.to_owner, result.to_client = to_owner.bytes, to_client.bytes
    return result


class _Side(asyncio.Protocol):
    """One socket of a spliced relay: bytes to the peer socket as they come, flow-controlled."""

    def __init__(self, transport: asyncio.Transport, ws: Connection, done: asyncio.Future[None]) -> None:
        self.transport = transport
        self.ws = ws  # the websockets connection the transport belonged to: told when it ends
        self.peer: _Side | None = None
        self.bytes = 0
        self.lost = False
        self._done = done

    def data_received(self, data: bytes) -> None:
        """Forward ``data`` unchanged (whole frames or not: the peer's parser reassembles)."""
        self.bytes += len(data)
        if self.peer is not None and not self.peer.lost:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        """The sender closed its side: close the peer's after what was written."""
        if self.peer is not None and not self.peer.lost:
            self.peer.transport.close()
        return False

    def pause_writing(self) -> None:
        """Our socket holds more than the high-water mark: stop reading the peer."""
        if self.peer is not None and not self.peer.lost:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        """Below the low-water mark again: read the peer again."""
        if self.peer is not None and not self.peer.lost and not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        """Gone: a clean end closes the peer after its buffer, a failure aborts it."""
        self.lost = True
        peer = self.peer
        if peer is not None and not peer.lost:
            if exc is None:
                peer.transport.close()
            else:
                peer.transport.abort()  # the owner sees 1006 and keeps the session
        with contextlib.suppress(Exception):
            self.ws.connection_lost(exc)  # the library's own end (admission slot, waiters)
        if (peer is None or peer.lost) and not self._done.done():
            self._done.set_result(None)


def _can_splice(client: Connection, up: Connection) -> bool:
    """Both sockets may be spliced byte for byte: no extension on either (a frame of one
    connection is then a valid frame of the other: client frames stay masked towards the
    owner, the owner's unmasked towards the client), nothing received beyond ``hello``."""
    return (
        not client.protocol.extensions
        and not up.protocol.extensions
        and not client.protocol.reader.buffer
        and not up.protocol.reader.buffer
    )


async def _splice(client: Connection, up: Connection, first: str | bytes) -> RelayResult:
    """Send ``hello`` on ``up``, then hand both sockets to :class:`_Side` (the library no longer
    parses anything): every byte goes through unchanged, close frames included, so the
    owner sees the client's own close code and the client the owner's."""
    if isinstance(first, str):
        up.protocol.send_text(first.encode())
    else:
        up.protocol.send_binary(first)
    up.send_data()
    hello = len(first) if isinstance(first, bytes) else len(first.encode())
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    ct, ut = client.transport, up.transport
    a, b = _Side(ct, client, done), _Side(ut, up, done)
    a.peer, b.peer = b, a
    for side, ws in ((a, client), (b, up)):
        # The library must not write into the spliced stream (a close frame mid-frame):
        # from its point of view the connection is closing until the splice ends.
        ws.protocol.state = State.CLOSING
        side.transport.set_write_buffer_limits(RELAY_HIGH_WATER, RELAY_LOW_WATER)
        side.transport.set_protocol(side)
    if ct.is_closing():
        a.connection_lost(None)
    if ut.is_closing():
        b.connection_lost(None)
    try:
        await done
    finally:
        for side in (a, b):
            if not side.lost:
                side.transport.abort()
    return RelayResult(True, to_owner=a.bytes + hello, to_client=b.bytes, code=None)


async def _drain_queues(client: Connection, up: Connection, to_owner: _Pipe, to_client: _Pipe) -> None:
    """Forward what either library queue holds (messages parsed before the push was set; a
    fragmented message switches a connection to its queue for good), until both close."""

    async def pump(src: Connection, pipe: _Pipe) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for msg in src:
                pipe(msg)

    t1 = asyncio.ensure_future(pump(client, to_owner))
    t2 = asyncio.ensure_future(pump(up, to_client))
    try:
        await asyncio.wait([t1, t2], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (t1, t2):
            if not t.done():
                t.cancel()


async def _closed_either(a: Connection, b: Connection) -> None:
    ta = asyncio.ensure_future(a.wait_closed())
    tb = asyncio.ensure_future(b.wait_closed())
    try:
        await asyncio.wait([ta, tb], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (ta, tb):
            if not t.done():
                t.cancel()


async def _close_other(client: Connection, up: Connection) -> int | None:
    """One side closed (or is closing): close the other the same way.  The client's code."""
    if up.state is State.CLOSED or up.protocol.close_rcvd is not None:
        rcvd = up.protocol.close_rcvd
        if rcvd is None:  # the owner dropped without a close: the client sees a drop too
            client.transport.abort()
            return int(CloseCode.ABNORMAL)
        code = _forward_code(rcvd.code)
        with contextlib.suppress(Exception):
            await client.close(code, truncate_reason(rcvd.reason))
        return code
    rcvd = client.protocol.close_rcvd
    if rcvd is None and client.protocol.close_sent is not None:
        rcvd = client.protocol.close_sent  # we closed the client (server shutdown): tell the owner the same
    if rcvd is None:
        up.transport.abort()  # the client dropped: the owner sees 1006 and keeps the session
        return None
    with contextlib.suppress(Exception):
        await up.close(_forward_code(rcvd.code), truncate_reason(rcvd.reason))
    return rcvd.code


def elapsed_ms(start: float) -> float:
    """Milliseconds since ``start`` (``time.monotonic``)."""
    return round((time.monotonic() - start) * 1000, 1)


def relay_headers(credential_header: str, credential: str, client: str) -> dict[str, str]:
    """The relay's request headers: the credential and the client it acts for."""
    return {credential_header: credential, "X-Forwarded-For": client}
