"""One wire client per protocol, all on the ``websockets`` client library.

Each client opens one terminal session and moves terminal bytes; nothing is
rendered.  The interface is the same for every peer:

* ``open()``: connect until the session is usable (nimbus: channel open;
  webssh: ``POST /`` for a worker id, then the WebSocket; wetty: engine.io
  open + socket.io connect);
* ``send(data)``: keystrokes;
* ``recv()``: the next chunk of terminal output, as bytes (``EOFError`` at
  the end of the session);
* ``close()``.

Protocols:

* **nimbus**: the project's CPython client (``connect()`` + ``open_session``);
* **bridge**: binary frames of PTY bytes both ways (``bench/stream.py``);
* **terminado**: JSON text frames ``["stdin", s]`` / ``["stdout", s]``
  (``["setup", {}]`` first, ``["disconnect", 1]`` when the process ends);
* **webssh**: ``POST /`` (hostname, port, username, privatekey) -> ``{"id"}``,
  then ``/ws?id=``: binary frames of terminal bytes from the server,
  ``{"data": s}`` JSON text frames to it;
* **wetty**: socket.io v4 over engine.io v4, WebSocket transport only:
  ``42["data", s]`` from the server, ``42["input", s]`` to it, ``2``/``3``
  ping/pong, and wetty's own flow control: ``42["commit", 262144]`` per
  256 Ki characters consumed, as its browser client does (its server pauses
  the PTY with 2 Mi characters uncommitted).

Every wait is bounded (``OPEN_TIMEOUT``; reads by the caller's timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
import urllib.request
from typing import Any

from nimbus_websocket.node_runtime import WebsocketsImpl, connect
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

OPEN_TIMEOUT = 20.0
CLOSE_TIMEOUT = 2.0
MAX_SIZE = 1 << 24
TARGET = {"host": "localhost", "port": 22}
USER = {"username": "bench"}
TERM = {"cols": 80, "rows": 24, "env": {"TERM": "xterm"}}


class WireClient:
    """One terminal session over one WebSocket."""

    async def open(self) -> None:
        """Connect until the session takes input and produces output."""
        raise NotImplementedError

    async def send(self, data: bytes) -> None:
        """Send keystrokes."""
        raise NotImplementedError

    async def recv(self) -> bytes:
        """The next chunk of terminal output; ``EOFError`` when the session ended."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the session (bounded)."""
        raise NotImplementedError


class _WsClient(WireClient):
    """Shared by the clients on a plain ``websockets`` connection."""

    ws: ClientConnection | None = None

    async def _connect(self, url: str) -> None:
        self.ws = await asyncio.wait_for(
            ws_connect(url, compression=None, max_size=MAX_SIZE, ping_interval=None, close_timeout=CLOSE_TIMEOUT,
                       open_timeout=OPEN_TIMEOUT), OPEN_TIMEOUT)

    async def _recv_raw(self) -> str | bytes:
        assert self.ws is not None
        try:
            return await self.ws.recv()
        except ConnectionClosed:
            raise EOFError from None

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), CLOSE_TIMEOUT + 1)
            self.ws.transport.abort()


