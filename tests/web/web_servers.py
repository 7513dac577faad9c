"""Servers for the web-runtime tests (host side), all on 127.0.0.1.

* :class:`ServeProcess` -- the reference server as a child process
  (``.venv/bin/nimbus-ws serve --port 0 ...``), its URL parsed from the line it
  prints on stderr (``nimbus-ws serving ws://...``);
* :class:`StallServer` -- a minimal ``nimbus.v1`` server (raw ``websockets``)
  that answers ``hello``/``open``, then **stops reading** once the client
  granted credit, so the client's ``bufferedAmount`` grows.  It runs in a
  background thread (Pyodide tests call the browser synchronously) and is
  steered over a second WebSocket on ``/ctl``: ``send N`` (send N bytes of
  output to the channel), ``drain`` (read and discard again), ``stats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
NIMBUS_WS = Path(sys.executable).with_name("nimbus-ws")

_URL_RE = re.compile(r"nimbus-ws serving (ws://\S+)")


class ServeProcess:
    """``nimbus-ws serve --port 0`` in a child process; :attr:`url` once started."""

    def __init__(self, *args: str, timeout: float = 20.0) -> None:
        self.args = list(args)
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self._stderr: list[str] = []

    def start(self) -> ServeProcess:
        """Start it and wait (bounded) for the URL line."""
        cmd = [str(NIMBUS_WS), "serve", "--port", "0", *self.args]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        found = threading.Event()

        def reader() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace")
                if len(self._stderr) < 2000:
                    self._stderr.append(line)
                m = _URL_RE.search(line)
                if m and not found.is_set():
                    self.url = m.group(1)
                    found.set()

        threading.Thread(target=reader, daemon=True, name="nimbus-ws-stderr").start()
        if not found.wait(self.timeout):
            self.stop()
            raise RuntimeError(f"nimbus-ws serve did not start: {''.join(self._stderr)[-2000:]}")
        self.port = int(self.url.split(":")[2].split("/")[0])
        return self

    @property
    def log(self) -> str:
        """What the server printed on stderr so far."""
        return "".join(self._stderr)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop within a few seconds."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StallServer:
    """A ``nimbus.v1`` server that stops reading after the first ``flow`` (see the module doc)."""

    MAX_FRAME = 64 * 1024

    def __init__(self, rcvbuf: int = 8192) -> None:
        self.rcvbuf = rcvbuf
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._client: Any = None
        self._cid = 0
        self._stalled: asyncio.Event | None = None
        self._drain: asyncio.Event | None = None
        self.stats: dict[str, int] = {
            "frames_in": 0,
            "bytes_in": 0,
            "sent": 0,
            "credit": 0,
            "connections": 0,
        }

    @property
    def url(self) -> str:
        """The client URL."""
        return f"ws://127.0.0.1:{self.port}/ws/ssh"

    @property
    def ctl_url(self) -> str:
        """The control URL (text commands, one answer each)."""
        return f"ws://127.0.0.1:{self.port}/ctl"

    def start(self) -> StallServer:
        """Start the server thread; return once it listens."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:  # reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="stall-server")
        self._thread.start()
        if not ready.wait(10) or errors:
            raise RuntimeError(f"stall server did not start: {errors}")
        return self

    def stop(self) -> None:
        """Stop the server thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> StallServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- server

    async def _start(self) -> None:
        from websockets.asyncio.server import serve

        self._stalled = asyncio.Event()
        self._drain = asyncio.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Small receive buffer before listen(): the window the client sees stays small,
        # so once this server stops reading, the client's bufferedAmount has to grow.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._server = await serve(
            self._handler,
            sock=sock,
            select_subprotocol=_select_subprotocol,
            compression=None,
            ping_interval=None,
            max_size=4 * 1024 * 1024,
            max_queue=1,
            close_timeout=1,
        )

    async def _stop(self) -> None:
        if self._drain is not None:
            self._drain.set()
        if self._server is not None:
            self._server.close(close_connections=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handler(self, ws: Any) -> None:
        if ws.request.path == "/ctl":
            await self._control(ws)
        else:
            await self._serve_client(ws)

    async def _serve_client(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        assert self._stalled is not None and self._drain is not None
        self.stats["connections"] += 1
        self._client = ws
        try:
            hello = json.loads(await ws.recv())
            assert hello["t"] == "hello", hello
            caps = {
                "flow": "credit",
                "maxFrame": self.MAX_FRAME,
                "profileAccepted": "nimbus.v1",
                "ack": False,
            }
            await ws.send(json.dumps({"t": "hello_ok", "server": "stall-test", "caps": caps}))
            while not self._stalled.is_set():
                msg = await ws.recv()
                self._count(msg)
                if isinstance(msg, str):
                    m = json.loads(msg)
                    if m["t"] == "open":
                        self._cid = int(m["id"])
                        await ws.send(json.dumps({"t": "open_ok", "id": self._cid}))
                    elif m["t"] == "flow":
                        self.stats["credit"] += int(m["credit"])
                        self._stalled.set()  # from now on: read nothing
                    elif m["t"] == "ping":
                        await ws.send(json.dumps({"t": "pong", "ts": m["ts"]}))
            drain = asyncio.ensure_future(self._drain.wait())
            closed = asyncio.ensure_future(ws.wait_closed())
            await asyncio.wait([drain, closed], return_when=asyncio.FIRST_COMPLETED)
            drain.cancel()
            closed.cancel()
            async for msg in ws:
                self._count(msg)
        except ConnectionClosed:
            pass

    def _count(self, msg: str | bytes) -> None:
        self.stats["frames_in"] += 1
        self.stats["bytes_in"] += len(msg)

    async def _control(self, ws: Any) -> None:
        assert self._drain is not None
        async for msg in ws:
            cmd, _, arg = str(msg).partition(" ")
            if cmd == "send":
                n = int(arg)
                client = self._client
                off = 0
                while off < n:
                    part = min(16 * 1024, n - off)
                    frame = bytes([1]) + self._cid.to_bytes(4, "big") + os.urandom(part)
                    await client.send(frame)
                    off += part
                self.stats["sent"] += n
                await ws.send("ok")
            elif cmd == "drain":
                self._drain.set()
                await ws.send("ok")
            elif cmd == "stats":
                await ws.send(json.dumps(self.stats))
            else:
                await ws.send(f"error: unknown command {cmd!r}")


def _select_subprotocol(_ws: Any, offered: Any) -> Any:
    """``nimbus.ssh.v1`` when offered; none for the control socket."""
    return "nimbus.ssh.v1" if "nimbus.ssh.v1" in offered else None


def wait_until(pred: Any, timeout: float, what: str) -> None:
    """Host-side bounded condition wait."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
