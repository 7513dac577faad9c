"""The client session machine (sans-I/O).

:class:`ClientSession` is what every client runtime (CPython, Pyodide in a
browser, Pyodide under Node) wraps.  It is fed what happened --
``transport_opened``, ``receive_frame``, ``transport_closed``, ``tick(now)``
-- and what the application wants -- ``open_channel``, ``send_input``,
``resize``, ``signal``, ``close_channel``, ``consumed``, ``set_pause``,
``set_buffered_amount``, ``close`` -- and answers with frames to send
(:meth:`frames_to_send`), typed events (:meth:`events`) and the time it next
needs a tick (:meth:`next_deadline`).  Transport actions arrive as
:class:`~.events.OpenTransport` / :class:`~.events.CloseTransport` events.

After a :class:`~.events.CloseTransport`, the runtime must detach that
socket's listeners and never report its events again.

Time is one injected clock in seconds (wall clock: resume expiry is
persisted across page reloads); randomness (backoff jitter) is injected.

Memory bounds per channel: input kept for retransmission is at most
``input_buffer_limit`` bytes (``send_input`` accepts less when full); output
is never buffered here -- it is handed to the application at once, and the
credit window bounds what the server may send ahead of consumption.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import RETRYABLE_CLOSE_CODES, CloseCode, CloseError, ProtocolError, close_code_name
from .events import (
    ChannelClosed,
    ChannelData,
    ChannelExit,
    ChannelOpened,
    ChannelOpenFailed,
    ClientEvent,
    CloseTransport,
    ConnectionClosed,
    Diagnostic,
    OpenTransport,
    PolicyEvent,
    StateChanged,
)
from .flow import (
    DEFAULT_HIGH_WATER,
    DEFAULT_LOW_WATER,
    DEFAULT_MAX_WINDOW,
    DEFAULT_WINDOW,
    ByteLog,
    CreditWindow,
    PauseSet,
)
from .messages import (
    Auth,
    Close,
    Ctl,
    DataFrame,
    Eof,
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
    ResumeChannel,
    ResumeRequest,
    Signal,
    Target,
    Term,
    User,
)
from .profiles import DEFAULT_MAX_FRAME, Frame, WireProfile, get_profile
from .resume import NullResumeStore, ResumeState, ResumeStore, StoredChannel
from .retry import RetryPolicy
from .state import (
    CHANNEL_TRANSITIONS,
    CONNECTION_TRANSITIONS,
    ChanEvent,
    ChannelState,
    ConnEvent,
    ConnState,
    transition,
)

__all__ = ["ClientChannel", "ClientOptions", "ClientSession"]


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Tunables of a client session; defaults are the contract's."""

    profile: str | WireProfile = "nimbus.v1"
    ack: bool = True
    client_info: Mapping[str, str] | None = None
    heartbeat_interval: float = 20.0
    heartbeat_misses: int = 3
    handshake_timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    window: int = DEFAULT_WINDOW
    max_window: int = DEFAULT_MAX_WINDOW
    high_water_mark: int = DEFAULT_HIGH_WATER
    low_water_mark: int = DEFAULT_LOW_WATER
    #: Input bytes kept per channel until the server acknowledges them.
    input_buffer_limit: int = 1 << 20
    #: Minimum seconds between two ``resize`` messages of one channel (20/s: well
    #: inside the server's 50 control messages/s, which resizes count against).
    resize_interval: float = 0.05
    #: Seconds a persisted resume state stays usable.
    resume_ttl: float = 60.0
    #: Ping right after ``hello_ok``: RTT is known at once (status bars, the
    #: adaptive window) instead of after the first heartbeat.  The runtimes
    #: turn it on; off by default so the bare machine sends only what it must.
    ping_on_ready: bool = False


@dataclass(slots=True, eq=False)
class ClientChannel:
    """Client-side state of one channel (read-only for runtimes)."""

    id: int
    state: ChannelState = ChannelState.OPENING
    open_msg: Open | None = None
    open_sent: bool = False
    resume_key: str | None = None
    credit: CreditWindow = field(default_factory=CreditWindow)
    #: Input not yet acknowledged (with ``caps.ack``) or not yet sent (without).
    tx: ByteLog = field(default_factory=ByteLog)
    tx_sent: int = 0
    size: tuple[int, int] | None = None
    size_sent: tuple[int, int] | None = None
    resize_at: float = float("-inf")
    exit: tuple[int | None, str | None] | None = None
    #: The application closed its input; ``eof`` follows the input (again after a resume).
    eof: bool = False
    eof_sent: bool = False