class NimbusClient(WireClient):
    """The project's CPython client: ``connect()`` + ``open_session`` + ``async for``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None
        self.it: Any = None
        self.ch: Any = None

    async def open(self) -> None:
        self.conn = await asyncio.wait_for(connect(self.url, websocket_impl=WebsocketsImpl), OPEN_TIMEOUT)
        self.ch = await asyncio.wait_for(self.conn.open_session(target=TARGET, user=USER, term=TERM), OPEN_TIMEOUT)
        self.it = self.ch.__aiter__()

    async def send(self, data: bytes) -> None:
        await self.ch.send(data)

    async def recv(self) -> bytes:
        try:
            return bytes(await self.it.__anext__())
        except StopAsyncIteration:
            raise EOFError from None

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), CLOSE_TIMEOUT + 1)


class BridgeClient(_WsClient):
    """The bare bridge: binary frames both ways."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self) -> None:
        await self._connect(self.url)

    async def send(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    async def recv(self) -> bytes:
        msg = await self._recv_raw()
        return msg if isinstance(msg, bytes) else msg.encode()


class TerminadoClient(_WsClient):
    """terminado's ``TermSocket``: JSON ``["stdin", s]`` / ``["stdout", s]``."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self) -> None:
        await self._connect(self.url)

    async def send(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(["stdin", data.decode("utf-8", "replace")]))

    async def recv(self) -> bytes:
        while True:
            msg = json.loads(await self._recv_raw())
            if msg[0] == "stdout":
                return str(msg[1]).encode("utf-8", "surrogateescape")
            if msg[0] == "disconnect":
                raise EOFError


class WebsshClient(_WsClient):
    """webssh: ``POST /`` for a worker id, then ``/ws?id=``."""

    def __init__(self, base: str, ssh_port: int, username: str, key_text: str) -> None:
        self.base = base  # http://127.0.0.1:PORT
        self.form = urllib.parse.urlencode(
            {"hostname": "127.0.0.1", "port": str(ssh_port), "username": username, "privatekey": key_text,
             "term": "xterm"}).encode()

    def _post(self) -> dict[str, Any]:
        req = urllib.request.Request(self.base + "/", data=self.form, method="POST")
        with urllib.request.urlopen(req, timeout=OPEN_TIMEOUT) as resp:
            out: dict[str, Any] = json.loads(resp.read())
        return out

    async def open(self) -> None:
        res = await asyncio.wait_for(asyncio.to_thread(self._post), OPEN_TIMEOUT + 1)
        if not res.get("id"):
            raise RuntimeError(f"webssh refused the login: {res.get('status')}")
        await self._connect(self.base.replace("http://", "ws://") + f"/ws?id={res['id']}")

    async def send(self, data: bytes) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps({"data": data.decode("utf-8", "replace")}))

    async def recv(self) -> bytes:
        msg = await self._recv_raw()
        return msg if isinstance(msg, bytes) else msg.encode()


class WettyClient(_WsClient):
    """wetty: socket.io v4 / engine.io v4 on the WebSocket transport, with wetty's commits."""

    ACK = 262144  # wetty's client: commit every 256 Ki characters written to the terminal
    LOGOUT_GRACE = 0.5

    def __init__(self, url: str) -> None:
        self.url = url  # ws://127.0.0.1:PORT
        self.uncommitted = 0
        self.logged_out = False

    async def open(self) -> None:
        await self._connect(self.url + "/socket.io/?EIO=4&transport=websocket")
        assert self.ws is not None
        async with asyncio.timeout(OPEN_TIMEOUT):
            first = await self._recv_raw()
            if not isinstance(first, str) or not first.startswith("0"):
                raise RuntimeError(f"not an engine.io open packet: {first!r:.80}")
            await self.ws.send("40")  # socket.io CONNECT to the main namespace
            # wetty spawns the PTY after the connect and then emits "login"; input sent
            # before that is dropped (no listener yet), so "login" is when the session is up.
            while True:
                pkt = await self._recv_raw()
                if not isinstance(pkt, str):
                    continue
                if pkt.startswith("44"):
                    raise RuntimeError(f"socket.io connect refused: {pkt[:120]}")
                if pkt == "2":
                    await self.ws.send("3")
                elif pkt.startswith("42") and json.loads(pkt[2:])[0] == "login":
                    break
                elif pkt.startswith("42") and json.loads(pkt[2:])[0] == "logout":
                    raise RuntimeError("wetty: the session ended before it started")
        await self._emit("resize", {"cols": 80, "rows": 24})

    async def _emit(self, event: str, arg: Any) -> None:
        assert self.ws is not None
        await self.ws.send("42" + json.dumps([event, arg]))

    async def send(self, data: bytes) -> None:
        await self._emit("input", data.decode("utf-8", "replace"))

    async def recv(self) -> bytes:
        while True:
            if self.logged_out:
                # The process exited; wetty's 2 ms output timer may still flush after "logout".
                try:
                    async with asyncio.timeout(self.LOGOUT_GRACE):
                        pkt = await self._recv_raw()
                except TimeoutError:
                    raise EOFError from None
            else:
                pkt = await self._recv_raw()
            if not isinstance(pkt, str):
                continue
            if pkt == "2":  # engine.io ping from the server
                assert self.ws is not None
                await self.ws.send("3")
            elif pkt.startswith("42"):
                event = json.loads(pkt[2:])
                if event[0] == "data":
                    text = str(event[1])
                    self.uncommitted += len(text)
                    while self.uncommitted >= self.ACK:
                        self.uncommitted -= self.ACK
                        await self._emit("commit", self.ACK)
                    return text.encode("utf-8", "surrogateescape")
                if event[0] == "logout":
                    self.logged_out = True
            elif pkt.startswith("41") or pkt == "1":  # socket.io DISCONNECT / engine.io CLOSE
                raise EOFError
