"""Helpers of the reliability suite: bounded waits, a server subprocess, raw WebSocket frames.

* :func:`wait_for` -- poll a condition with a deadline (never a bare sleep).
* :class:`ServerProcess` -- ``python -m nimbus_websocket serve`` in a child
  process, so its RSS and CPU time can be read from ``/proc`` apart from
  the test's (client) process.
* :class:`RawWs` -- a WebSocket at the TCP level: a hand-written upgrade
  request (any headers) and hand-built frames (any opcode, flags, length,
  byte by byte), for what no WebSocket library will send.
* :func:`figure` -- figures measured by a test, printed and appended to
  ``$NIMBUS_RELIABILITY_FIGURES`` (JSON lines) when that is set, so
  ``make stress`` can collect them for docs/reliability.md.

Only 127.0.0.1.
"""

from __future__ import annotations

try:  # tests/ as a rootless directory (default) or as a package
    from support.waiting import wait_for as wait_for
except ImportError:  # pragma: no cover
    from tests.support.waiting import wait_for as wait_for

import asyncio
import base64
import contextlib
import json
import os
import resource
import secrets
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

TARGET = {"host": "127.0.0.1", "port": 22}
USER = {"username": "reliability"}


def figure(name: str, **values: Any) -> None:
    """Report a measured figure (stdout with ``-s``, and the figures file when configured)."""
    line = json.dumps({"figure": name, **values}, default=str)
    print(f"FIGURE {line}")
    path = os.environ.get("NIMBUS_RELIABILITY_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS``/``VmHWM``... of ``pid`` in bytes (Linux ``/proc``)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            parts = v.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[k] = int(parts[0]) * 1024
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used by ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """The reference server in a subprocess: ``async with ServerProcess(args) as sp: sp.url``."""

    def __init__(self, args: Sequence[str] = (), *, env: dict[str, str] | None = None) -> None:
        self.args = ["--port", "0", *args]
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0
        self.lines: list[str] = []  # every stderr line (logs)
        self._reader: threading.Thread | None = None
        self._started = threading.Event()

    async def start(self, timeout: float = 20.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nimbus_websocket", "serve", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        ok = await asyncio.to_thread(self._started.wait, timeout)
        if not ok or not self.url:
            await self.stop()
            raise AssertionError(f"server did not start: {self.lines[-20:]}")
        self.port = int(self.url.split(":")[2].split("/")[0])
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:  # bounded by the process's life
            self.lines.append(line.rstrip("\n"))
            if not self._started.is_set() and "nimbus-ws serving ws://" in line:
                self.url = line.split("serving ")[1].split()[0]
                self._started.set()
        self._started.set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int:
        """Current resident set size in bytes."""
        return proc_status(self.pid)["VmRSS"]

    def cpu(self) -> float:
        """CPU seconds used so far."""
        return proc_cpu_seconds(self.pid)

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait (bounded), SIGKILL if needed; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 5)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 5)
        return self.proc.returncode

    async def __aenter__(self) -> ServerProcess:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ------------------------------------------------------------- raw WebSocket

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One client frame, built by hand: any opcode, RSV bits, (false) length, masked or not."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)])
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 1 << 16:
        head.append(mbit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack(">Q", n)
    if not mask:
        return bytes(head) + payload
    key = secrets.token_bytes(4)
    head += key
    masked = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    return bytes(head) + masked


class RawWs:
    """One TCP connection speaking WebSocket by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.response = b""

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> RawWs:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        return cls(r, w)

    @staticmethod
    def upgrade_request(
        port: int,
        *,
        path: str = "/ws/ssh",
        host: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        subprotocol: str | None = "nimbus.ssh.v1",
    ) -> bytes:
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host if host is not None else f'127.0.0.1:{port}'}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        lines += [f"{k}: {v}" for k, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def handshake(self, request: bytes, timeout: float = 10.0) -> int:
        """Send ``request``; read the response head; returns the HTTP status (0: none)."""
        self.writer.write(request)
        await self.writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            self.response = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        parts = self.response.split(b" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        return self.status

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """The next server frame ``(opcode, payload)`` (servers do not mask)."""
        async def read() -> tuple[int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", await self.reader.readexactly(8))
            return b0 & 0xF, await self.reader.readexactly(n)

        return await asyncio.wait_for(read(), timeout)

    async def close_code(self, timeout: float = 10.0) -> int:
        """Read frames until a close frame (its code) or EOF (1006), bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                op, payload = await self.read_frame(max(0.01, deadline - time.monotonic()))
                if op == OP_CLOSE:
                    return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (asyncio.IncompleteReadError, ConnectionError):
            return 1006

    async def at_eof(self, timeout: float) -> bool:
        """True when the server closed the TCP connection within ``timeout`` (data is discarded)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = await asyncio.wait_for(self.reader.read(65536), max(0.01, deadline - time.monotonic()))
                if not chunk:
                    return True
        except (TimeoutError, ConnectionError):
            return self.reader.at_eof()
        return False

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()
