"""The server session machines (sans-I/O): connections, sessions, the resume registry.

Three objects, so the server runtime stays a thin shuttle:

* :class:`ServerConnection` -- one WebSocket: hello and auth, profile
  negotiation, frame validation, control-rate limit, idle timeout,
  heartbeats.  Every contract violation closes it with the contract's code.
* :class:`ServerSession` -- the logical session that owns channels (and,
  through the runtime, their PTY/SSH backends).  It outlives its connection
  for the retention window and is rebound by a valid resume.  It enforces
  credit: no payload byte leaves beyond a channel's credit, and the backend
  is paused (:class:`~.events.BackendPause`) while the output waiting to be
  sent covers the credit.
* :class:`SessionRegistry` -- every session of one server, by resume token;
  single-use tokens, principal binding, expiry, supersession of an old
  connection by a resume (4000).

Memory bounds, per channel: output kept is at most the credit granted (the
client may hold at most ``max_outstanding_credit``, 16 MiB) plus what the
runtime reads after the budget ran out (the reference PTY backend: at most
two reads, ``2 * max_read``); input not yet written to the backend at most
``max_input_buffer`` (else 4007).  Per connection: the frames produced by
one call.  Per server: ``max_sessions`` sessions (else 4010).

The runtime feeds it: ``receive_frame``, ``transport_closed``, ``tick``,
``auth_result``, and per channel ``channel_opened`` / ``channel_open_failed``
/ ``backend_output`` / ``backend_exit`` / ``input_written``; it drains
``frames_to_send()`` and ``events()``.  ``wake`` (a callable given to the
connection) is called whenever frames or events were queued from outside the
connection's own calls (backend output, supersession), so the runtime knows
to flush.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import CloseCode, ProtocolError
from .events import (
    AuthRequested,
    BackendClose,
    BackendEof,
    BackendInput,
    BackendOpen,
    BackendPause,
    BackendResize,
    BackendSignal,
    CloseTransport,
    Diagnostic,
    PolicyEvent,
    ServerEvent,
)
from .flow import ByteLog, PauseSet
from .messages import (
    Close,
    Ctl,
    DataFrame,
    Eof,
    Exit,
    Flow,
    Hello,
    HelloOk,
    Open,
    OpenErr,
    OpenOk,
    Ping,
    Pong,
    Resize,
    ResumedChannel,
    ResumeGrant,
    ServerCaps,
    Signal,
    Stream,
)
from .profiles import (
    DEFAULT_MAX_FRAME,
    DEFAULT_PROFILE,
    Frame,
    WireProfile,
    available_profiles,
    get_profile,
)
from .resume import new_token, parse_token, secrets_equal
from .state import CHANNEL_TRANSITIONS, ChanEvent, ChannelState, transition

__all__ = [
    "ServerChannel",
    "ServerConfig",
    "ServerConnection",
    "ServerSession",
    "SessionRegistry",
]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Limits and tunables of the server machines; defaults are the contract's."""

    server_name: str = "nimbus-ws/0.1.0"
    #: Profile ids the server accepts (``None``: every registered profile).
    profiles: tuple[str, ...] | None = None
    max_frame: int = DEFAULT_MAX_FRAME
    max_channels: int = 4
    #: Control messages per second (all but ``flow`` and ``pong``), burst ``control_burst``.
    control_rate: float = 50.0
    control_burst: int = 50
    idle_timeout: float = 60.0
    ping_interval: float = 20.0
    hello_timeout: float = 10.0
    retention: float = 60.0
    max_outstanding_credit: int = 16 * 1024 * 1024
    #: Offer exactly-once resume (``caps.ack``).
    ack: bool = True
    input_ack_bytes: int = 16 * 1024
    input_ack_delay: float = 0.05
    #: Largest backend read, hence the largest data frame payload (coalescing size).
    max_read: int = 64 * 1024
    #: The connection's unsent bytes (``bufferedAmount``) above which every
    #: backend of the session stops reading, and below which it reads again:
    #: a client that grants credit but does not read its socket holds at
    #: most this much (plus one read per channel) in the server.
    write_high_water: int = 1024 * 1024
    write_low_water: int = 256 * 1024
    #: Input bytes received but not yet written to a backend, per channel.
    max_input_buffer: int = 4 * 1024 * 1024
    max_sessions: int = 10_000
    #: Honour ``open.command`` [ext] (announced as ``caps.command``).
    allow_command: bool = True
    #: Wrong secrets tolerated per session before its token is revoked.
    max_resume_failures: int = 5


