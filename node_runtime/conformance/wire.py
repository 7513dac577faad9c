"""Raw wire access for the conformance kit: one WebSocket plus one wire profile.

The kit talks to the server under test through :class:`Wire` only: a plain
``websockets`` client connection and the core's profile encoders/decoders.
No client session machine is involved, so a client bug cannot hide a server
bug.  :class:`Wire` is also a strict *observer*: every frame the server sends
is decoded with the negotiated ``maxFrame`` and checked against the
contract's client-side invariants --

* nothing precedes ``hello_ok``;
* no data on a channel beyond the credit granted on this connection
  (contract section 6, 12.1);
* no data after a channel's ``exit`` or after the server's ``close`` of it;
* server ``flow`` (input acknowledgement, 12.12) carries ``credit: 0`` and an
  ``ack`` that never decreases nor exceeds the input bytes sent.

A breach raises :class:`Violation`.  Every wait takes a timeout and raises
:class:`WaitTimeout` when it expires; a close by the server raises
:class:`ServerClosed` (except in :meth:`Wire.expect_close`).  The last frames
in both directions are kept, abbreviated, for failure reports.

:meth:`Wire.send` accounts for what goes out (``flow`` credit, input bytes,
``caps.ack``), so a frame sent by hand is checked against like one sent
by :meth:`Wire.grant` or :meth:`Wire.send_input`.  :class:`WireClient` is
the same wire with the short scripted API the project's own server tests
use (``hello()``, ``open(1)``, ``type(1, ...)``, ``until_output(...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from ...core.errors import CloseCode, ProtocolError, close_code_name
from ...core.messages import (
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
    OpenErr,
    OpenOk,
    Ping,
    Pong,
    Resize,
    ResumeRequest,
    ShareErr,
    ShareOk,
    Target,
    Term,
    User,
    Viewers,
    ctl_to_dict,
)
from ...core.profiles import DEFAULT_MAX_FRAME, Frame, WireProfile, get_profile

__all__ = [
    "ChannelView",
    "ConnectRefused",
    "KitFailure",
    "ServerClosed",
    "Skip",
    "Violation",
    "WaitTimeout",
    "Wire",
    "WireClient",
    "code_label",
    "raw_json_frame",
    "summarize_frame",
]

#: Largest frame the kit accepts from a server before it even decodes it.
_CLIENT_MAX_SIZE = 64 * 1024 * 1024
#: Payload bytes kept per channel for pattern matching (older bytes are dropped).
_BUF_LIMIT = 4 * 1024 * 1024
_LHDR = struct.Struct(">IBI")
_SECRET_KEYS = ("token", "resumeKey", "auth")


class KitFailure(Exception):
    """A case failed; ``str(exc)`` is the reason shown on the FAIL line."""


class Violation(KitFailure):
    """The server broke the contract (wrong frame, credit overrun, ...)."""


class WaitTimeout(KitFailure):
    """Something the case waited for did not happen in time."""


class ServerClosed(KitFailure):
    """The server closed the WebSocket while the case expected it open."""

    def __init__(self, code: int, reason: str, context: str = "") -> None:
        where = f" while {context}" if context else ""
        super().__init__(f"server closed the connection{where}: {code_label(code)} {reason!r}".rstrip())
        self.code = code
        self.reason = reason


class ConnectRefused(KitFailure):
    """The WebSocket upgrade failed (``status`` is the HTTP status, if any;
    ``error`` the ``websockets`` or OS exception behind it)."""

    def __init__(self, message: str, status: int | None = None, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class Skip(Exception):
    """The case does not apply to this server; ``str(exc)`` is the reason."""


def code_label(code: int | None) -> str:
    """``4014 MALFORMED_FRAME`` style label of a close code."""
    if code is None:
        return "no close code"
    name = close_code_name(code)
    return f"{code}" if name.startswith("UNKNOWN") else f"{code} {name}"


def _redact(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: ("…" if k in _SECRET_KEYS and isinstance(v, (str, dict)) else _redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact(v) for v in obj]
    return obj


def _short(text: str, limit: int = 110) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize_frame(frame: Frame, profile: WireProfile, max_frame: int = DEFAULT_MAX_FRAME) -> str:
    """A one-line, abbreviated, secret-free rendering of a WebSocket message."""
    try:
        m = profile.decode(frame, max(max_frame, len(frame)))
    except (ProtocolError, ValueError, KeyError, TypeError):
        if isinstance(frame, str):
            return f"text[{len(frame)}] {_short(repr(frame))} (undecodable)"
        return f"bin[{len(frame)}] {bytes(frame[:24]).hex(' ')}{' …' if len(frame) > 24 else ''} (undecodable)"
    if isinstance(m, DataFrame):
        kind = "text" if isinstance(frame, str) else "bin"
        return f"data {m.stream}#{m.id} {len(m.payload)}B {_short(repr(m.payload), 60)} ({kind}[{len(frame)}])"
    return _short(json.dumps(_redact(ctl_to_dict(m)), separators=(",", ":")), 140)


def raw_json_frame(profile_id: str, obj: Any) -> Frame:
    """Frame arbitrary JSON the way ``profile_id`` frames control messages.

    Used to send what the typed encoders refuse to build: unknown types,
    missing fields, wrong types.
    """
    text = json.dumps(obj, separators=(",", ":"))
    if profile_id == "lenpfx.v1":
        body = text.encode()
        return _LHDR.pack(5 + len(body), 0x10, 0) + body
    return text


@dataclass(slots=True)
class ChannelView:
    """What the kit observed of one channel on one connection."""

    id: int
    granted: int = 0
    received: int = 0
    frames: int = 0
    buf: bytearray = field(default_factory=bytearray)
    dropped: int = 0  # bytes trimmed from the front of ``buf``
    cursor: int = 0  # absolute offset: pattern searches start here
    window: int = 0  # auto-credit window (0: manual grants only)
    exit: Exit | None = None
    closed: bool = False  # the server's close for this id arrived
    open_ok: OpenOk | None = None
    open_err: OpenErr | None = None
    sent: int = 0  # input payload bytes sent
    acks: list[int] = field(default_factory=list)  # server input acks (12.12)

    @property
    def outstanding(self) -> int:
        """Credit granted on this connection and not yet spent."""
        return self.granted - self.received

    def data(self, start: int = 0) -> bytes:
        """Payload received from absolute offset ``start`` (clamped to what is kept)."""
        return bytes(self.buf[max(0, start - self.dropped) :])


class Wire:
    """One raw WebSocket to the server under test, decoded with one profile.

    ``ack`` says whether exactly-once resume (``caps.ack``) is in force, so
    automatic grants carry ``ack``.  Create with :meth:`open`.
    """

    def __init__(
        self,
        ws: ClientConnection,
        profile: WireProfile,
        *,
        timeout: float,
        label: str = "",
        log: deque[str] | None = None,
        t0: float | None = None,
    ) -> None:
        self.ws = ws
        self.profile = profile
        self.timeout = timeout
        self.label = label
        self.max_frame = DEFAULT_MAX_FRAME
        self.ready = False
        self.ack = False
        self.hello_ok: HelloOk | None = None
        self.channels: dict[int, ChannelView] = {}
        self.pongs: list[float] = []
        self.server_pings = 0
        self.ctl_seen: list[Ctl] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.log: deque[str] = log if log is not None else deque(maxlen=48)
        self._t0 = time.monotonic() if t0 is None else t0

    # ------------------------------------------------------------- opening

    @classmethod
    async def open(
        cls,
        url: str,
        profile: WireProfile,
        *,
        timeout: float,
        subprotocols: Sequence[str] | None = None,
        origin: str | None = None,
        label: str = "",
        log: deque[str] | None = None,
        t0: float | None = None,
        max_size: int = _CLIENT_MAX_SIZE,
    ) -> Wire:
        """Upgrade to a WebSocket requesting ``subprotocols`` (default: the profile's).

        ``max_size`` bounds one incoming WebSocket message before decoding.
        """
        protos = list(profile.subprotocols if subprotocols is None else subprotocols)
        try:
            ws = await asyncio.wait_for(
                connect(
                    url,
                    subprotocols=protos or None,  # type: ignore[arg-type]
                    origin=origin,  # type: ignore[arg-type]
                    compression=None,
                    proxy=None,
                    open_timeout=timeout,
                    close_timeout=min(2.0, timeout),
                    ping_interval=None,
                    max_size=max_size,
                    max_queue=4096,
                    user_agent_header="nimbus-ws-conformance",
                ),
                timeout + 1,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ConnectRefused(f"WebSocket upgrade refused with HTTP {status}", status, exc) from None
        except InvalidHandshake as exc:
            raise ConnectRefused(f"WebSocket upgrade failed: {exc}", error=exc) from None
        except (OSError, TimeoutError) as exc:
            raise ConnectRefused(f"cannot connect to {url}: {exc or type(exc).__name__}", error=exc) from None
        w = cls(ws, profile, timeout=timeout, label=label, log=log, t0=t0)
        w._note(">", f"upgrade subprotocols={protos} -> {ws.subprotocol!r}")
        return w

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server selected."""
        return self.ws.subprotocol

    # ------------------------------------------------------------- logging

    def _note(self, direction: str, text: str) -> None:
        tag = f"{self.label} " if self.label else ""
        self.log.append(f"{time.monotonic() - self._t0:6.3f} {tag}{direction} {text}")

    # ------------------------------------------------------------- sending

    async def send_frame(self, frame: Frame | bytes, *, note: str | None = None) -> None:
        """Send one raw WebSocket message (``str`` text, ``bytes`` binary)."""
        self._note(">", note or summarize_frame(frame, self.profile, self.max_frame))
        try:
            await asyncio.wait_for(self.ws.send(frame), self.timeout)
        except TimeoutError:
            raise WaitTimeout(f"sending a frame blocked for {self.timeout:g} s (server not reading)") from None
        except ConnectionClosed:
            self._closed_from_ws()
            raise ServerClosed(self.close_code or 1006, self.close_reason, "sending") from None

    async def send(self, m: Ctl | DataFrame) -> None:
        """Send one message encoded by the profile, and account for it.

        ``hello`` sets :attr:`ack` from its ``caps`` (``hello_ok`` may still
        refuse it); ``flow`` adds its credit to the channel's grants; data
        adds its payload to the channel's input bytes sent.
        """
        if isinstance(m, DataFrame):
            for frame in self.profile.encode_data(m, self.max_frame):
                await self.send_frame(frame)
            self.chan(m.id).sent += len(m.payload)
            return
        if isinstance(m, Hello):
            self.ack = bool(m.caps and m.caps.ack)
        elif isinstance(m, Flow):
            self.chan(m.id).granted += max(0, m.credit)
        await self.send_frame(self.profile.encode_ctl(m))

    async def send_json(self, obj: Any) -> None:
        """Send arbitrary JSON framed as a control message of this profile."""
        await self.send_frame(raw_json_frame(self.profile.id, obj))

    async def send_input(self, cid: int, payload: bytes, *, chunk: int | None = None) -> None:
        """Send client input (stdin) on ``cid``, in frames of at most ``chunk`` payload bytes."""
        step = chunk or max(1, self.max_frame - 128)
        for i in range(0, len(payload), step):
            await self.send(DataFrame("stdout", cid, payload[i : i + step]))

    async def grant(self, cid: int, n: int) -> None:
        """Grant ``n`` bytes of credit on ``cid`` (with ``ack`` under ``caps.ack``)."""
        await self.send(Flow(cid, n, self.chan(cid).received if self.ack else None))

    def auto_credit(self, cid: int, window: int) -> None:
        """Keep ``window`` bytes of credit outstanding on ``cid`` (0 turns it off)."""
        self.chan(cid).window = window

    async def top_up(self, cid: int) -> None:
        """Grant up to the auto-credit window now, if below half of it."""
        ch = self.chan(cid)
        if ch.window and ch.outstanding <= ch.window // 2 and not ch.closed:
            await self.grant(cid, ch.window - ch.outstanding)

    async def ping(self, ts: float) -> None:
        """Send a ``ping``."""
        await self.send(Ping(ts))

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the WebSocket (bounded by the connection's close timeout)."""
        if self.close_code is None:
            self._note(">", f"websocket close {code_label(code)}")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code, reason), self.timeout)
        self._closed_from_ws()

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (a network loss)."""
        self._note(">", "TCP connection dropped (no close frame)")
        self.ws.transport.abort()

    # ----------------------------------------------------------- receiving

    def chan(self, cid: int) -> ChannelView:
        """The view of channel ``cid`` (created on first use)."""
        ch = self.channels.get(cid)
        if ch is None:
            ch = self.channels[cid] = ChannelView(cid)
        return ch

    def _closed_from_ws(self) -> None:
        if self.close_code is not None:
            return
        proto = self.ws.protocol
        rcvd = proto.close_rcvd
        if rcvd is not None:
            self.close_code, self.close_reason = rcvd.code, rcvd.reason
        elif proto.state is State.CLOSED:
            self.close_code, self.close_reason = 1006, ""
        else:
            return
        self._note("<", f"websocket close {code_label(self.close_code)} {self.close_reason!r}")

    async def next(self, timeout: float | None = None, *, context: str = "") -> Ctl | DataFrame:
        """The next message from the server, decoded and checked.

        Answers server pings, keeps auto-credit windows topped up, and raises
        :class:`ServerClosed`, :class:`WaitTimeout` or :class:`Violation`.
        """
        t = self.timeout if timeout is None else timeout
        try:
            frame = await asyncio.wait_for(self.ws.recv(), t)
        except TimeoutError:
            raise WaitTimeout(f"nothing received for {t:g} s{f' while {context}' if context else ''}") from None
        except ConnectionClosed:
            self._closed_from_ws()
            raise ServerClosed(self.close_code or 1006, self.close_reason, context) from None
        return await self._accept(frame)

    async def _accept(self, frame: Frame) -> Ctl | DataFrame:
        try:
            m = self.profile.decode(frame, self.max_frame)
        except ProtocolError as exc:
            self._note("<", summarize_frame(frame, self.profile, self.max_frame))
            raise Violation(f"server sent an invalid frame ({exc.message}); a client closes {code_label(exc.code)}") from None
        self._note("<", summarize_frame(frame, self.profile, self.max_frame))
        if not self.ready:
            if not isinstance(m, HelloOk):
                raise Violation(f"server sent {_kind(m)} before hello_ok")
            self.ready = True
            self.hello_ok = m
            self.ack = self.ack and m.caps.ack
            for rc in m.caps.resumed or ():
                # Input acks count from the channel's start: a resumed channel's
                # baseline is what the server says it received (cases check that claim).
                ch = self.chan(rc.id)
                ch.sent = max(ch.sent, rc.rx)
            if m.caps.max_frame is not None:
                self.max_frame = m.caps.max_frame
            return m
        if isinstance(m, DataFrame):
            await self._on_data(m)
            return m
        self.ctl_seen.append(m)
        if isinstance(m, HelloOk):
            raise Violation("server sent a second hello_ok")
        if isinstance(m, Ping):
            await self.send(Pong(m.ts))
            self.server_pings += 1
        elif isinstance(m, Pong):
            self.pongs.append(m.ts)
        elif isinstance(m, OpenOk):
            self.chan(m.id).open_ok = m
        elif isinstance(m, OpenErr):
            self.chan(m.id).open_err = m
        elif isinstance(m, Exit):
            ch = self.chan(m.id)
            if ch.exit is not None:
                raise Violation(f"second exit on channel {m.id}")
            ch.exit = m
        elif isinstance(m, Close):
            self.chan(m.id).closed = True
        elif isinstance(m, Flow):
            self._on_server_flow(m)
        elif isinstance(m, (ShareOk, ShareErr, Viewers)):
            pass  # answers to share (caps.share), the owner's viewer list
        elif isinstance(m, Resize) and self.hello_ok is not None and self.hello_ok.caps.view is not None:
            pass  # a viewer session hears the shared terminal's size
        else:
            raise Violation(f"server sent a client-only message {m.t!r}")
        return m

    async def _on_data(self, df: DataFrame) -> None:
        ch = self.chan(df.id)
        n = len(df.payload)
        if ch.exit is not None:
            raise Violation(f"data on channel {df.id} after its exit")
        if ch.closed:
            raise Violation(f"data on channel {df.id} after the server's close of it")
        if n > ch.outstanding:
            raise Violation(
                f"{n} payload bytes on channel {df.id} with only {ch.outstanding} credit outstanding "
                f"(granted {ch.granted}, received {ch.received} before it): flow-control violation"
            )
        ch.received += n
        ch.frames += 1
        ch.buf += df.payload
        if len(ch.buf) > _BUF_LIMIT:
            cut = len(ch.buf) - _BUF_LIMIT // 2
            del ch.buf[:cut]
            ch.dropped += cut
        await self.top_up(df.id)

    def _on_server_flow(self, m: Flow) -> None:
        ch = self.chan(m.id)
        if not self.ack:
            raise Violation("server sent flow without caps.ack (12.12: only input acks under caps.ack)")
        if m.credit != 0 or m.ack is None:
            raise Violation(f"server flow must be credit 0 with an ack (got credit {m.credit}, ack {m.ack})")
        if ch.acks and m.ack < ch.acks[-1]:
            raise Violation(f"server input ack went backwards ({ch.acks[-1]} -> {m.ack})")
        if m.ack > ch.sent:
            raise Violation(f"server acknowledged {m.ack} input bytes on channel {m.id}, only {ch.sent} sent")
        ch.acks.append(m.ack)

    # ------------------------------------------------------------- waiting

    async def expect(
        self,
        pred: Callable[[Ctl | DataFrame], bool],
        what: str,
        timeout: float | None = None,
    ) -> Ctl | DataFrame:
        """Read until ``pred`` holds for a message (others are observed and skipped)."""
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"no {what} within {t:g} s")
            try:
                m = await self.next(left, context=f"waiting for {what}")
            except WaitTimeout:
                raise WaitTimeout(f"no {what} within {t:g} s") from None
            if pred(m):
                return m

    async def until_state(self, cond: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Read (observing every message) until ``cond()`` holds -- checked first, so a
        state reached by a message already read (an ack before the output it follows)
        does not wait for another one."""
        if cond():
            return
        await self.expect(lambda _m: cond(), what, timeout)

    async def expect_hello_ok(self, timeout: float | None = None) -> HelloOk:
        """The ``hello_ok`` answering our ``hello`` (must be the first frame)."""
        m = await self.next(timeout, context="waiting for hello_ok")
        assert isinstance(m, HelloOk)
        return m

    async def hello(self, h: Hello, timeout: float | None = None) -> HelloOk:
        """Send ``h`` and return the server's ``hello_ok``."""
        await self.send(h)
        return await self.expect_hello_ok(timeout)

    async def expect_ctl(self, t: type[Ctl], cid: int | None = None, timeout: float | None = None) -> Ctl:
        """The next control message of type ``t`` (and channel ``cid``)."""
        name = t.__name__
        what = f"{name}{f' for channel {cid}' if cid is not None else ''}"

        def pred(m: Ctl | DataFrame) -> bool:
            return isinstance(m, t) and (cid is None or getattr(m, "id", None) == cid)

        m = await self.expect(pred, what, timeout)
        assert not isinstance(m, DataFrame)
        return m

    async def until_output(
        self, cid: int, pattern: bytes | re.Pattern[bytes], what: str, timeout: float | None = None
    ) -> re.Match[bytes]:
        """Read until channel ``cid``'s output (after the cursor) matches ``pattern``.

        The cursor then moves past the match, so markers are consumed in order.
        """
        rx = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        ch = self.chan(cid)
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        while True:
            start = max(0, ch.cursor - ch.dropped)
            mt = rx.search(ch.buf, start)
            if mt is not None:
                ch.cursor = ch.dropped + mt.end()
                return mt
            if ch.exit is not None:
                raise KitFailure(f"channel {cid} exited (code {ch.exit.code}, sig {ch.exit.sig}) before {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                tail = bytes(ch.buf[-80:])
                raise WaitTimeout(f"no {what} on channel {cid} within {t:g} s (last output {tail!r})")
            try:
                await self.next(left, context=f"waiting for {what}")
            except WaitTimeout:
                continue

    async def expect_close(self, codes: set[int], what: str, timeout: float | None = None) -> int:
        """Read (and discard) until the server closes; fail unless the code is in ``codes``."""
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        want = " or ".join(code_label(c) for c in sorted(codes))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"no close within {t:g} s after {what} (expected {want}); connection still open")
            try:
                await self.next(left)
            except ServerClosed as exc:
                if exc.code not in codes:
                    raise KitFailure(f"closed with {code_label(exc.code)} {exc.reason!r} after {what}, expected {want}") from None
                return exc.code
            except WaitTimeout:
                continue

    async def quiet(self, window: float) -> list[DataFrame]:
        """Observe for ``window`` seconds; return the data frames that arrived.

        Control messages are processed as usual; a close raises.
        """
        got: list[DataFrame] = []
        deadline = time.monotonic() + window
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            try:
                m = await self.next(left, context="observing")
            except WaitTimeout:
                return got
            if isinstance(m, DataFrame):
                got.append(m)

    async def roundtrip(self, what: str = "liveness check") -> None:
        """Ping and wait for the matching pong: the connection is alive and responsive."""
        ts = round(time.time() * 1000, 3) + 0.5
        await self.ping(ts)
        await self.expect(lambda m: isinstance(m, Pong) and m.ts == ts, f"pong ({what})")


