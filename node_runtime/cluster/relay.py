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
import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable
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
    return (
        code if code in EXTERNAL_CLOSE_CODES or 3000 <= code <= 4999 else sendable_close_code(code)
    )


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
        log.info(
            "relay connect failed",
            extra={"event": "relay_unreachable", "url": url, "error": type(exc).__name__},
        )
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

    def __init__(
        self, transport: asyncio.Transport, ws: Connection, done: asyncio.Future[None]
    ) -> None:
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


#: The kernel pipe each direction of a kernel-spliced relay moves bytes through: the most
#: that direction holds (no user-space buffer at all).
SPLICE_PIPE_SIZE = 256 * 1024
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


def _raw_socket_fd(transport: asyncio.BaseTransport) -> int | None:
    """The socket's descriptor when ``transport`` is a plain (not TLS) socket transport."""
    if (
        transport.get_extra_info("sslcontext") is not None
        or transport.get_extra_info("ssl_object") is not None
    ):
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return None
    fd = sock.fileno()
    return fd if fd >= 0 else None


class _KernelPipe:
    """One direction of a kernel-spliced relay: ``src`` socket -> pipe -> ``dst`` socket.

    ``os.splice`` moves the bytes inside the kernel: the relay process never copies
    them.  The pipe (:data:`SPLICE_PIPE_SIZE`) is this direction's whole buffer: while
    it holds bytes ``dst`` did not take, ``src`` is not read, so TCP backpressure
    reaches the sender exactly as with :class:`_Side`.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: int,
        dst: int,
        end: Callable[[_KernelPipe, BaseException | None], None],
    ) -> None:
        self.loop, self.src, self.dst, self._end = loop, src, dst, end
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(self.w, fcntl.F_SETPIPE_SZ, SPLICE_PIPE_SIZE)
        self.size = SPLICE_PIPE_SIZE
        with contextlib.suppress(OSError, AttributeError):
            self.size = fcntl.fcntl(self.w, fcntl.F_GETPIPE_SZ)
        self.pending = 0  # bytes in the pipe, not yet taken by dst
        self.bytes = 0
        self.eof = False
        self.done = False
        self._reading = self._writing = False

    def start(self) -> None:
        """Read ``src`` from now on."""
        self._read_on()

    def _read_on(self) -> None:
        if not self._reading and not self.done:
            self.loop.add_reader(self.src, self._readable)
            self._reading = True

    def _read_off(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.src)
            self._reading = False

    def _readable(self) -> None:
        try:
            n = os.splice(self.src, self.w, self.size - self.pending, flags=_SPLICE_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(exc)
            return
        if n == 0:  # the sender closed its side: close ours towards dst after the pipe
            self.eof = True
            self._read_off()
            self._flush()
            return
        self.bytes += n
        self.pending += n
        self._flush()

    def _writable(self) -> None:
        self._flush()

    def _flush(self) -> None:
        while self.pending:
            try:
                n = os.splice(self.r, self.dst, self.pending, flags=_SPLICE_FLAGS)
            except (BlockingIOError, InterruptedError):
                self._read_off()  # dst is full: stop reading src until it took the pipe
                if not self._writing:
                    self.loop.add_writer(self.dst, self._writable)
                    self._writing = True
                return
            except OSError as exc:
                self._finish(exc)
                return
            self.pending -= n
        if self._writing:
            self.loop.remove_writer(self.dst)
            self._writing = False
        if self.eof:  # all the sender wrote reached dst: the relay ends (as _Side's does)
            self._finish(None)
        else:
            self._read_on()

    def _finish(self, exc: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        self._read_off()
        if self._writing:
            self.loop.remove_writer(self.dst)
            self._writing = False
        for fd in (self.r, self.w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._end(self, exc)

    def stop(self) -> None:
        """Stop without telling anyone (the relay is being torn down)."""
        if not self.done:
            self._end = lambda _pipe, _exc: None
            self._finish(None)


async def _kernel_splice(client: Connection, up: Connection, hello: int) -> RelayResult | None:
    """Relay with ``os.splice`` when both sockets are plain TCP and nothing is buffered.

    None when the kernel splice does not apply (TLS on either side, no ``os.splice``, bytes
    still in a write buffer): the caller then splices in user space (:class:`_Side`)."""
    if not hasattr(os, "splice"):
        return None
    ct, ut = client.transport, up.transport
    cfd, ufd = _raw_socket_fd(ct), _raw_socket_fd(ut)
    if cfd is None or ufd is None or ct.is_closing() or ut.is_closing():
        return None
    if ct.get_write_buffer_size() or ut.get_write_buffer_size():
        return None
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    failed: list[BaseException] = []
    pipes: list[_KernelPipe] = []

    def end(pipe: _KernelPipe, exc: BaseException | None) -> None:
        # Either direction ending ends the relay: a sender's clean close (EOF, after the
        # pipe reached dst) closes both sockets, a failure aborts both.
        if exc is not None:
            failed.append(exc)
            log.info("relay: kernel splice ended by %s", exc)
        for other in pipes:
            other.stop()
        if not done.done():
            done.set_result(None)

    for ws in (client, up):
        ws.protocol.state = State.CLOSING  # the library must not write into the stream
        ws.transport.pause_reading()  # the loop no longer reads these sockets for the library
    # The loop refuses readers on a descriptor a transport owns: the pipes watch duplicates.
    cdup, udup = os.dup(cfd), os.dup(ufd)
    to_owner, to_client = _KernelPipe(loop, cdup, udup, end), _KernelPipe(loop, udup, cdup, end)
    pipes += [to_owner, to_client]
    try:
        to_owner.start()
        to_client.start()
        await done
    finally:
        for p in pipes:
            p.stop()
        for fd in (cdup, udup):
            os.close(fd)
        # The sockets end through their transports, so the library's own end runs
        # (admission slot, waiters); a failure aborts: the owner sees 1006 and keeps the session.
        for t in (ct, ut):
            if failed:
                t.abort()
            else:
                t.close()
    return RelayResult(True, to_owner=to_owner.bytes + hello, to_client=to_client.bytes, code=None)


async def _splice(client: Connection, up: Connection, first: str | bytes) -> RelayResult:
    """Send ``hello`` on ``up``, then relay the two sockets byte for byte (the library no
    longer parses anything): every byte goes through unchanged, close frames included, so
    the owner sees the client's own close code and the client the owner's.  In the kernel
    (``os.splice``) for plain TCP sockets, else in user space with :class:`_Side`."""
    if isinstance(first, str):
        up.protocol.send_text(first.encode())
    else:
        up.protocol.send_binary(first)
    up.send_data()
    hello = len(first) if isinstance(first, bytes) else len(first.encode())
    kernel = await _kernel_splice(client, up, hello)
    if kernel is not None:
        return kernel
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


async def _drain_queues(
    client: Connection, up: Connection, to_owner: _Pipe, to_client: _Pipe
) -> None:
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
        rcvd = (
            client.protocol.close_sent
        )  # we closed the client (server shutdown): tell the owner the same
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