@dataclass(slots=True, eq=False)
class ServerChannel:
    """Server-side state of one channel."""

    id: int
    resume_key: str = field(repr=False)
    state: ChannelState = ChannelState.OPENING
    credit: int = 0
    #: Output from the backend: ``[log.start, sent)`` sent and unacknowledged
    #: (kept only with ``caps.ack``), ``[sent, log.end)`` waiting for credit.
    log: ByteLog = field(default_factory=ByteLog)
    sent: int = 0
    paused: bool = False
    exit: tuple[int | None, str | None] | None = None
    exit_sent: bool = False
    rx: int = 0  # input bytes received
    written: int = 0  # input bytes the backend consumed
    acked: int = 0  # input bytes acknowledged to the client
    ack_due: float | None = None

    @property
    def pending(self) -> int:
        """Output bytes waiting for credit."""
        return self.log.end - self.sent


class ServerSession:
    """A logical session: principal, channels, resume token; survives reconnects."""

    def __init__(
        self,
        registry: SessionRegistry,
        sid: str,
        secret: str,
        principal: str,
        ack: bool,
    ) -> None:
        self.registry = registry
        self.config = registry.config
        self.sid = sid
        self._secret = secret
        #: The secret the client resumed with last, accepted again until the
        #: client shows it received its replacement (a lost ``hello_ok``).
        self._prev_secret: str | None = None
        self.principal = principal
        self.ack = ack
        self.channels: dict[int, ServerChannel] = {}
        self.conn: ServerConnection | None = None
        self.expires_at: float | None = None
        self.failures = 0
        self.destroyed = False
        self._events: list[ServerEvent] = []

    # ------------------------------------------------------------ runtime API

    def events(self) -> list[ServerEvent]:
        """Backend requests since the last call (drains the queue)."""
        out, self._events = self._events, []
        return out

    def read_budget(self, cid: int) -> int:
        """Bytes the runtime may read from channel ``cid``'s backend now."""
        ch = self.channels.get(cid)
        conn = self.conn
        if ch is None or conn is None or ch.state != ChannelState.OPEN or conn.write_paused:
            return 0
        return max(0, min(self.config.max_read, ch.credit - ch.pending))

    def channel_opened(self, cid: int) -> None:
        """The backend of channel ``cid`` is up: ``open_ok`` goes out."""
        ch = self.channels.get(cid)
        if ch is None or ch.state != ChannelState.OPENING:
            return
        self._chan(ch, ChanEvent.OPEN_OK)
        ch.paused = True  # initial credit is 0
        self._send(OpenOk(cid, ch.resume_key))
        self._events.append(BackendPause(cid, True))
        self._wake()

    def channel_open_failed(self, cid: int, code: str, msg: str) -> None:
        """The backend of channel ``cid`` could not start: ``open_err`` goes out."""
        ch = self.channels.pop(cid, None)
        if ch is None:
            return
        self._send(OpenErr(cid, code, msg[:1024]))
        self._wake()

    def backend_output(self, cid: int, stream: Stream, data: bytes) -> None:
        """Output read from channel ``cid``'s backend; sent as credit allows."""
        ch = self.channels.get(cid)
        if ch is None or ch.state not in (ChannelState.OPEN, ChannelState.EXITED) or not data:
            return
        ch.log.append(stream, data)
        self._flush(ch)

    def backend_exit(self, cid: int, code: int | None, sig: str | None) -> None:
        """Channel ``cid``'s process ended; ``exit`` follows the remaining output."""
        ch = self.channels.get(cid)
        if ch is None or ch.state != ChannelState.OPEN:
            return
        ch.exit = (code, sig)
        self._chan(ch, ChanEvent.EXIT)
        self._flush(ch)

    def input_written(self, cid: int, n: int, now: float) -> None:
        """The backend consumed ``n`` input bytes of channel ``cid`` (drives input acks)."""
        ch = self.channels.get(cid)
        if ch is None:
            return
        ch.written = min(ch.rx, ch.written + n)
        if not self.ack:
            return
        if ch.written - ch.acked >= self.config.input_ack_bytes:
            self._ack_input(ch)
        elif ch.written > ch.acked and ch.ack_due is None:
            ch.ack_due = now + self.config.input_ack_delay
            if self.conn is not None:
                self.conn.deadline_changed()

    def destroy(self, reason: str = "session ended") -> None:
        """End the session: every channel's backend is closed."""
        if self.destroyed:
            return
        self.destroyed = True
        for cid in list(self.channels):
            self._events.append(BackendClose(cid))
        self.channels.clear()
        self.registry.discard(self)

    # ------------------------------------------------------------ internals

    def _send(self, m: Ctl) -> None:
        if self.conn is not None:
            self.conn.send_ctl(m)

    def _wake(self) -> None:
        if self.conn is not None:
            self.conn.wake()

    def _chan(self, ch: ServerChannel, event: ChanEvent) -> None:
        new = transition(CHANNEL_TRANSITIONS, ch.state, event)
        assert isinstance(new, ChannelState)
        ch.state = new

    def _flush(self, ch: ServerChannel) -> None:
        conn = self.conn
        if conn is not None and conn.ready:
            if ch.credit > 0 and ch.pending > 0:
                n = min(ch.credit, ch.pending)
                for stream, part in ch.log.read(ch.sent, n):
                    conn.send_data(DataFrame(stream, ch.id, part))
                ch.sent += n
                ch.credit -= n
                if not self.ack:
                    ch.log.trim(ch.sent)
            if ch.exit is not None and not ch.exit_sent and ch.pending == 0:
                ch.exit_sent = True
                conn.send_ctl(Exit(ch.id, ch.exit[0], ch.exit[1]))
            conn.wake()
        want_pause = ch.state != ChannelState.OPEN or self.read_budget(ch.id) <= 0
        if want_pause != ch.paused and ch.state == ChannelState.OPEN:
            ch.paused = want_pause
            self._events.append(BackendPause(ch.id, want_pause))
            self._wake()

    def _ack_input(self, ch: ServerChannel) -> None:
        ch.ack_due = None
        if ch.written > ch.acked and self.conn is not None and self.conn.ready:
            ch.acked = ch.written
            self.conn.send_ctl(Flow(ch.id, 0, ch.written))

    def _due_acks(self, now: float) -> None:
        for ch in self.channels.values():
            if ch.ack_due is not None and now >= ch.ack_due:
                self._ack_input(ch)

    def _next_ack(self) -> float | None:
        ds = [ch.ack_due for ch in self.channels.values() if ch.ack_due is not None]
        return min(ds) if ds else None

    def _attach(self, conn: ServerConnection) -> None:
        self.conn = conn
        self.expires_at = None

    def _detach(self, now: float) -> None:
        self.conn = None
        self.expires_at = now + self.config.retention
        for ch in self.channels.values():
            ch.credit = 0
            ch.ack_due = None
            if not self.ack:
                ch.log.trim(ch.sent)
            if ch.state == ChannelState.OPEN and not ch.paused:
                ch.paused = True
                self._events.append(BackendPause(ch.id, True))

    def _rebind(self, ch: ServerChannel, rx: int | None) -> None:
        """After a resume: retransmit from the client's ``rx`` (credit restarts at 0)."""
        ch.credit = 0
        if rx is not None:
            ch.log.trim(rx)
            ch.sent = rx
        ch.exit_sent = False
        ch.acked = min(ch.acked, ch.written)