def _kind(m: Ctl | DataFrame) -> str:
    return f"data on channel {m.id}" if isinstance(m, DataFrame) else repr(m.t)


#: Close codes a server may use for an oversize frame (contract section 5).
OVERSIZE_CODES = {int(CloseCode.MESSAGE_TOO_BIG), int(CloseCode.FRAME_TOO_LARGE)}
#: Close codes a server may use for the control-rate limit (section 9).
RATE_CODES = {int(CloseCode.POLICY_DENIED), int(CloseCode.POLICY_VIOLATION)}


#: Defaults of :meth:`WireClient.open`.
DEFAULT_TERM = Term(80, 24, {"TERM": "xterm"})
DEFAULT_TARGET = Target("localhost", 22)
DEFAULT_USER = User("me")


class WireClient:
    """A scripted raw client for server tests, on one :class:`Wire`.

    The short, test-flavoured API of the project's server tests
    (``hello()``, ``open(1)``, ``type(1, "ls\\n")``, ``until_output(1, b"...")``)
    over the kit's wire: every frame the server sends is still decoded and
    checked by :class:`Wire` (credit, ordering, acks), so a test also fails on
    a contract breach.  Differences from the kit's own calls, kept for the
    tests' sake: waits raise :class:`TimeoutError`; a refused upgrade raises
    the ``websockets`` exception (``InvalidStatus`` ...); :attr:`out` keeps
    every payload byte per channel (both streams, untrimmed) until a test
    pops it; :attr:`ctl` lists every control message received.
    """

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.out: dict[int, bytearray] = {}
        self.ctl: list[Ctl] = []

    @classmethod
    async def connect(
        cls,
        url: str,
        profile: str = "nimbus.v1",
        *,
        origin: str | None = None,
        max_size: int = _CLIENT_MAX_SIZE,
        timeout: float = 10.0,
    ) -> WireClient:
        """Upgrade to a WebSocket speaking ``profile``."""
        try:
            wire = await Wire.open(url, get_profile(profile), timeout=timeout, origin=origin, max_size=max_size)
        except ConnectRefused as exc:
            if exc.error is not None:
                raise exc.error from None
            raise
        return cls(wire)

    @property
    def ws(self) -> ClientConnection:
        """The ``websockets`` connection (to send raw bytes or drop the TCP connection)."""
        return self.wire.ws

    @property
    def profile(self) -> WireProfile:
        """The wire profile in use."""
        return self.wire.profile

    async def send(self, m: Ctl | DataFrame) -> None:
        """Send one message (see :meth:`Wire.send`)."""
        await self.wire.send(m)

    async def recv(self, timeout: float = 10) -> Ctl | DataFrame:
        """The next message from the server (``TimeoutError`` if none arrives in time)."""
        try:
            m = await self.wire.next(timeout)
        except WaitTimeout as exc:
            raise TimeoutError(str(exc)) from None
        if isinstance(m, DataFrame):
            self.out.setdefault(m.id, bytearray()).extend(m.payload)
        else:
            self.ctl.append(m)
        return m

    async def hello(self, token: str | None = None, ack: bool = True, resume: ResumeRequest | None = None) -> HelloOk:
        """``hello`` (bearer ``token`` or no auth) and its ``hello_ok``."""
        auth = Auth("bearer", token) if token else Auth("none")
        m = await self.wire.hello(Hello(auth=auth, caps=HelloCaps(self.profile.id, ack), resume=resume))
        self.ctl.append(m)
        return m

    async def open(
        self,
        cid: int = 1,
        term: Term | None = DEFAULT_TERM,
        credit: int = 1 << 20,
        target: Target = DEFAULT_TARGET,
        user: User = DEFAULT_USER,
    ) -> OpenOk:
        """Open channel ``cid``, require ``open_ok``, then grant ``credit`` (0: none)."""
        await self.send(Open(cid, target, user, term))
        m = await self.until(lambda m: isinstance(m, (OpenOk, OpenErr)) and m.id == cid)
        assert isinstance(m, OpenOk), m
        if credit:
            await self.send(Flow(cid, credit))
        return m

    async def type(self, cid: int, text: str | bytes) -> None:
        """Send ``text`` as input on ``cid`` (one data message)."""
        await self.send(DataFrame("stdout", cid, text.encode() if isinstance(text, str) else text))

    async def until(self, pred: Callable[[Ctl | DataFrame], bool], timeout: float = 10) -> Ctl | DataFrame:
        """Read until ``pred`` holds for a message; return it."""
        deadline = time.monotonic() + timeout
        while True:
            m = await self.recv(max(0.01, deadline - time.monotonic()))
            if pred(m):
                return m

    async def until_output(self, cid: int, needle: bytes, timeout: float = 10, grant: bool = True) -> bytes:
        """Read until ``needle`` is anywhere in ``cid``'s output, granting credit back as data arrives."""
        rx = re.compile(re.escape(needle))
        await self.until_match(cid, rx, timeout, grant)
        return bytes(self.out[cid])

    async def until_match(
        self, cid: int, pattern: bytes | re.Pattern[bytes], timeout: float = 10, grant: bool = True
    ) -> re.Match[bytes]:
        """Read (granting credit back) until ``pattern`` matches ``cid``'s output."""
        rx = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (mt := rx.search(self.out.get(cid, b""))) is None:
            m = await self.recv(max(0.01, deadline - time.monotonic()))
            if grant and isinstance(m, DataFrame) and m.payload and m.id == cid:
                await self.send(Flow(cid, len(m.payload)))
        return mt

    async def until_exit(self, cid: int, timeout: float = 10) -> Exit:
        """Read until ``cid``'s ``exit``."""
        m = await self.until(lambda m: isinstance(m, Exit) and m.id == cid, timeout)
        assert isinstance(m, Exit)
        return m

    async def expect_close(self, timeout: float = 10) -> int:
        """Read (and discard) until the server closes; its close code (1006: dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.recv(max(0.01, deadline - time.monotonic()))
            except ServerClosed as exc:
                return exc.code

    async def close(self, code: int = CloseCode.NORMAL) -> None:
        """Close the WebSocket with ``code``."""
        await self.wire.close(code)

    async def close_channel(self, cid: int) -> None:
        """Send ``close`` for channel ``cid``."""
        await self.send(Close(cid))
