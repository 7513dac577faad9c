"""A raw wire client for server tests: websockets + a core profile, no session machine.

It speaks exactly what the test tells it to, so a test can send bad input
and observe the server's reaction (frames, close code) directly.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

from nimbus_websocket.core import (
    Auth,
    Close,
    Ctl,
    DataFrame,
    Exit,
    Flow,
    Hello,
    HelloCaps,
    HelloOk,
    Open,
    OpenOk,
    Target,
    Term,
    User,
    get_profile,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

DEFAULT_TERM = Term(80, 24, {"TERM": "xterm"})
DEFAULT_TARGET = Target("localhost", 22)
DEFAULT_USER = User("me")


class WireClient:
    """One raw connection. ``await WireClient.connect(url)`` then hello/open/...;
    every wait has a timeout."""

    def __init__(self, ws: ClientConnection, profile: str) -> None:
        self.ws = ws
        self.profile = get_profile(profile)
        self.out: dict[int, bytearray] = {}
        self.ctl: list[Ctl] = []

    @classmethod
    async def connect(cls, url: str, profile: str = "nimbus.v1", **kw: Any) -> WireClient:
        p = get_profile(profile)
        kw.setdefault("compression", None)
        kw.setdefault("max_size", 4 << 20)
        ws = await asyncio.wait_for(connect(url, subprotocols=list(p.subprotocols), **kw), 10)  # type: ignore[arg-type]
        return cls(ws, profile)

    async def send(self, m: Ctl | DataFrame) -> None:
        if isinstance(m, DataFrame):
            for f in self.profile.encode_data(m):
                await self.ws.send(f)
        else:
            await self.ws.send(self.profile.encode_ctl(m))

    async def recv(self, timeout: float = 10) -> Ctl | DataFrame:
        m = self.profile.decode(await asyncio.wait_for(self.ws.recv(), timeout), 1 << 30)
        if isinstance(m, DataFrame):
            self.out.setdefault(m.id, bytearray()).extend(m.payload)
        else:
            self.ctl.append(m)
        return m

    async def hello(self, token: str | None = None, ack: bool = True, resume: Any = None) -> HelloOk:
        auth = Auth("bearer", token) if token else Auth("none")
        await self.send(Hello(auth=auth, caps=HelloCaps(self.profile.id, ack), resume=resume))
        m = await self.recv()
        assert isinstance(m, HelloOk), m
        return m

    async def open(
        self, cid: int = 1, term: Term | None = DEFAULT_TERM, credit: int = 1 << 20,
        target: Target = DEFAULT_TARGET, user: User = DEFAULT_USER,
    ) -> OpenOk:
        await self.send(Open(cid, target, user, term))
        m = await self.until(lambda m: isinstance(m, (OpenOk,)) or getattr(m, "t", "") == "open_err")
        assert isinstance(m, OpenOk), m
        if credit:
            await self.send(Flow(cid, credit))
        return m

    async def type(self, cid: int, text: str | bytes) -> None:
        await self.send(DataFrame("stdout", cid, text.encode() if isinstance(text, str) else text))

    async def until(self, pred: Callable[[Ctl | DataFrame], bool], timeout: float = 10) -> Ctl | DataFrame:
        deadline = time.monotonic() + timeout
        while True:
            m = await self.recv(max(0.01, deadline - time.monotonic()))
            if pred(m):
                return m

    async def until_output(self, cid: int, needle: bytes, timeout: float = 10, grant: bool = True) -> bytes:
        """Read until ``needle`` is in channel ``cid``'s output, granting credit as it arrives."""
        deadline = time.monotonic() + timeout
        while needle not in self.out.get(cid, b""):
            m = await self.recv(max(0.01, deadline - time.monotonic()))
            if grant and isinstance(m, DataFrame) and m.payload:
                await self.send(Flow(cid, len(m.payload)))
        return bytes(self.out[cid])

    async def until_match(self, cid: int, pattern: bytes, timeout: float = 10) -> re.Match[bytes]:
        """Read (granting credit) until ``pattern`` matches channel ``cid``'s output."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while (m := rx.search(self.out.get(cid, b""))) is None:
            f = await self.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(f, DataFrame) and f.payload:
                await self.send(Flow(cid, len(f.payload)))
        return m

    async def until_exit(self, cid: int, timeout: float = 10) -> Exit:
        m = await self.until(lambda m: isinstance(m, Exit) and m.id == cid, timeout)
        assert isinstance(m, Exit)
        return m

    async def expect_close(self, timeout: float = 10) -> int:
        """Read (and discard) until the server closes; returns its close code."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - time.monotonic()))
        except ConnectionClosed:
            pass
        rcvd = self.ws.protocol.close_rcvd
        return rcvd.code if rcvd is not None else 1006

    async def close(self, code: int = 1000) -> None:
        await self.ws.close(code)

    async def close_channel(self, cid: int) -> None:
        await self.send(Close(cid))