class SessionRegistry:
    """All sessions of one server, addressable by resume token.

    Holds at most ``config.max_sessions`` sessions; detached ones expire
    ``config.retention`` seconds after their connection was lost.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.config = config or ServerConfig()
        self._random_bytes = random_bytes
        self._sessions: dict[str, ServerSession] = {}
        self.resumes = 0
        self.resume_failures = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[ServerSession]:
        """Every live session."""
        return list(self._sessions.values())

    def create(self, principal: str, ack: bool) -> ServerSession:
        """A new session for ``principal`` (raises ``ProtocolError`` 4010 when full)."""
        if len(self._sessions) >= self.config.max_sessions:
            raise ProtocolError(CloseCode.SERVER_OVERLOAD, "too many sessions")
        _, sid, secret = new_token(self._random_bytes)
        while sid in self._sessions:
            _, sid, secret = new_token(self._random_bytes)
        s = ServerSession(self, sid, secret, principal, ack)
        self._sessions[sid] = s
        return s

    def issue_token(self, s: ServerSession, used: str | None = None) -> str:
        """A fresh single-use token for ``s``.

        ``used`` is the secret of the token the client just resumed with: it
        stays valid until the client confirms the new token (its first
        message after ``hello_ok``), so a ``hello_ok`` lost with the
        connection does not cost the session.  Every other token stops working.
        """
        token, _, secret = new_token(self._random_bytes, s.sid)
        s._secret = secret
        s._prev_secret = used
        return token

    def lookup(self, token: str, principal: str, ack: bool, now: float) -> ServerSession:
        """The session ``token`` names, if ``principal`` and ``ack`` match (else 4011)."""
        parsed = parse_token(token)
        s = self._sessions.get(parsed[0]) if parsed else None
        if parsed is None or s is None or s.destroyed:
            self.resume_failures += 1
            raise ProtocolError(CloseCode.RESUME_FAILED, "unknown or expired resume token")
        if s.expires_at is not None and now >= s.expires_at:
            self.resume_failures += 1
            raise ProtocolError(CloseCode.RESUME_FAILED, "resume token expired")
        current = secrets_equal(parsed[1], s._secret)
        previous = s._prev_secret is not None and secrets_equal(parsed[1], s._prev_secret)
        if not (current or previous) or s.principal != principal:
            self.resume_failures += 1
            s.failures += 1
            if s.failures >= self.config.max_resume_failures:
                s._secret = self._fresh_secret()  # revoked: nothing guessable
                s._prev_secret = None
            raise ProtocolError(CloseCode.RESUME_FAILED, "invalid resume token")
        if s.ack != ack:
            self.resume_failures += 1
            raise ProtocolError(CloseCode.RESUME_FAILED, "caps.ack differs from the original session")
        return s

    def _fresh_secret(self) -> str:
        return new_token(self._random_bytes, "0" * 16)[2]

    def new_key(self) -> str:
        """A random channel ``resumeKey`` (144 bits, base64url)."""
        return base64.urlsafe_b64encode(self._random_bytes(18)).decode("ascii")

    def discard(self, s: ServerSession) -> None:
        """Forget ``s`` (called by :meth:`ServerSession.destroy`)."""
        if self._sessions.get(s.sid) is s:
            del self._sessions[s.sid]

    def expire(self, now: float) -> list[ServerSession]:
        """Destroy detached sessions whose retention ended; returns them (drain their events)."""
        dead = [s for s in self._sessions.values() if s.expires_at is not None and now >= s.expires_at]
        for s in dead:
            s.destroy("retention expired")
        return dead

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has something to do."""
        ds = [s.expires_at for s in self._sessions.values() if s.expires_at is not None]
        return min(ds) if ds else None


