"""A loopback TCP proxy for network-failure tests: cut, stall, delay.

    proxy = await TcpProxy(upstream_port).start()
    url = f"ws://127.0.0.1:{proxy.port}/ws/ssh"
    proxy.cut()          # abort every proxied connection (RST both ways)
    proxy.stall(True)    # stop forwarding (traffic held, as a black hole looks to both ends)
    proxy.stall(False)   # forward again (held bytes flow on, nothing is lost)

Only 127.0.0.1.  ``delay`` (seconds) is added before each forwarded chunk.
Memory: per direction one read of at most 64 KiB plus the stream buffers;
a stalled direction stops reading, so TCP backpressure holds the rest.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["TcpProxy"]

CHUNK = 64 * 1024


class _Pair:
    def __init__(self, down: asyncio.StreamWriter, up: asyncio.StreamWriter) -> None:
        self.down = down  # towards the client
        self.up = up  # towards the server
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for w in (self.down, self.up):
            with contextlib.suppress(Exception):
                w.transport.abort()


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``host:upstream_port``."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1", *, delay: float = 0.0) -> None:
        self.upstream = (host, upstream_port)
        self.delay = delay
        self.port = 0
        self.accepted = 0
        self.cuts = 0
        #: Payload bytes forwarded client->server and server->client.
        self.bytes_up = 0
        self.bytes_down = 0
        self._pairs: set[_Pair] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None

    async def start(self) -> TcpProxy:
        """Listen on 127.0.0.1 and a free port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and abort every connection."""
        if self._server is not None:
            self._server.close()
        self._flowing.set()
        self.cut()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def connections(self) -> int:
        """Connections currently proxied."""
        return len(self._pairs)

    def cut(self) -> int:
        """Abort every proxied connection on both sides; returns how many were cut."""
        pairs = list(self._pairs)
        for p in pairs:
            p.abort()
        self._pairs.clear()
        if pairs:
            self.cuts += 1
        return len(pairs)

    def stall(self, on: bool) -> None:
        """Stop (``True``) or restart (``False``) forwarding in both directions, for all connections."""
        if on:
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            c_writer.transport.abort()
            return
        pair = _Pair(c_writer, s_writer)
        self._pairs.add(pair)
        pair.tasks = [
            asyncio.create_task(self._pipe(c_reader, s_writer, up=True)),
            asyncio.create_task(self._pipe(s_reader, c_writer, up=False)),
        ]
        try:
            await asyncio.gather(*pair.tasks, return_exceptions=True)
        finally:
            self._pairs.discard(pair)
            pair.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                if self.delay:
                    await asyncio.sleep(self.delay)
                await self._flowing.wait()
                if writer.transport.is_closing():
                    return
                writer.write(data)
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return
