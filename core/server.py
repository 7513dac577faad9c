"""The server session machines (sans-I/O): connections, sessions, the resume registry.

Three objects, so the server runtime stays a thin shuttle:

* :class:`ServerConnection` (this module) -- one WebSocket: hello and auth,
  profile negotiation, frame validation, control-rate limit, idle timeout,
  heartbeats.  Every contract violation closes it with the contract's code.
  Its phases (``hello -> auth -> ready -> closed``) are
  ``state.PHASE_TRANSITIONS``.
* :class:`~.server_session.ServerSession` -- the logical session that owns
  channels (and, through the runtime, their PTY/SSH backends).  It outlives
  its connection for the retention window and is rebound by a valid resume.
  It enforces credit and pauses backends (:class:`~.events.BackendPause`).
* :class:`~.registry.SessionRegistry` -- every session of one server, by
  resume token: single-use tokens, principal binding, expiry, supersession of
  an old connection by a resume (4000), and the failed-resume limits per
  session and per peer (:class:`~.registry.ResumeLimiter`).

Limits and their memory products are documented at each knob of
:class:`~.server_config.ServerConfig`; the upgrade's subprotocol is chosen by
:func:`~.server_config.select_subprotocol`.

The runtime feeds it: ``receive_frame``, ``transport_closed``, ``tick``,
``auth_result``, and per channel ``channel_opened`` / ``channel_open_failed``
/ ``backend_output`` / ``backend_exit`` / ``input_written``; it drains
``frames_to_send()`` and ``events()``, and pauses or resumes each backend's
reading as the :class:`~.events.BackendPause` events say.  ``wake`` (a
callable given to the connection) is called whenever frames or events were
queued from outside the connection's own calls (backend output, input acks,
supersession), so the runtime knows to flush.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import CloseCode, IllegalTransition, ProtocolError, truncate_reason
from .events import (
    AuthRequested,
    CloseTransport,
    Diagnostic,
    DiagPhase,
    PolicyEvent,
    PolicyKind,
    ServerEvent,
)
from .flow import PauseSet
from .heartbeat import Heartbeat
from .messages import (
    Close,
    Ctl,
    DataFrame,
    Eof,
    Flow,
    Hello,
    HelloOk,
    Open,
    OpenOk,
    Ping,
    Pong,
    Resize,
    ResumedChannel,
    ResumeGrant,
    ResumeRequest,
    ServerCaps,
    Share,
    ShareErr,
    ShareOk,
    Signal,
    Unshare,
)
from .profiles import (
    DEFAULT_PROFILE,
    Frame,
    WireProfile,
    get_profile,
    profile_for_subprotocol,
)
from .registry import ResumeLimiter, SessionRegistry
from .resume import parse_token
from .server_config import (
    ServerConfig,
    advertised_subprotocols,
    allowed_profiles,
    select_subprotocol,
)
from .server_session import ServerChannel, ServerSession
from .share import ShareGrant, ShareMode, ShareRefused
from .state import PHASE_TRANSITIONS, ConnPhase, PhaseEvent, permits, transition

__all__ = [
    "ResumeLimiter",
    "ServerChannel",
    "ServerConfig",
    "ServerConnection",
    "ServerSession",
    "SessionRegistry",
    "advertised_subprotocols",
    "allowed_profiles",
    "select_subprotocol",
]

_CLIENT_TYPES = (Open, Resize, Signal, Close, Flow, Eof, Ping, Pong, Share, Unshare)

#: A message the phase table has no row for (PROTOCOL.md section 2): always 4002.
_WRONG_PHASE_CODE = CloseCode.BAD_HELLO
_WRONG_PHASE_TEXT = {
    ConnPhase.HELLO: "the first message must be hello",
    ConnPhase.AUTH: "message before hello_ok",
    ConnPhase.READY: "second hello",
}
#: Any other table miss on peer input: a message the channel's state does not take.
_OTHER_MISS_CODE = CloseCode.UNSUPPORTED_MESSAGE
#: Closes after which the session is kept for a resume (the client may come back).
_KEEPS_SESSION = frozenset({CloseCode.TIMEOUT, CloseCode.CANCELLED})


class ServerConnection:
    """One WebSocket connection of the server.

    ``subprotocol`` is the one the upgrade selected
    (:func:`~.server_config.select_subprotocol`): it names the profile that
    decodes ``hello`` (``nimbus.v1`` when none); ``hello.caps.profile``
    (missing: ``nimbus.v1``) then names the profile used from ``hello_ok`` on.
    ``peer`` names the client in diagnostics; ``peer_key`` (the client's IP)
    is what failed resumes are counted against, by its prefix
    (:func:`~.registry.peer_prefix`; empty: not limited).
    """

    def __init__(
        self,
        registry: SessionRegistry,
        *,
        now: float,
        subprotocol: str | None = None,
        wake: Callable[[], None] | None = None,
        peer: str = "",
        peer_key: str = "",
    ) -> None:
        self.registry = registry
        self.config = registry.config
        self.profile: WireProfile = profile_for_subprotocol(subprotocol) or get_profile(DEFAULT_PROFILE)
        self.peer = peer
        self.peer_key = peer_key
        self._wake_cb = wake
        self.phase = ConnPhase.HELLO
        self.session: ServerSession | None = None
        self.principal: str | None = None
        self._hello: Hello | None = None
        self._frames: list[Frame] = []
        self._events: list[ServerEvent] = []
        self._tokens = float(self.config.control_burst)
        self._tokens_at = now
        self._hello_deadline: float | None = now + self.config.hello_timeout
        #: Pings only when nothing arrived for ``ping_interval``; the idle
        #: timeout (not missed pongs) decides that the peer is gone.
        self._heartbeat = Heartbeat(self.config.ping_interval, only_when_idle=True)
        self._heartbeat.start(now)
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
        """True between ``hello_ok`` and the close (the phase takes messages)."""
        return permits(PHASE_TRANSITIONS, self.phase, PhaseEvent.MESSAGE)

    @property
    def live(self) -> bool:
        """True until the close was decided or the transport ended (the phase can still close)."""
        return permits(PHASE_TRANSITIONS, self.phase, PhaseEvent.CLOSE)

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
        return bool(self._events) or (self.session is not None and self.session.has_events())

    def events(self) -> list[ServerEvent]:
        """Connection events then session events (drains both queues)."""
        out, self._events = self._events, []
        if self.session is not None:
            out.extend(self.session.events())
        return out

    def next_deadline(self) -> float | None:
        """Earliest time :meth:`tick` must be called."""
        if not self.live:
            return None
        # No list per call: the runtime asks after every write.
        d = self._heartbeat.last_rx + self.config.idle_timeout
        hello = self._hello_deadline
        if hello is not None and hello < d:
            d = hello
        if self.ready:
            ping = self._heartbeat.next_ping
            if ping is not None and ping < d:
                d = ping
            if self.session is not None:
                ack = self.session.next_ack()
                if ack is not None and ack < d:
                    d = ack
        return d

    @property
    def write_paused(self) -> bool:
        """True while the socket's unsent bytes are above the high-water mark."""
        return self._write_pause.paused

    def set_buffered_amount(self, amount: int) -> None:
        """Feed the socket's unsent byte count; backends pause/resume at the marks."""
        crossed = self._write_pause.buffered(amount)
        if crossed is None:
            return
        self._events.append(PolicyEvent(PolicyKind.FLOW_PAUSE if crossed else PolicyKind.FLOW_RESUME, reason="transport"))
        if self.session is not None:
            self.session.flush_all()

    def wake(self) -> None:
        """Tell the runtime there is something to flush."""
        if self._wake_cb is not None:
            self._wake_cb()

    # -------------------------------------------------------------- inputs

    def receive_frame(self, frame: Frame, now: float) -> None:
        """Feed one WebSocket message from the client.

        Never raises for what the client sent: a contract violation -- a bad
        frame, or a message the phase or channel tables do not allow -- closes
        the connection with the contract's code.
        """
        if not self.live:
            return  # closed: keep reading and discarding until the close completes
        self._heartbeat.received(now)
        try:
            msg = self.profile.decode(frame, self.config.max_frame)
            if isinstance(msg, DataFrame):
                self.stats["frames_in_data"] += 1
                self.stats["bytes_in_data"] += len(msg.payload)
            else:
                self.stats["frames_in_ctl"] += 1
            self._receive(msg, now)
        except ProtocolError as exc:
            self._protocol_error(exc.code, exc.message, now)
        except IllegalTransition as exc:
            self._protocol_error(_OTHER_MISS_CODE, str(exc), now)

    def auth_result(self, principal: str | None, now: float, reason: str = "", view: ShareGrant | None = None) -> None:
        """Answer :class:`AuthRequested`: the principal, or ``None`` to refuse (4003).

        ``view``: the client presented a share link (:meth:`SessionRegistry.shares`
        ``verify``): its session is a viewer session of that grant.

        Ignored when the connection closed while the authenticator ran; raises
        :class:`~.errors.IllegalTransition` when no authentication is pending
        (before ``hello``, or a second answer).
        """
        if not self.live:
            return
        accepted = transition(PHASE_TRANSITIONS, self.phase, PhaseEvent.ACCEPTED)
        hello = self._hello
        assert hello is not None  # the auth phase starts with the hello
        if principal is None:
            self._diag(now, DiagPhase.AUTH, "auth_failed")
            self.close(CloseCode.AUTH_FAILED, reason or "authentication failed", now)
            return
        self.principal = principal
        ack = self.config.ack and bool(hello.caps and hello.caps.ack)
        resumed: tuple[ResumedChannel, ...] | None = None
        try:
            if hello.resume is not None:
                s = self.registry.lookup(hello.resume.token, principal, ack, now)
                resumed = self._resume(s, hello.resume, now)
            else:
                s = self.registry.create(principal, ack, self.peer_key, view)
        except ProtocolError as exc:
            if hello.resume is not None and exc.code == CloseCode.RESUME_FAILED:
                self.registry.resume_limiter.failed(self.peer_key, now)
            self._diag(now, DiagPhase.RESUME, "resume_rejected", message=exc.message)
            self.close(exc.code, exc.message, now)
            return
        self.session = s
        s.attach(self)
        used = parse_token(hello.resume.token) if hello.resume is not None else None
        token = self.registry.issue_token(s, used[1] if used else None)
        self.phase = accepted
        self._hello_deadline = None
        self._heartbeat.start(now)
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
                    files=self.config.allow_files and s.view is None,
                    share=self.config.allow_share and s.view is None,
                    view=str(s.view.mode) if s.view is not None else None,
                ),
                ResumeGrant(token, int(self.config.retention * 1000)),
            )
        )
        self._frames.extend(early)
        self.profile.on_negotiated(self.config.max_frame)
        self._diag(now, DiagPhase.HANDSHAKE, "hello_ok", principal=principal, resumed=resumed is not None)
        s.restart_output()

    def transport_closed(self, code: int, now: float) -> None:
        """The socket closed with ``code`` (1006 when it dropped).

        Only an explicit client close with 1000 ends the session; any other
        loss keeps it for the retention window.
        """
        if self.live:
            self.phase = transition(PHASE_TRANSITIONS, self.phase, PhaseEvent.CLOSE)
            self.close_code = code
        s, self.session = self.session, None
        if s is None or s.conn is not self:
            return
        if code == CloseCode.NORMAL:
            s.destroy("closed by client")
        else:
            s.detach(now)
        self._events.extend(s.events())

    def close(self, code: int, reason: str, now: float) -> None:
        """Close the connection with ``code`` (emits :class:`CloseTransport`); once only.

        A timeout (4012) or a supersession (4000) keeps the session for a
        resume; every other code ends it.
        """
        if not self.live:
            return
        self.phase = transition(PHASE_TRANSITIONS, self.phase, PhaseEvent.CLOSE)
        self.close_code = code
        self._events.append(CloseTransport(code, truncate_reason(reason)))
        s = self.session
        if s is not None and s.conn is self:
            if code in _KEEPS_SESSION:
                s.detach(now)
            else:
                s.destroy(f"closed with {code}")
            self._events.extend(s.events())
        self.session = None
        self.wake()

    def tick(self, now: float) -> None:
        """Fire deadlines: hello timeout, idle timeout, heartbeat, input acks."""
        if not self.live:
            return
        if self._hello_deadline is not None and now >= self._hello_deadline:
            self.close(CloseCode.TIMEOUT, "no hello", now)
            return
        if now >= self._heartbeat.last_rx + self.config.idle_timeout:
            self.close(CloseCode.TIMEOUT, "idle timeout", now)
            return
        if self.ready:
            beat = self._heartbeat.due(now)
            if beat is not None and beat.ping is not None:
                self.send_ctl(Ping(beat.ping))
            if self.session is not None:
                self.session.due_acks(now)

    def superseded(self, now: float) -> None:
        """A resume of our session arrived on another connection: close with 4000."""
        s = self.session
        if s is not None:
            s.detach(now)
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

    def _receive(self, msg: Ctl | DataFrame, now: float) -> None:
        """Ask the phase table about ``msg``, then hand it to its handler."""
        event = PhaseEvent.HELLO if isinstance(msg, Hello) else PhaseEvent.MESSAGE
        try:
            new = transition(PHASE_TRANSITIONS, self.phase, event)
        except IllegalTransition:
            raise ProtocolError(_WRONG_PHASE_CODE, _WRONG_PHASE_TEXT.get(self.phase, "unexpected message")) from None
        if isinstance(msg, Hello):
            self._on_hello(msg, new, now)
            return
        self.phase = new
        s = self.session
        assert s is not None  # the ready phase has a session (it is left when the session goes)
        s.confirm_token()  # the client got hello_ok: its previous token is spent
        if isinstance(msg, DataFrame):
            self._on_data(s, msg)
        else:
            self._on_ctl(s, msg, now)

    def _protocol_error(self, code: CloseCode, message: str, now: float) -> None:
        self._diag(now, DiagPhase.PROTOCOL, "protocol_error", close_code=int(code), message=message)
        self.close(code, message, now)

    def _on_hello(self, m: Hello, new: ConnPhase, now: float) -> None:
        wanted = (m.caps.profile if m.caps else None) or DEFAULT_PROFILE
        if wanted not in allowed_profiles(self.config):
            raise ProtocolError(CloseCode.UNSUPPORTED_PROFILE, f"profile {wanted[:64]!r} not supported")
        if m.resume is not None and self.registry.resume_limiter.blocked(self.peer_key, now):
            # Refused before any lookup: a peer guessing tokens learns nothing more.
            self._events.append(PolicyEvent(PolicyKind.RATE_LIMITED, reason="resume"))
            self._diag(now, DiagPhase.RESUME, "resume_rate_limited")
            raise ProtocolError(CloseCode.POLICY_DENIED, "too many failed resume attempts")
        self.profile = get_profile(wanted)
        self._hello = m
        self.phase = new
        auth = m.auth
        self._events.append(AuthRequested(auth.scheme if auth else "none", auth.token if auth else None))

    def _resume(self, s: ServerSession, req: ResumeRequest, now: float) -> tuple[ResumedChannel, ...]:
        # Validate everything before changing anything: a refused resume leaves
        # the session (and its old connection) exactly as they were.
        s.check_resume(req)
        old = s.conn
        if old is not None and old is not self:
            old.superseded(now)
        resumed, repeat = s.rebind(req)
        for ch in repeat:
            self.send_ctl(OpenOk(ch.id, ch.resume_key, ch.file_size))  # queued; reordered after hello_ok
        self.registry.resumes += 1
        self._diag(now, DiagPhase.RESUME, "resume_accepted", channels=len(resumed))
        return resumed

    def _rate(self, now: float) -> None:
        cfg = self.config
        self._tokens = min(float(cfg.control_burst), self._tokens + (now - self._tokens_at) * cfg.control_rate)
        self._tokens_at = now
        if self._tokens < 1:
            self._events.append(PolicyEvent(PolicyKind.RATE_LIMITED))
            raise ProtocolError(CloseCode.POLICY_DENIED, "control message rate limit exceeded")
        self._tokens -= 1

    def _on_data(self, s: ServerSession, df: DataFrame) -> None:
        if df.stream != "stdout":
            raise ProtocolError(CloseCode.MALFORMED_FRAME, "clients send stdin as stream 0x01 only")
        if not s.receive_data(df):
            self.stats["ignored"] += 1

    def _on_ctl(self, s: ServerSession, m: Ctl, now: float) -> None:
        if not isinstance(m, _CLIENT_TYPES):
            raise ProtocolError(CloseCode.UNSUPPORTED_MESSAGE, f"{m.t} is not a client message")
        if not isinstance(m, (Flow, Pong)):
            self._rate(now)
        handled = True
        match m:
            case Flow():
                if m.id in s.channels:
                    self.stats["credit_granted"] += m.credit
                handled = s.receive_flow(m)
            case Ping():
                self.send_ctl(Pong(m.ts))
            case Pong():
                self._heartbeat.pong(m.ts, now)
            case Open():
                s.open(m, self.registry.new_key)
            case Resize() | Signal() | Eof():
                handled = s.receive_control(m)
            case Close():
                handled = s.receive_close(m.id)
                if handled:
                    self.send_ctl(Close(m.id))
            case Share():
                try:
                    g = self.registry.share(s, m.id, ShareMode(m.mode), m.ttl, now)
                except ShareRefused as exc:
                    self.send_ctl(ShareErr(m.id, m.ref, exc.code, exc.message))
                else:
                    self.send_ctl(ShareOk(m.id, m.ref, g.gid, g.token, m.mode, int(g.expires_at * 1000)))
            case Unshare():
                if s.view is None:
                    self.registry.unshare(s, m.id, m.grant, now)
        if not handled:
            self.stats["ignored"] += 1

    def _diag(self, now: float, phase: DiagPhase, code: str, **extras: object) -> None:
        if self.peer:
            extras.setdefault("peer", self.peer)
        self._events.append(Diagnostic(round(now * 1000, 3), phase, code, extras))