_CLIENT_ONLY_TYPES = (Open, Resize, Signal, Close, Flow, Eof, Ping, Pong)


class ServerConnection:
    """One WebSocket connection of the server.

    ``subprotocol`` is the one the upgrade selected: it names the profile
    that decodes ``hello`` (``nimbus.v1`` when none); ``hello.caps.profile``
    (missing: ``nimbus.v1``) then names the profile used from ``hello_ok`` on.
    """

    def __init__(
        self,
        registry: SessionRegistry,
        *,
        now: float,
        subprotocol: str | None = None,
        wake: Callable[[], None] | None = None,
        peer: str = "",
    ) -> None:
        from .profiles import profile_for_subprotocol

        self.registry = registry
        self.config = registry.config
        self.profile: WireProfile = profile_for_subprotocol(subprotocol) or get_profile(DEFAULT_PROFILE)
        self.peer = peer
        self._wake_cb = wake
        self.phase = "hello"  # hello -> auth -> ready -> closed
        self.session: ServerSession | None = None
        self.principal: str | None = None
        self._hello: Hello | None = None
        self._frames: list[Frame] = []
        self._events: list[ServerEvent] = []
        self._tokens = float(self.config.control_burst)
        self._tokens_at = now
        self._last_rx = now
        self._hello_deadline: float | None = now + self.config.hello_timeout
        self._ping_ts: float | None = None
        self._next_ping = now + self.config.ping_interval
        self._write_pause = PauseSet(self.config.write_high_water, self.config.write_low_water)
        self.close_code: int | None = None
        self.stats: dict[str, int] = {
            "frames_in_data": 0,
            "frames_in_ctl": 0,
            "bytes_in_data": 0,
            "frames_out_data": 0,
            "frames_out_ctl": 0,
            "bytes_out_data": 0,
            "credit_granted": 0,
            "ignored": 0,
        }

    # ------------------------------------------------------------- outputs

    @property
    def ready(self) -> bool:
        """True between ``hello_ok`` and the close."""
        return self.phase == "ready"

    @property
    def resuming(self) -> bool:
        """True once a ``hello`` asking to resume a session arrived on this connection."""
        return self._hello is not None and self._hello.resume is not None

    def frames_to_send(self) -> list[Frame]:
        """Frames to write, in order (drains the queue)."""
        out, self._frames = self._frames, []
        return out

    def has_frames(self) -> bool:
        """True when :meth:`frames_to_send` would return something."""
        return bool(self._frames)

    def has_events(self) -> bool:
        """True when :meth:`events` would return something."""
        return bool(self._events) or (self.session is not None and bool(self.session._events))

    def events(self) -> list[ServerEvent]:
        """Connection events then session events (drains both queues)."""
        out, self._events = self._events, []
        if self.session is not None:
            out.extend(self.session.events())
        return out

    def next_deadline(self) -> float | None:
        """Earliest time :meth:`tick` must be called."""
        if self.phase == "closed":
            return None
        ds = [self._hello_deadline, self._last_rx + self.config.idle_timeout]
        if self.phase == "ready":
            ds.append(self._next_ping)
            if self.session is not None:
                ds.append(self.session._next_ack())
        return min(d for d in ds if d is not None)

    @property
    def write_paused(self) -> bool:
        """True while the socket's unsent bytes are above the high-water mark."""
        return self._write_pause.paused

    def set_buffered_amount(self, amount: int) -> None:
        """Feed the socket's unsent byte count; backends pause/resume at the marks."""
        crossed = self._write_pause.buffered(amount)
        if crossed is None:
            return
        self._events.append(PolicyEvent("flow_pause" if crossed else "flow_resume", reason="transport"))
        s = self.session
        if s is not None:
            for ch in s.channels.values():
                s._flush(ch)

    def wake(self) -> None:
        """Tell the runtime there is something to flush."""
        if self._wake_cb is not None:
            self._wake_cb()

    def deadline_changed(self) -> None:
        """A deadline moved from outside a call (input acks): same as :meth:`wake`."""
        self.wake()

    # -------------------------------------------------------------- inputs

    def receive_frame(self, frame: Frame, now: float) -> None:
        """Feed one WebSocket message from the client."""
        if self.phase == "closed":
            return  # keep reading and discarding until the close completes
        self._last_rx = now
        try:
            msg = self.profile.decode(frame, self.config.max_frame)
            if isinstance(msg, DataFrame):
                self.stats["frames_in_data"] += 1
                self.stats["bytes_in_data"] += len(msg.payload)
            else:
                self.stats["frames_in_ctl"] += 1
            if self.phase == "hello":
                if not isinstance(msg, Hello):
                    raise ProtocolError(CloseCode.BAD_HELLO, "the first message must be hello")
                self._on_hello(msg, now)
            elif self.phase == "auth":
                raise ProtocolError(CloseCode.BAD_HELLO, "message before hello_ok")
            elif isinstance(msg, DataFrame):
                self._on_data(msg, now)
            else:
                self._on_ctl(msg, now)
        except ProtocolError as exc:
            self._diag(now, "protocol", "protocol_error", closeCode=int(exc.code), message=exc.message)
            self.close(int(exc.code), exc.message, now)

    def auth_result(self, principal: str | None, now: float, reason: str = "") -> None:
        """Answer :class:`AuthRequested`: the principal, or ``None`` to refuse (4003)."""
        if self.phase != "auth" or self._hello is None:
            return
        if principal is None:
            self._diag(now, "auth", "auth_failed")
            self.close(CloseCode.AUTH_FAILED, reason or "authentication failed", now)
            return
        self.principal = principal
        hello = self._hello
        ack = self.config.ack and bool(hello.caps and hello.caps.ack)
        resumed: tuple[ResumedChannel, ...] | None = None
        try:
            if hello.resume is not None:
                s = self.registry.lookup(hello.resume.token, principal, ack, now)
                resumed = self._resume(s, hello, now)
            else:
                s = self.registry.create(principal, ack)
        except ProtocolError as exc:
            self._diag(now, "resume", "resume_rejected", message=exc.message)
            self.close(int(exc.code), exc.message, now)
            return
        self.session = s
        s._attach(self)
        used = parse_token(hello.resume.token) if hello.resume is not None else None
        token = self.registry.issue_token(s, used[1] if used else None)
        self.phase = "ready"
        self._hello_deadline = None
        self._next_ping = now + self.config.ping_interval
        # Frames _resume queued (repeated open_ok) must follow hello_ok (section 4.3).
        early, self._frames = self._frames, []
        self.send_ctl(
            HelloOk(
                self.config.server_name,
                ServerCaps(
                    profile_accepted=self.profile.id,
                    max_frame=self.config.max_frame,
                    ack=ack,
                    resumed=resumed,
                    command=self.config.allow_command,
                    eof=True,
                ),
                ResumeGrant(token, int(self.config.retention * 1000)),
            )
        )
        self._frames.extend(early)
        self.profile.on_negotiated(self.config.max_frame)
        self._diag(now, "handshake", "hello_ok", principal=principal, resumed=resumed is not None)
        for ch in s.channels.values():
            s._flush(ch)
            if s.ack:
                # Acks sent on the old connection may be lost, and input written while
                # detached (or whose ack timer the drop cancelled) is not acknowledged yet:
                # acknowledge now, the client may be blocked on a full input buffer.
                ch.acked = 0
                s._ack_input(ch)

    def transport_closed(self, code: int, now: float) -> None:
        """The socket closed with ``code`` (1006 when it dropped).

        Only an explicit client close with 1000 ends the session; any other
        loss keeps it for the retention window.
        """
        if self.phase == "closed" and self.session is None:
            return
        if self.phase != "closed":
            self.phase = "closed"
            self.close_code = code
        s, self.session = self.session, None
        if s is None or s.conn is not self:
            return
        if code == CloseCode.NORMAL:
            s.destroy("closed by client")
        else:
            s._detach(now)
        self._events.extend(s.events())

    def close(self, code: int, reason: str, now: float) -> None:
        """Close the connection with ``code`` (emits :class:`CloseTransport`)."""
        if self.phase == "closed":
            return
        self.phase = "closed"
        self.close_code = code
        self._events.append(CloseTransport(code, reason[:120]))
        s = self.session
        if s is not None and s.conn is self:
            if code in (CloseCode.TIMEOUT, CloseCode.CANCELLED):
                s._detach(now)
            else:
                s.destroy(f"closed with {code}")
            self._events.extend(s.events())
        self.session = None
        self.wake()

    def tick(self, now: float) -> None:
        """Fire deadlines: hello timeout, idle timeout, heartbeat, input acks."""
        if self.phase == "closed":
            return
        if self._hello_deadline is not None and now >= self._hello_deadline:
            self.close(CloseCode.TIMEOUT, "no hello", now)
            return
        if now >= self._last_rx + self.config.idle_timeout:
            self.close(CloseCode.TIMEOUT, "idle timeout", now)
            return
        if self.phase == "ready":
            if now >= self._next_ping:
                if now - self._last_rx >= self.config.ping_interval:
                    self._ping_ts = round(now * 1000, 3)
                    self.send_ctl(Ping(self._ping_ts))
                self._next_ping = now + self.config.ping_interval
            if self.session is not None:
                self.session._due_acks(now)

    def superseded(self, now: float) -> None:
        """A resume of our session arrived on another connection: close with 4000."""
        s = self.session
        if s is not None:
            s._detach(now)
            self._events.extend(s.events())
        self.session = None
        self.close(CloseCode.CANCELLED, "superseded by a resumed connection", now)

    # ------------------------------------------------------------ handlers

    def send_ctl(self, m: Ctl) -> None:
        """Queue one control message."""
        self.stats["frames_out_ctl"] += 1
        self._frames.append(self.profile.encode_ctl(m))

    def send_data(self, df: DataFrame) -> None:
        """Queue one data frame (split at ``max_frame``)."""
        frames = self.profile.encode_data(df, self.config.max_frame)
        self.stats["frames_out_data"] += len(frames)
        self.stats["bytes_out_data"] += len(df.payload)
        self._frames.extend(frames)

    def _on_hello(self, m: Hello, now: float) -> None:
        wanted = (m.caps.profile if m.caps else None) or DEFAULT_PROFILE
        allowed = self.config.profiles or available_profiles()
        if wanted not in allowed:
            raise ProtocolError(CloseCode.UNSUPPORTED_PROFILE, f"profile {wanted[:64]!r} not supported")
        self.profile = get_profile(wanted)
        self._hello = m
        self.phase = "auth"
        auth = m.auth
        self._events.append(AuthRequested(auth.scheme if auth else "none", auth.token if auth else None))

    def _resume(self, s: ServerSession, hello: Hello, now: float) -> tuple[ResumedChannel, ...]:
        assert hello.resume is not None
        wanted = {c.id: c for c in (hello.resume.channels or ())}
        if s.ack and hello.resume.channels is None:
            raise ProtocolError(CloseCode.RESUME_FAILED, "resume.channels is required with caps.ack")
        # Validate everything before changing anything: a refused resume leaves
        # the session (and its old connection) exactly as they were.
        for cid, want in wanted.items():
            known = s.channels.get(cid)
            if known is None:
                continue
            if not secrets_equal(want.resume_key, known.resume_key):
                raise ProtocolError(CloseCode.RESUME_FAILED, f"wrong resumeKey for channel {cid}")
            if s.ack and not known.log.start <= want.rx <= known.sent:
                raise ProtocolError(CloseCode.RESUME_FAILED, f"channel {cid}: rx {want.rx} outside the replay window")
        old = s.conn
        if old is not None and old is not self:
            old.superseded(now)
        out: list[ResumedChannel] = []
        for cid, ch in list(s.channels.items()):
            req = wanted.get(cid)
            if s.ack and req is None:
                s._events.append(BackendClose(cid))
                del s.channels[cid]
                continue
            s._rebind(ch, req.rx if (s.ack and req is not None) else None)
            out.append(ResumedChannel(cid, ch.rx))
            if req is None and ch.state != ChannelState.OPENING:
                # Without caps.ack the client may have missed open_ok: repeat it.
                self.send_ctl(OpenOk(cid, ch.resume_key))
        self.registry.resumes += 1
        self._diag(now, "resume", "resume_accepted", channels=len(out))
        return tuple(out)

    def _rate(self, now: float) -> None:
        cfg = self.config
        self._tokens = min(float(cfg.control_burst), self._tokens + (now - self._tokens_at) * cfg.control_rate)
        self._tokens_at = now
        if self._tokens < 1:
            self._events.append(PolicyEvent("rate_limited"))
            raise ProtocolError(CloseCode.POLICY_DENIED, "control message rate limit exceeded")
        self._tokens -= 1

    def _on_data(self, df: DataFrame, now: float) -> None:
        if df.stream != "stdout":
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "clients send stdin as stream 0x01 only")
        s = self.session
        assert s is not None
        s._prev_secret = None  # the client got hello_ok: its previous token is spent
        ch = s.channels.get(df.id)
        if ch is None or ch.state != ChannelState.OPEN:
            self.stats["ignored"] += 1
            if ch is not None:
                ch.rx += len(df.payload)
                ch.written += len(df.payload)
            return
        ch.rx += len(df.payload)
        if ch.rx - ch.written > self.config.max_input_buffer:
            raise ProtocolError(CloseCode.FLOW_VIOLATION, f"channel {df.id}: input floods the backend")
        self._events.append(BackendInput(df.id, df.payload))

    def _on_ctl(self, m: Ctl, now: float) -> None:
        s = self.session
        assert s is not None
        s._prev_secret = None  # the client got hello_ok: its previous token is spent
        if not isinstance(m, _CLIENT_ONLY_TYPES):
            if isinstance(m, Hello):
                raise ProtocolError(CloseCode.BAD_HELLO, "second hello")
            raise ProtocolError(CloseCode.UNSUPPORTED_MESSAGE, f"{m.t} is not a client message")
        if not isinstance(m, (Flow, Pong)):
            self._rate(now)
        match m:
            case Flow():
                ch = s.channels.get(m.id)
                if ch is None:
                    self.stats["ignored"] += 1
                    return
                ch.credit += m.credit
                self.stats["credit_granted"] += m.credit
                if ch.credit > self.config.max_outstanding_credit:
                    raise ProtocolError(CloseCode.FLOW_VIOLATION, f"channel {m.id}: credit above 16 MiB")
                if m.ack is not None and s.ack:
                    if m.ack > ch.sent:
                        raise ProtocolError(CloseCode.FLOW_VIOLATION, f"channel {m.id}: ack beyond bytes sent")
                    ch.log.trim(m.ack)
                s._flush(ch)
            case Ping():
                self.send_ctl(Pong(m.ts))
            case Pong():
                self._ping_ts = None
            case Open():
                self._on_open(s, m)
            case Resize():
                ch = s.channels.get(m.id)
                if ch is not None and ch.state == ChannelState.OPEN:
                    self._events.append(BackendResize(m.id, m.cols, m.rows))
                else:
                    self.stats["ignored"] += 1
            case Signal():
                ch = s.channels.get(m.id)
                if ch is not None and ch.state == ChannelState.OPEN:
                    self._events.append(BackendSignal(m.id, m.sig))
                else:
                    self.stats["ignored"] += 1
            case Eof():
                ch = s.channels.get(m.id)
                if ch is not None and ch.state == ChannelState.OPEN:
                    self._events.append(BackendEof(m.id))
                else:
                    self.stats["ignored"] += 1
            case Close():
                ch = s.channels.get(m.id)
                if ch is None:
                    self.stats["ignored"] += 1
                    return
                del s.channels[m.id]
                self._events.append(BackendClose(m.id))
                self.send_ctl(Close(m.id))

    def _on_open(self, s: ServerSession, m: Open) -> None:
        if m.id in s.channels:
            raise ProtocolError(CloseCode.DUPLICATE_CHANNEL_ID, f"channel id {m.id} in use")
        if len(s.channels) >= self.config.max_channels:
            raise ProtocolError(CloseCode.CHANNEL_LIMIT, f"more than {self.config.max_channels} channels")
        s.channels[m.id] = ServerChannel(m.id, self.registry.new_key())
        if m.command is not None and not self.config.allow_command:
            s.channels.pop(m.id, None)
            self.send_ctl(OpenErr(m.id, "POLICY_DENIED", "this server does not run client commands"))
            return
        self._events.append(BackendOpen(m.id, m.target, m.user, m.term, m.command))

    def _diag(self, now: float, phase: str, code: str, **extras: object) -> None:
        if self.peer:
            extras.setdefault("peer", self.peer)
        self._events.append(Diagnostic(round(now * 1000, 3), phase, code, extras))