class ClientSession:
    """One logical client connection: handshake, channels, flow, heartbeats, resume."""

    def __init__(
        self,
        options: ClientOptions | None = None,
        *,
        now: float,
        rand: Callable[[], float],
        store: ResumeStore | None = None,
    ) -> None:
        self.options = options or ClientOptions()
        self.profile: WireProfile = get_profile(self.options.profile)
        self._rand = rand
        self._store: ResumeStore = store if store is not None else NullResumeStore()
        self._state = ConnState.IDLE
        self._frames: list[Frame] = []
        self._events: list[ClientEvent] = []
        self._channels: dict[int, ClientChannel] = {}
        self._next_id = 1
        self._pause = PauseSet(self.options.high_water_mark, self.options.low_water_mark)
        self._max_frame = DEFAULT_MAX_FRAME
        self._ack = False
        self._resume: ResumeState | None = None
        self._resume_ttl = self.options.resume_ttl
        self._resuming = False
        self._was_ready = False
        self._attempt = 0
        self._transport = False  # a socket is open or opening
        self._reconnect_at: float | None = None
        self._handshake_deadline: float | None = None
        self._next_ping: float | None = None
        self._ping_ts: float | None = None
        self._missed = 0
        self._resize_due: float | None = None
        self.rtt: float | None = None
        self.buffered_amount = 0
        self.server_name: str | None = None
        self._server_eof = False
        self._server_command = False
        self.ignored_frames = 0
        self.error: CloseError | None = None
        self._load_resume(now)

    # ------------------------------------------------------------ properties

    @property
    def state(self) -> ConnState:
        """Current connection state (the authority for UIs)."""
        return self._state

    @property
    def pause_reasons(self) -> frozenset[str]:
        """Reasons credit is currently withheld."""
        return frozenset(self._pause.reasons)

    def paused_for(self, reason: str) -> bool:
        """Whether ``reason`` withholds credit now (cheaper than :attr:`pause_reasons`)."""
        return reason in self._pause.reasons

    @property
    def max_frame(self) -> int:
        """``maxFrame`` in force (the server's, once ``hello_ok`` arrived)."""
        return self._max_frame

    @property
    def ack_enabled(self) -> bool:
        """Whether exactly-once resume (``caps.ack``) was negotiated."""
        return self._ack

    def channel(self, cid: int) -> ClientChannel | None:
        """The channel ``cid``, or ``None``."""
        return self._channels.get(cid)

    def channel_ids(self) -> list[int]:
        """Ids of every channel not yet closed."""
        return list(self._channels)

    # ------------------------------------------------------------- outputs

    def frames_to_send(self) -> list[Frame]:
        """Frames to write to the socket, in order (drains the queue)."""
        out, self._frames = self._frames, []
        return out

    def has_output(self) -> bool:
        """True when :meth:`frames_to_send` or :meth:`events` has something."""
        return bool(self._frames) or bool(self._events)

    def events(self) -> list[ClientEvent]:
        """Events since the last call, in order (drains the queue)."""
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        """Earliest time :meth:`tick` must be called, or ``None``."""
        ds = [
            d
            for d in (self._reconnect_at, self._handshake_deadline, self._next_ping, self._resize_due)
            if d is not None
        ]
        return min(ds) if ds else None

    # ---------------------------------------------------------- lifecycle

    def connect(self, now: float) -> None:
        """Start connecting: emits :class:`OpenTransport`."""
        self._move(ConnEvent.CONNECT, "connect")
        self._open_transport(now)

    def transport_opened(self, now: float, auth: Auth | None = None) -> None:
        """The WebSocket is open; ``auth`` is what goes into ``hello.auth``."""
        if not self._transport or self._state not in (ConnState.CONNECTING, ConnState.RECONNECTING):
            return
        self._move(ConnEvent.OPENED, "socket open")
        resume = None
        self._resuming = self._resume is not None
        if self._resume is not None:
            chans = tuple(
                ResumeChannel(c.id, c.resume_key, c.credit.received)
                for c in self._channels.values()
                if c.resume_key is not None
            )
            resume = ResumeRequest(self._resume.token, chans)
        hello = Hello(
            auth=auth,
            caps=HelloCaps(profile=self.profile.id, ack=self.options.ack),
            resume=resume,
            client=dict(self.options.client_info) if self.options.client_info else None,
        )
        self._send_ctl(hello)
        self._diag(now, "handshake", "hello_sent", resume=resume is not None)

    def transport_closed(self, now: float, code: int = 1006, reason: str = "") -> None:
        """The socket closed (or failed to open) without us asking."""
        if not self._transport:
            return
        self._transport = False
        self._handshake_deadline = None
        self._next_ping = None
        self._diag(now, "transport", "transport_closed", wsCode=code, reason=reason[:120])
        if self._state == ConnState.CLOSED:
            return
        if code == CloseCode.RESUME_FAILED:
            self._diag(now, "resume", "resume_rejected", wsCode=code)
            self._fail(now, CloseError.from_close(code, reason), close_socket=False)
            return
        resumable = self._was_ready and self._resume is not None
        if code in RETRYABLE_CLOSE_CODES and (resumable or self._state == ConnState.RECONNECTING):
            self._lost(now, f"transport closed ({code})")
        elif code == CloseCode.NORMAL:
            self._finish(now, None, "closed by server")
        else:
            err = CloseError.from_close(code, reason)
            if code in RETRYABLE_CLOSE_CODES and not self._was_ready:
                err = CloseError(code, err.app_code, "CONNECT_FAILED", reason or "could not connect")
            elif code in RETRYABLE_CLOSE_CODES:
                err = CloseError(code, err.app_code, "CONNECTION_LOST", "connection lost; resume unavailable")
            self._fail(now, err, close_socket=False)

    def close(self, now: float, code: int = 1000, reason: str = "") -> None:
        """Close for good: with 1000 the server ends the session and its channels."""
        if self._state == ConnState.CLOSED:
            return
        if self._transport:
            self._events.append(CloseTransport(code, reason))
            self._transport = False
        if code == CloseCode.NORMAL:
            self._clear_resume(now)
        else:
            self._save_resume(now)  # the server keeps the session: store the final rx for a later resume
        self._finish(now, None, "closed by application")

    def tick(self, now: float) -> None:
        """Fire every deadline that has passed."""
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._handshake_deadline = None
            self._diag(now, "handshake", "handshake_timeout")
            self._drop_transport(now, CloseCode.TIMEOUT, "handshake timeout")
        if self._reconnect_at is not None and now >= self._reconnect_at:
            self._reconnect_at = None
            self._diag(now, "reconnect", "reconnect_attempt", attempt=self._attempt)
            self._open_transport(now)
        if self._next_ping is not None and now >= self._next_ping:
            if self._ping_ts is not None:
                self._missed += 1
                self._diag(now, "heartbeat", "heartbeat_miss", missed=self._missed)
            if self._missed >= self.options.heartbeat_misses:
                self._diag(now, "heartbeat", "heartbeat_timeout", missed=self._missed)
                self._drop_transport(now, CloseCode.TIMEOUT, "heartbeat timeout")
            else:
                self._ping_ts = round(now * 1000, 3)
                self._send_ctl(Ping(self._ping_ts))
                self._next_ping = now + self.options.heartbeat_interval
        if self._resize_due is not None and now >= self._resize_due:
            self._resize_due = None
            for ch in self._channels.values():
                self._flush_resize(ch, now)

    def ping(self, now: float) -> None:
        """Send a ping now (e.g. to verify a suspect connection after the page was hidden)."""
        if self._state == ConnState.READY:
            self._ping_ts = round(now * 1000, 3)
            self._send_ctl(Ping(self._ping_ts))
            self._next_ping = now + self.options.heartbeat_interval

    def persist(self, now: float) -> None:
        """Write the resume state now (call on page hide/unload)."""
        self._save_resume(now)

    # ------------------------------------------------------------- channels

    def open_channel(
        self,
        target: Target,
        user: User,
        term: Term | None = None,
        now: float = 0.0,
        command: str | None = None,
    ) -> int:
        """Ask for a new channel; returns its id (``open`` goes out once ready).

        ``command`` [ext] runs instead of the login shell; a server that does
        not announce ``caps.command`` fails the channel with ``UNSUPPORTED``
        rather than silently starting a shell.
        """
        if self._state == ConnState.CLOSED:
            raise RuntimeError("connection is closed")
        cid = self._next_id
        while cid in self._channels:
            cid += 1
        self._next_id = cid + 1
        msg = Open(cid, target, user, term, command)
        ch = ClientChannel(
            cid,
            open_msg=msg,
            credit=CreditWindow(self.options.window, self.options.max_window),
        )
        if term is not None:
            ch.size = ch.size_sent = (term.cols, term.rows)
        self._channels[cid] = ch
        if self._state == ConnState.READY:
            self._send_open(ch)
        return cid

    def send_eof(self, cid: int) -> None:
        """No more input on channel ``cid`` (after everything already sent).

        Needs the server's ``caps.eof``; raises ``ValueError`` without it.
        """
        ch = self._channels.get(cid)
        if ch is None or ch.state not in (ChannelState.OPEN, ChannelState.OPENING):
            raise ValueError(f"channel {cid} is not open")
        if self._state == ConnState.READY and not self._server_eof:
            raise ValueError("the server does not support eof")
        ch.eof = True
        self._flush_input(ch)

    def input_capacity(self, cid: int) -> int:
        """Input bytes :meth:`send_input` would accept now for channel ``cid``."""
        ch = self._channels.get(cid)
        if ch is None or ch.state not in (ChannelState.OPEN, ChannelState.OPENING):
            return 0
        if self._pause.reasons & {"transport"}:
            return 0
        return max(0, self.options.input_buffer_limit - ch.tx.size)

    def send_input(self, cid: int, data: bytes, now: float = 0.0) -> int:
        """Queue input for channel ``cid``; returns how many bytes were accepted.

        Fewer than ``len(data)`` are accepted while the retransmission buffer
        is full or the transport is paused; wait for capacity and retry.
        """
        ch = self._channels.get(cid)
        if ch is None or ch.state not in (ChannelState.OPEN, ChannelState.OPENING):
            raise ValueError(f"channel {cid} is not open")
        if ch.eof:
            raise ValueError(f"channel {cid}: input already ended (eof)")
        n = min(len(data), self.input_capacity(cid))
        if n:
            ch.tx.append("stdout", bytes(data[:n]) if n < len(data) else bytes(data))
            self._flush_input(ch)
        return n

    def resize(self, cid: int, cols: int, rows: int, now: float) -> None:
        """Resize channel ``cid``'s terminal; coalesced to one message per ``resize_interval``."""
        ch = self._channels.get(cid)
        if ch is None:
            return
        if ch.size is not None and ch.size != ch.size_sent and ch.resize_at + self.options.resize_interval > now:
            self._policy("resize_coalesced", cid)
        ch.size = (cols, rows)
        self._flush_resize(ch, now)

    def signal(self, cid: int, sig: str) -> None:
        """Send ``sig`` (``INT``, ``TERM``, ``HUP``...) to channel ``cid``'s process."""
        ch = self._channels.get(cid)
        if ch is not None and ch.state == ChannelState.OPEN and self._state == ConnState.READY:
            self._send_ctl(Signal(cid, sig))

    def close_channel(self, cid: int, reason: str | None = None) -> None:
        """Close channel ``cid``; :class:`ChannelClosed` follows the server's answer."""
        ch = self._channels.get(cid)
        if ch is None or ch.state in (ChannelState.CLOSING, ChannelState.CLOSED):
            return
        if ch.state == ChannelState.OPENING and not ch.open_sent:
            self._chan(ch, ChanEvent.LOST)
            self._forget(ch, "closed before open", None)
            return
        self._chan(ch, ChanEvent.LOCAL_CLOSE)
        if self._state == ConnState.READY:
            self._send_ctl(Close(cid, reason))

    def consumed(self, cid: int, n: int, now: float) -> None:
        """The application consumed ``n`` bytes of channel ``cid``: may grant credit."""
        ch = self._channels.get(cid)
        if ch is None:
            return
        ch.credit.on_consumed(n)
        self._maybe_grant(ch, now)

    def set_pause(self, reason: str, paused: bool, now: float) -> None:
        """Pause or resume credit for ``reason`` (``visibility``, ``offline``, ``transport``)."""
        if self._pause.set(reason, paused):
            self._on_pause_change(reason, paused, now)

    def set_buffered_amount(self, amount: int, now: float) -> None:
        """Feed the socket's ``bufferedAmount``: crosses pause ``transport`` at the marks."""
        self.buffered_amount = amount
        crossed = self._pause.buffered(amount)
        if crossed is not None:
            self._diag(now, "flow", "backpressure_high" if crossed else "backpressure_low")
            self._on_pause_change("transport", crossed, now)

    # ------------------------------------------------------------- receiving

    def receive_data(self, frame: Frame, now: float) -> ChannelData | None:
        """:meth:`receive_frame`, returning the event instead of queueing it in the common case.

        When no event was queued before and the frame produced exactly one
        :class:`ChannelData` (a data frame on an open channel), that event
        is returned and not queued: a runtime can hand it over without a
        drain.  Otherwise ``None``, and everything is queued as usual.
        """
        events = self._events
        if events:
            self.receive_frame(frame, now)
            return None
        self.receive_frame(frame, now)
        events = self._events
        if len(events) == 1 and type(events[0]) is ChannelData:
            return events.pop()  # type: ignore[return-value]
        return None

    def receive_frame(self, frame: Frame, now: float) -> None:
        """Feed one WebSocket message from the server."""
        if not self._transport or self._state is ConnState.CLOSED:
            return
        self._missed = 0
        try:
            msg = self.profile.decode(frame, self._max_frame)
            if self._state is ConnState.AUTHENTICATING:
                if not isinstance(msg, HelloOk):
                    raise ProtocolError(CloseCode.BAD_HELLO, f"expected hello_ok, got {_kind(msg)}")
                self._on_hello_ok(msg, now)
            elif isinstance(msg, DataFrame):
                self._on_data(msg, now)
            else:
                self._on_ctl(msg, now)
        except ProtocolError as exc:
            self._diag(now, "protocol", "protocol_error", closeCode=int(exc.code), message=exc.message)
            self._events.append(CloseTransport(int(exc.code), exc.message[:120]))
            self._transport = False
            self._fail(now, CloseError(int(exc.code), int(exc.code), exc.code.name, exc.message), False)

    def _on_hello_ok(self, m: HelloOk, now: float) -> None:
        if m.caps.profile_accepted != self.profile.id:
            raise ProtocolError(CloseCode.UNSUPPORTED_PROFILE, f"server accepted {m.caps.profile_accepted!r}")
        self._handshake_deadline = None
        self._max_frame = m.caps.max_frame or DEFAULT_MAX_FRAME
        self.profile.on_negotiated(self._max_frame)
        self._ack = self.options.ack and m.caps.ack
        self.server_name = m.server
        self._server_eof = m.caps.eof
        self._server_command = m.caps.command
        resumed = self._resuming
        self._resuming = False
        self._attempt = 0
        self._was_ready = True
        self._move(ConnEvent.ACCEPTED, "resumed" if resumed else "hello_ok")
        self._diag(now, "handshake", "hello_ok", server=m.server, ack=self._ack, profile=self.profile.id)
        if resumed:
            back = {c.id: c.rx for c in (m.caps.resumed or ())}
            self._diag(now, "resume", "resume_accepted", channels=len(back))
            for ch in list(self._channels.values()):
                if ch.open_sent and ch.id in back:
                    self._resume_channel(ch, back[ch.id], now)
                elif ch.open_sent and ch.state == ChannelState.CLOSING:
                    # Our close reached the server (it forgot the channel); its reply was lost.
                    self._chan(ch, ChanEvent.PEER_CLOSE)
                    self._forget(ch, "closed", None)
                elif ch.open_sent:
                    self._chan(ch, ChanEvent.LOST)
                    self._lose(ch)
        if m.resume is not None:
            self._resume_ttl = min(m.resume.ttl_ms / 1000, self.options.resume_ttl)
            self._resume = ResumeState(m.resume.token, now + self._resume_ttl, self._ack, self.profile.id)
        else:
            self._resume = None
        self._save_resume(now)
        self._next_ping = now + self.options.heartbeat_interval
        self._ping_ts = None
        self._missed = 0
        if self.options.ping_on_ready:
            self.ping(now)
        for ch in list(self._channels.values()):
            if not ch.open_sent and ch.state == ChannelState.OPENING:
                self._send_open(ch)

    def _resume_channel(self, ch: ClientChannel, rx: int, now: float) -> None:
        if self._ack:
            if ch.tx.start <= rx <= ch.tx.end:
                pass  # keep [start, rx) until acked: the server still holds it unwritten (bounds its input buffer)
            elif ch.tx.size == 0:
                ch.tx.clear(rx)
            else:
                self._diag(now, "resume", "input_gap", channel=ch.id, rx=rx, kept=ch.tx.start)
                self._chan(ch, ChanEvent.LOST)
                self._lose(ch)
                return
        ch.tx_sent = rx if self._ack else ch.tx.start
        ch.credit.restart()
        if ch.state == ChannelState.OPENING:
            if ch.resume_key is None:
                return  # open_ok still to come (the server repeats it after a resume)
            self._chan(ch, ChanEvent.OPEN_OK)  # restored from storage
        self._events.append(ChannelOpened(ch.id, resumed=True))
        ch.eof_sent = False  # an eof in flight at the drop may be lost: repeat it after the input
        self._flush_input(ch)
        if ch.size is not None and ch.state == ChannelState.OPEN:
            ch.size_sent = None
            self._flush_resize(ch, now)
        if ch.state == ChannelState.CLOSING:
            self._send_ctl(Close(ch.id))
        else:
            self._maybe_grant(ch, now)

    def _on_data(self, df: DataFrame, now: float) -> None:
        ch = self._channels.get(df.id)
        if ch is None or ch.state is ChannelState.OPENING:
            self.ignored_frames += 1
            return
        n = len(df.payload)
        if not ch.credit.on_data(n, starvation=not self._pause.reasons):
            raise ProtocolError(
                CloseCode.FLOW_VIOLATION,
                f"channel {df.id}: {ch.credit.received} bytes received, {ch.credit.granted} granted",
            )
        if ch.state is ChannelState.OPEN:
            self._events.append(ChannelData(df.id, df.stream, df.payload))
        else:
            ch.credit.on_consumed(n)  # nobody will read it

    def _on_ctl(self, m: Ctl, now: float) -> None:
        match m:
            case Ping():
                self._send_ctl(Pong(m.ts))
            case Pong():
                if self._ping_ts is not None and m.ts == self._ping_ts:
                    self.rtt = max(0.0, now - m.ts / 1000)
                    self._ping_ts = None
            case OpenOk():
                ch = self._channels.get(m.id)
                if ch is None or ch.state not in (ChannelState.OPENING, ChannelState.CLOSING):
                    self.ignored_frames += 1  # a repeat after a resume, or a channel we closed
                    return
                ch.resume_key = m.resume_key
                self._save_resume(now)  # before any data of the channel is processed
                if self._chan(ch, ChanEvent.OPEN_OK) == ChannelState.CLOSING:
                    self._send_ctl(Close(ch.id))  # closed by the application meanwhile
                else:
                    self._events.append(ChannelOpened(ch.id))
                    self._flush_input(ch)
                    self._flush_resize(ch, now)
                    self._maybe_grant(ch, now)
            case OpenErr():
                ch = self._channels.get(m.id)
                if ch is not None and ch.state in (ChannelState.OPENING, ChannelState.CLOSING):
                    self._chan(ch, ChanEvent.OPEN_ERR)
                    self._events.append(ChannelOpenFailed(m.id, m.code, m.msg))
                    self._forget(ch, "open failed", m.code, emit=False)
            case Exit():
                ch = self._channels.get(m.id)
                if ch is None:
                    self.ignored_frames += 1
                    return
                if ch.state == ChannelState.OPEN:
                    ch.exit = (m.code, m.sig)
                    self._chan(ch, ChanEvent.EXIT)
                    self._events.append(ChannelExit(m.id, m.code, m.sig))
                    self._chan(ch, ChanEvent.LOCAL_CLOSE)
                    self._send_ctl(Close(m.id))
                elif ch.state == ChannelState.CLOSING:
                    self._send_ctl(Close(m.id))  # repeat our acknowledgement after a resume
            case Close():
                ch = self._channels.get(m.id)
                if ch is None:
                    return
                was = ch.state
                if was == ChannelState.OPENING:
                    # A server MAY close a channel before open_ok (PROTOCOL.md 6): the open failed.
                    if ch.open_sent:
                        self._chan(ch, ChanEvent.OPEN_ERR)
                        self._send_ctl(Close(m.id))
                        self._events.append(ChannelOpenFailed(m.id, "CLOSED", m.reason or "closed by server"))
                        self._forget(ch, "open failed", "CLOSED", emit=False)
                    return
                self._chan(ch, ChanEvent.PEER_CLOSE)
                if was in (ChannelState.OPEN, ChannelState.EXITED):
                    self._send_ctl(Close(m.id))
                self._forget(ch, m.reason or "closed", None)
            case Flow():
                ch = self._channels.get(m.id)
                if ch is not None and m.ack is not None and self._ack:
                    if m.ack > ch.tx_sent:
                        raise ProtocolError(CloseCode.FLOW_VIOLATION, "server acknowledged input never sent")
                    ch.tx.trim(m.ack)
            case _:
                raise ProtocolError(CloseCode.UNSUPPORTED_MESSAGE, f"{_kind(m)} is not a server message")

    # --------------------------------------------------------------- helpers

    def _move(self, event: ConnEvent, reason: str) -> None:
        old = self._state
        new = transition(CONNECTION_TRANSITIONS, old, event)
        assert isinstance(new, ConnState)
        self._state = new
        if new != old:
            self._events.append(StateChanged(old.value, new.value, reason))

    def _chan(self, ch: ClientChannel, event: ChanEvent) -> ChannelState:
        new = transition(CHANNEL_TRANSITIONS, ch.state, event)
        assert isinstance(new, ChannelState)
        ch.state = new
        return new

    def _send_ctl(self, m: Ctl) -> None:
        self._frames.append(self.profile.encode_ctl(m))

    def _send_open(self, ch: ClientChannel) -> None:
        assert ch.open_msg is not None
        if ch.open_msg.command is not None and not self._server_command:
            self._chan(ch, ChanEvent.LOST)
            self._events.append(ChannelOpenFailed(ch.id, "UNSUPPORTED", "the server does not run commands"))
            self._forget(ch, "unsupported", "UNSUPPORTED", emit=False)
            return
        ch.open_sent = True
        self._send_ctl(ch.open_msg)

    def _flush_input(self, ch: ClientChannel) -> None:
        if self._state != ConnState.READY or ch.state != ChannelState.OPEN:
            return
        if ch.tx_sent < ch.tx.end:
            for stream, part in ch.tx.read(ch.tx_sent, ch.tx.end - ch.tx_sent):
                self._frames.extend(self.profile.encode_data(DataFrame(stream, ch.id, part), self._max_frame))
            ch.tx_sent = ch.tx.end
        if not self._ack:
            ch.tx.trim(ch.tx_sent)
        if ch.eof and not ch.eof_sent and self._server_eof:
            ch.eof_sent = True
            self._send_ctl(Eof(ch.id))

    def _flush_resize(self, ch: ClientChannel, now: float) -> None:
        if ch.size is None or ch.size == ch.size_sent or ch.state != ChannelState.OPEN:
            return
        if self._state != ConnState.READY:
            return
        due = ch.resize_at + self.options.resize_interval
        if now < due:
            self._resize_due = due if self._resize_due is None else min(self._resize_due, due)
            return
        ch.size_sent = ch.size
        ch.resize_at = now
        self._send_ctl(Resize(ch.id, ch.size[0], ch.size[1]))

    def _maybe_grant(self, ch: ClientChannel, now: float) -> None:
        if self._state is not ConnState.READY or ch.state is not ChannelState.OPEN or self._pause.reasons:
            return
        grant = ch.credit.take_grant(now, self.rtt)
        if grant:
            ack = ch.credit.received if self._ack else None
            if ack is not None:
                self._save_resume(None, now)  # the stored rx never falls below an ack sent
            self._send_ctl(Flow(ch.id, grant, ack))
            self._policy("credit_grant", ch.id, value=grant)

    def _on_pause_change(self, reason: str, paused: bool, now: float) -> None:
        self._policy("flow_pause" if paused else "flow_resume", None, reason=reason)
        if not self._pause.paused:
            for ch in self._channels.values():
                self._maybe_grant(ch, now)

    def _policy(self, kind: str, cid: int | None, reason: str | None = None, value: int | None = None) -> None:
        self._events.append(PolicyEvent(kind, cid, reason, value))

    def _diag(self, now: float, phase: str, code: str, **extras: Any) -> None:
        extras.setdefault("bufferedAmount", self.buffered_amount)
        extras.setdefault("rttMs", None if self.rtt is None else round(self.rtt * 1000, 3))
        self._events.append(Diagnostic(round(now * 1000, 3), phase, code, extras))

    def _open_transport(self, now: float) -> None:
        self._transport = True
        self._handshake_deadline = now + self.options.handshake_timeout
        self._events.append(OpenTransport(self.profile.subprotocols, self._attempt))

    def _drop_transport(self, now: float, code: int, reason: str) -> None:
        """We give up on the current socket ourselves (timeouts)."""
        if not self._transport:
            return
        self._events.append(CloseTransport(code, reason))
        self._transport = False
        self._next_ping = None
        self._handshake_deadline = None
        if self._state == ConnState.CLOSED:
            return
        if self._was_ready and self._resume is not None:
            self._lost(now, reason)
        elif self._state == ConnState.RECONNECTING:
            self._lost(now, reason)
        else:
            self._fail(now, CloseError(code, code, close_code_name(code), reason), close_socket=False)

    def _lost(self, now: float, reason: str) -> None:
        if self._state != ConnState.READY:  # a try failed, before or after its socket opened
            self._attempt += 1
        if self._attempt >= self.options.retry.max_retries:
            self._fail(now, CloseError(1006, None, "RETRIES_EXHAUSTED", f"gave up after {self._attempt} attempts"), False)
            return
        self._move(ConnEvent.LOST, reason)
        delay = self.options.retry.delay(self._attempt, self._rand)
        self._reconnect_at = now + delay
        self._diag(now, "reconnect", "reconnect_scheduled", attempt=self._attempt, delayMs=round(delay * 1000))

    def _fail(self, now: float, err: CloseError, close_socket: bool) -> None:
        if close_socket and self._transport:
            self._events.append(CloseTransport(err.ws_code, err.message[:120]))
            self._transport = False
        if err.ws_code == CloseCode.RESUME_FAILED or not (self._was_ready and err.ws_code in RETRYABLE_CLOSE_CODES):
            self._clear_resume(now)
        self._finish(now, err, err.code)

    def _finish(self, now: float, err: CloseError | None, reason: str) -> None:
        self.error = err
        self._reconnect_at = self._handshake_deadline = self._next_ping = self._resize_due = None
        for ch in list(self._channels.values()):
            if ch.state != ChannelState.CLOSED:
                self._chan(ch, ChanEvent.LOST)
            self._forget(ch, reason, None if err is None else err.code, persist=False)
        self._move(ConnEvent.FAILED if err is not None else ConnEvent.CLOSE, reason)
        self._events.append(ConnectionClosed(err))

    def _lose(self, ch: ClientChannel) -> None:
        if ch.resume_key is None and ch.open_sent:
            self._events.append(ChannelOpenFailed(ch.id, "LOST", "connection lost before open_ok"))
            self._forget(ch, "lost", "LOST", emit=False)
        else:
            self._forget(ch, "not resumed", "LOST")

    def _forget(
        self, ch: ClientChannel, reason: str, error: str | None, *, emit: bool = True, persist: bool = True
    ) -> None:
        ch.state = ChannelState.CLOSED
        if self._channels.pop(ch.id, None) is not None and emit:
            self._events.append(ChannelClosed(ch.id, reason, error))
        if persist and ch.resume_key is not None and self._resume is not None:
            self._save_resume(None)

    # -------------------------------------------------------------- resume

    def _load_resume(self, now: float) -> None:
        state = ResumeState.from_dict(self._store.load())
        if state is None:
            return
        if state.expires_at <= now or state.profile != self.profile.id:
            self._store.clear()
            self._diag(now, "resume", "resume_store_clear", why="expired")
            return
        self._resume = state
        self._was_ready = True
        for sc in state.channels:
            ch = ClientChannel(
                sc.id,
                open_sent=True,
                resume_key=sc.resume_key,
                credit=CreditWindow(self.options.window, self.options.max_window, sc.rx, sc.rx, sc.rx),
            )
            self._channels[sc.id] = ch
            self._next_id = max(self._next_id, sc.id + 1)
        self._diag(now, "resume", "resume_store_load", channels=len(state.channels))

    def _save_resume(self, now: float | None, clock: float | None = None) -> None:
        st = self._resume
        if st is None:
            return
        t = now if now is not None else clock
        if t is not None and self._state == ConnState.READY:
            st.expires_at = t + self._resume_ttl  # the server's retention starts at the drop
        st.channels = [
            StoredChannel(c.id, c.resume_key, c.credit.received)
            for c in self._channels.values()
            if c.resume_key is not None and c.state != ChannelState.CLOSED
        ]
        self._store.save(st.to_dict())
        if now is not None:
            self._diag(now, "resume", "resume_store_persist", channels=len(st.channels))

    def _clear_resume(self, now: float) -> None:
        if self._resume is not None:
            self._resume = None
            self._store.clear()
            self._diag(now, "resume", "resume_store_clear")


def _kind(m: Ctl | DataFrame) -> str:
    return "data" if isinstance(m, DataFrame) else m.t
