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

from collections.abc import Callable
from typing import Any

from .client_channel import ClientChannel
from .client_config import ClientOptions, auth_from_value, normalize_signal
from .errors import (
    RETRYABLE_CLOSE_CODES,
    ChannelOpenError,
    ClientClosedError,
    CloseCode,
    CloseError,
    ErrorCode,
    IllegalTransition,
    ProtocolError,
    abandon_close_codes,
    close_code_name,
    truncate_reason,
)
from .events import (
    ChannelClosed,
    ChannelData,
    ChannelExit,
    ChannelOpened,
    ChannelOpenFailed,
    ChannelResized,
    ClientEvent,
    CloseTransport,
    ConnectionClosed,
    Diagnostic,
    DiagPhase,
    OpenTransport,
    PolicyEvent,
    PolicyKind,
    ShareAnswered,
    StateChanged,
    ViewersChanged,
    describe_state_change,
    reached_ready,
)
from .flow import CreditWindow, PauseSet
from .heartbeat import Heartbeat
from .liveness import Verification, is_suspect_after_hidden
from .messages import (
    CHANNEL_ID_MAX,
    Auth,
    Close,
    Ctl,
    DataFrame,
    Eof,
    Exit,
    FileSpec,
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
    Share,
    ShareErr,
    ShareOk,
    Signal,
    Target,
    Term,
    Unshare,
    User,
    Viewers,
)
from .profiles import DEFAULT_MAX_FRAME, Frame, WireProfile, get_profile
from .reconnect import Reconnect
from .resume import ClientResume, ResumeStore, StoredChannel
from .state import (
    CHANNEL_TRANSITIONS,
    CONNECTION_TRANSITIONS,
    ChanEvent,
    ChannelState,
    ConnEvent,
    ConnState,
    permits,
    transition,
)

#: Under ``caps.ack``: output received and not yet acknowledged past which an ack goes out
#: on its own (``flow {credit: 0, ack}``) when no grant is due.  The reference server keeps at
#: most 4 MiB unacknowledged (``max_retained_output``) and stops reading there; a grant is due
#: only once half the window is spent, so with a window above 8 MiB the acks riding on grants
#: would come too late and the channel would stall for good.
ACK_EVERY = 1 << 20
#: Input a file upload (``open.file`` put) keeps unacknowledged at most: the contract's own
#: bound on input a server holds unwritten (4 MiB, PROTOCOL.md 6), so that more of the file is
#: in flight while the server writes (a terminal channel keeps ``input_buffer_limit``, 1 MiB).
FILE_INPUT_LIMIT = 4 << 20

__all__ = [
    "ACK_EVERY",
    "FILE_INPUT_LIMIT",
    "ClientChannel",
    "ClientOptions",
    "ClientSession",
    "MAX_CHANNELS",
    "auth_from_value",
    "describe_state_change",
    "normalize_signal",
    "reached_ready",
]

# ``ClientChannel`` lives in .client_channel; ``ClientOptions``, ``auth_from_value``
# and ``normalize_signal`` in .client_config; ``reached_ready`` and
# ``describe_state_change`` in .events; resume persistence in .resume
# (``ClientResume``).  They are re-exported here for existing imports.

#: Channels one session may hold at once (PROTOCOL.md 6), counting channels
#: that exited or are closing until their close completed: the server closes
#: the whole connection (4006) on a 5th ``open``, so the asyncio client
#: refuses it locally instead (``core.aio`` ``Connection.open_session``).
MAX_CHANNELS = 4


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
        self._state = ConnState.IDLE
        self._frames: list[Frame] = []
        self._events: list[ClientEvent] = []
        self._channels: dict[int, ClientChannel] = {}
        self._next_id = 1
        self._pause = PauseSet(self.options.high_water_mark, self.options.low_water_mark)
        self._max_frame = DEFAULT_MAX_FRAME
        self._ack = False
        self._resume = ClientResume(store, self.profile.id, self.options.resume_ttl)
        self._resuming = False
        self._was_ready = False
        self._reconnect = Reconnect(self.options.retry)
        self._transport = False  # a socket is open or opening
        self._handshake_deadline: float | None = None
        self._heartbeat = Heartbeat(self.options.heartbeat_interval, self.options.heartbeat_misses)
        self._verify: Verification | None = None
        self._hidden_since: float | None = None
        self._resize_due: float | None = None
        self.rtt: float | None = None
        self.buffered_amount = 0
        self.server_name: str | None = None
        self._server_eof = False
        self._server_command = False
        self._server_files = False
        self._server_share = False
        #: ``"read"`` / ``"write"`` when this is a viewer session (a share link), else ``None``.
        self.view_mode: str | None = None
        self._share_refs = 0
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

    def channel_limit_reached(self) -> bool:
        """Whether another :meth:`open_channel` would exceed :data:`MAX_CHANNELS`.

        Channels that exited or are closing count until their close completed,
        as the server counts them (PROTOCOL.md 6).
        """
        return len(self._channels) >= MAX_CHANNELS

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
        verify = None if self._verify is None else self._verify.deadline
        ds = [
            d
            for d in (
                self._reconnect.at,
                self._handshake_deadline,
                self._heartbeat.next_ping,
                self._resize_due,
                verify,
            )
            if d is not None
        ]
        return min(ds) if ds else None

    @property
    def closed(self) -> bool:
        """Whether the connection ended for good (its state has no way out in the table)."""
        return not CONNECTION_TRANSITIONS[self._state]

    def takes_input(self, cid: int) -> bool:
        """Whether channel ``cid`` still accepts input (open, or ``open_ok`` pending)."""
        ch = self._channels.get(cid)
        return ch is not None and ch.takes_input

    def channel_state(self, cid: int) -> str:
        """The public name of channel ``cid``'s state (``"closed"`` once it is gone)."""
        ch = self._channels.get(cid)
        return (ChannelState.CLOSED if ch is None else ch.state).value

    def closed_error(self) -> CloseError:
        """The error a call on a closed connection raises: the terminal one, or ``CLOSED``."""
        return self.error or CloseError(CloseCode.NORMAL, None, ErrorCode.CLOSED, "connection is closed")

    @property
    def ready(self) -> bool:
        """Whether the connection is ``ready`` (handshake done, channels usable)."""
        return self._ready()

    @property
    def attempt(self) -> int:
        """Failed connection attempts since the connection was last ready."""
        return self._reconnect.attempt

    # ---------------------------------------------------------- lifecycle

    def connect(self, now: float) -> None:
        """Start connecting: emits :class:`OpenTransport`."""
        self._move(ConnEvent.CONNECT, "connect")
        self._open_transport(now)

    def transport_opened(self, now: float, auth: Auth | None = None) -> None:
        """The WebSocket is open; ``auth`` is what goes into ``hello.auth``."""
        if not self._transport or not self._can(ConnEvent.OPENED):
            return
        self._move(ConnEvent.OPENED, "socket open")
        resume = None
        token = None if self._resume.state is None else self._resume.state.token
        self._resuming = token is not None
        if token is not None:
            chans = tuple(
                ResumeChannel(c.id, c.resume_key, c.credit.received)
                for c in self._channels.values()
                if c.resume_key is not None
            )
            resume = ResumeRequest(token, chans)
        hello = Hello(
            auth=auth,
            caps=HelloCaps(profile=self.profile.id, ack=self.options.ack),
            resume=resume,
            client=dict(self.options.client_info) if self.options.client_info else None,
        )
        self._send_ctl(hello)
        self._diag(now, DiagPhase.HANDSHAKE, "hello_sent", resume=resume is not None)

    def transport_closed(self, now: float, code: int = 1006, reason: str = "") -> None:
        """The socket closed (or failed to open) without us asking."""
        if not self._transport:
            return
        self._transport = False
        self._handshake_deadline = None
        self._heartbeat.stop()
        self._verify = None
        self._diag(now, DiagPhase.TRANSPORT, "transport_closed", ws_code=code, reason=truncate_reason(reason))
        if self.closed:
            return
        if code == CloseCode.RESUME_FAILED:
            self._diag(now, DiagPhase.RESUME, "resume_rejected", ws_code=code)
            self._fail(now, CloseError.from_close(code, reason), close_socket=False)
            return
        resumable = self._was_ready and self._resume.active
        if code in RETRYABLE_CLOSE_CODES and resumable:  # (reconnecting implies resumable)
            self._lost(now, f"transport closed ({code})")
        elif code == CloseCode.NORMAL:
            self._finish(now, None, "closed by server")
        else:
            err = CloseError.from_close(code, reason)
            if code in RETRYABLE_CLOSE_CODES and not self._was_ready:
                err = CloseError(code, err.app_code, ErrorCode.CONNECT_FAILED, reason or "could not connect")
            elif code in RETRYABLE_CLOSE_CODES:
                err = CloseError(code, err.app_code, ErrorCode.CONNECTION_LOST, "connection lost; resume unavailable")
            self._fail(now, err, close_socket=False)

    def close(self, now: float, code: int = 1000, reason: str = "") -> None:
        """Close for good: with 1000 the server ends the session and its channels."""
        if not self._can(ConnEvent.CLOSE):
            return
        self._close_transport(code, reason)
        if code == CloseCode.NORMAL:
            self._clear_resume(now)
        else:
            self._save_resume(now)  # the server keeps the session: store the final rx for a later resume
        self._finish(now, None, "closed by application")

    def cancel(self, now: float) -> None:
        """The application gave up on connecting (a cancelled ``connect``).

        The socket closes with 4000 (``CANCELLED``: the server keeps a
        resumable session) and the connection ends without an error, as
        :meth:`close` with that code.  Nothing happens once closed.
        """
        self.close(now, CloseCode.CANCELLED, "connect cancelled")

    def auth_provider_failed(self, now: float, reason: str) -> None:
        """The application's ``auth`` provider raised or returned something unusable.

        Ends the connection for good with ``CloseError(4003, 4003,
        AUTH_PROVIDER_FAILED)``; the socket closes with 4000 (``CANCELLED``:
        nothing was sent for the server to judge, and a stored resume state
        stays usable).  Nothing happens once closed.
        """
        if not self._can(ConnEvent.FAILED):
            return
        self._close_transport(CloseCode.CANCELLED, "auth provider failed")
        self._save_resume(now)
        err = CloseError(
            CloseCode.AUTH_FAILED,
            CloseCode.AUTH_FAILED,
            ErrorCode.AUTH_PROVIDER_FAILED,
            f"auth provider failed: {reason}",
        )
        self._finish(now, err, err.code)

    def verify(self, now: float, why: str, **extras: Any) -> None:
        """Check that a suspect connection is alive: ping now, give up on silence.

        Only while ``ready`` and not already verifying.  Emits diagnostic
        ``connection_suspect``; any frame received within
        ``options.verify_timeout`` seconds (the pong, or output) proves the
        socket alive (``connection_verified``).  Otherwise, at that deadline
        (:meth:`next_deadline`), ``connection_verify_failed`` and the
        transport is dropped as a network loss: the socket closes with 4000
        and the session reconnects and resumes as after a 1006.
        """
        if not self._ready() or not self._transport or self._verify is not None:
            return
        self._diag(now, DiagPhase.CONNECTION, "connection_suspect", why=why, **extras)
        self._verify = Verification(why, now, now + self.options.verify_timeout)
        self.ping(now)

    def page_visibility(self, hidden: bool, now: float) -> None:
        """The page became hidden or visible (``document.visibilityState``).

        Hidden: credit is withheld (pause ``visibility``) and the resume state
        persisted (a hidden tab may be discarded without ``pagehide``).
        Visible: credit flows again and, when the page was hidden longer than
        ``options.suspect_after`` (:func:`.liveness.is_suspect_after_hidden`),
        the connection is verified (:meth:`verify`).
        """
        if hidden:
            if self._hidden_since is None:
                self._hidden_since = now
            self.set_pause("visibility", True, now)
            self.persist(now)
            return
        since, self._hidden_since = self._hidden_since, None
        self.set_pause("visibility", False, now)
        if since is not None and is_suspect_after_hidden(now - since, self.options.suspect_after_s):
            self.verify(now, "visibility", hidden_ms=round((now - since) * 1000))

    def page_online(self, online: bool, now: float) -> None:
        """The network went offline or came back (``navigator.onLine``).

        Offline withholds credit (pause ``offline``); back online, credit
        flows and the connection is verified (the network may have changed
        under an open socket).
        """
        self.set_pause("offline", not online, now)
        if online:
            self.verify(now, "online")

    def tick(self, now: float) -> None:
        """Fire every deadline that has passed."""
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._handshake_deadline = None
            self._diag(now, DiagPhase.HANDSHAKE, "handshake_timeout")
            self._drop_transport(now, CloseCode.TIMEOUT, "handshake timeout")
        if self._reconnect.due(now):
            self._diag(now, DiagPhase.RECONNECT, "reconnect_attempt", attempt=self._reconnect.attempt)
            self._open_transport(now)
        verify = self._verify
        if verify is not None and now >= verify.deadline:
            self._verify = None
            self._diag(
                now,
                DiagPhase.CONNECTION,
                "connection_verify_failed",
                why=verify.why,
                timeout_ms=round(self.options.verify_timeout * 1000),
            )
            self._abandon(now, f"no answer after {verify.why}")
        beat = self._heartbeat.due(now)
        if beat is not None:
            if beat.missed:
                self._diag(now, DiagPhase.HEARTBEAT, "heartbeat_miss", missed=self._heartbeat.missed)
            if beat.timed_out:
                self._diag(now, DiagPhase.HEARTBEAT, "heartbeat_timeout", missed=self._heartbeat.missed)
                self._drop_transport(now, CloseCode.TIMEOUT, "heartbeat timeout")
            elif beat.ping is not None:
                self._send_ctl(Ping(beat.ping))
        if self._resize_due is not None and now >= self._resize_due:
            self._resize_due = None
            for ch in self._channels.values():
                self._flush_resize(ch, now)

    def ping(self, now: float) -> None:
        """Send a ping now (e.g. to verify a suspect connection after the page was hidden)."""
        if self._ready():
            self._send_ctl(Ping(self._heartbeat.ping_now(now)))

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
        file: FileSpec | None = None,
    ) -> int:
        """Ask for a new channel; returns its id (``open`` goes out once ready).

        ``command`` [ext] runs instead of the login shell; a server that does
        not announce ``caps.command`` fails the channel with ``UNSUPPORTED``
        rather than silently starting a shell.  ``file`` [ext] makes it a file
        channel (no ``term``, no ``command``); without ``caps.files`` it fails
        with ``UNSUPPORTED``.  Beyond :data:`MAX_CHANNELS`
        the server closes the connection (4006): see :meth:`channel_limit_reached`.
        """
        if self.closed:
            raise ClientClosedError("connection is closed")
        cid = self._next_id
        while cid in self._channels:
            cid += 1
        self._next_id = cid + 1
        if file is not None and (term is not None or command is not None):
            raise ValueError("a file channel has no term and no command")
        msg = Open(cid, target, user, term, command, file)
        ch = ClientChannel(
            cid,
            open_msg=msg,
            credit=CreditWindow(self.options.window, self.options.max_window),
        )
        if term is not None:
            ch.size = ch.size_sent = (term.cols, term.rows)
        self._channels[cid] = ch
        if self._ready():
            self._send_open(ch)
        return cid

    def send_eof(self, cid: int) -> None:
        """No more input on channel ``cid`` (after everything already sent).

        Needs the server's ``caps.eof``; raises ``ValueError`` without it.
        """
        ch = self._channels.get(cid)
        if ch is None or not self.takes_input(cid):
            raise ValueError(f"channel {cid} is not open")
        if self._ready() and not self._server_eof:
            raise ValueError("the server does not support eof")
        ch.eof = True
        self._flush_input(ch)

    @property
    def server_files(self) -> bool:
        """Whether the server announced file channels (``caps.files``) in its last ``hello_ok``."""
        return self._server_files

    @property
    def server_share(self) -> bool:
        """Whether the server makes share links of this session's channels (``caps.share``)."""
        return self._server_share

    def input_capacity(self, cid: int) -> int:
        """Input bytes :meth:`send_input` would accept now for channel ``cid``."""
        ch = self._channels.get(cid)
        if ch is None or not self.takes_input(cid):
            return 0
        if self._pause.reasons & {"transport"}:
            return 0
        limit = self.options.input_buffer_limit
        if ch.open_msg is not None and ch.open_msg.file is not None and ch.open_msg.file.op == "put":
            limit = max(limit, FILE_INPUT_LIMIT)
        return max(0, limit - ch.tx.size)

    def send_input(self, cid: int, data: bytes, now: float = 0.0) -> int:
        """Queue input for channel ``cid``; returns how many bytes were accepted.

        Fewer than ``len(data)`` are accepted while the retransmission buffer
        is full or the transport is paused; wait for capacity and retry.
        """
        ch = self._channels.get(cid)
        if ch is None or not self.takes_input(cid):
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
            self._policy(PolicyKind.RESIZE_COALESCED, cid)
        ch.size = (cols, rows)
        self._flush_resize(ch, now)

    def signal(self, cid: int, sig: str) -> None:
        """Send ``sig`` (``INT``, ``TERM``, ``HUP``...) to channel ``cid``'s process.

        ``sig`` is normalised (:func:`normalize_signal`: ``"int"`` and
        ``"SIGINT"`` are ``"INT"``).  A signal is momentary: while the channel
        does not run or the connection is not ready, it is dropped.
        """
        ch = self._channels.get(cid)
        if ch is not None and ch.running and self._ready():
            self._send_ctl(Signal(cid, normalize_signal(sig)))

    def share(self, cid: int, mode: str = "read", ttl: int | None = None) -> int:
        """Ask for a share link to channel ``cid``; returns the request's ``ref``
        (:class:`ShareAnswered` with the same ``ref`` follows).

        ``mode`` ``"read"`` (watch) or ``"write"`` (also type); ``ttl`` seconds
        (server default 1 h).  ``ValueError`` when the server does not share
        (no ``caps.share``), the channel is not open, or the connection is not ready.
        """
        if mode not in ("read", "write"):
            raise ValueError("mode must be 'read' or 'write'")
        if not self._ready() or not self._server_share:
            raise ValueError("the server does not share terminals (no caps.share) or is not connected")
        if not self.takes_input(cid):
            raise ValueError(f"channel {cid} is not open")
        self._share_refs = (self._share_refs + 1) % (CHANNEL_ID_MAX + 1)
        self._send_ctl(Share(cid, "read" if mode == "read" else "write", self._share_refs, ttl))
        return self._share_refs

    def unshare(self, cid: int, grant: str | None = None) -> None:
        """Revoke share link ``grant`` of channel ``cid`` (``None``: all); its viewers are closed (4016)."""
        if self._ready():
            self._send_ctl(Unshare(cid, grant))

    def close_channel(self, cid: int, reason: str | None = None) -> None:
        """Close channel ``cid``; :class:`ChannelClosed` follows the server's answer."""
        ch = self._channels.get(cid)
        if ch is None or not self._can_chan(ch, ChanEvent.LOCAL_CLOSE):
            return
        if not ch.open_sent:  # never left this client: nothing to tell the server
            self._chan(ch, ChanEvent.LOST)
            self._forget(ch, "closed before open", None)
            return
        self._chan(ch, ChanEvent.LOCAL_CLOSE)
        if self._ready():
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
            self._diag(now, DiagPhase.FLOW, "backpressure_high" if crossed else "backpressure_low")
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
        if not self._transport or self.closed:
            return
        self._heartbeat.received(now)
        verify, self._verify = self._verify, None
        if verify is not None:
            waited = round((now - verify.started) * 1000, 3)
            self._diag(now, DiagPhase.CONNECTION, "connection_verified", why=verify.why, waited_ms=waited)
        try:
            msg = self.profile.decode(frame, self._max_frame)
            if self._can(ConnEvent.ACCEPTED):  # the handshake: only hello_ok may come
                if not isinstance(msg, HelloOk):
                    raise ProtocolError(CloseCode.BAD_HELLO, f"expected hello_ok, got {_kind(msg)}")
                self._on_hello_ok(msg, now)
            elif isinstance(msg, DataFrame):
                self._on_data(msg, now)
            else:
                self._on_ctl(msg, now)
        except IllegalTransition as exc:
            # A peer message the tables do not allow now: the contract's "message
            # of the wrong direction / out of place" (PROTOCOL.md 3) closes 4009.
            self._protocol_error(now, ProtocolError(CloseCode.UNSUPPORTED_MESSAGE, str(exc)))
        except ProtocolError as exc:
            self._protocol_error(now, exc)

    def _protocol_error(self, now: float, exc: ProtocolError) -> None:
        self._diag(now, DiagPhase.PROTOCOL, "protocol_error", close_code=int(exc.code), message=exc.message)
        self._close_transport(int(exc.code), exc.message)
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
        self._server_files = m.caps.files
        self._server_share = m.caps.share
        self.view_mode = m.caps.view
        resumed = self._resuming
        self._resuming = False
        self._reconnect.succeeded()
        self._was_ready = True
        self._move(ConnEvent.ACCEPTED, "resumed" if resumed else "hello_ok")
        self._diag(now, DiagPhase.HANDSHAKE, "hello_ok", server=m.server, ack=self._ack, profile=self.profile.id)
        if resumed:
            back = {c.id: c.rx for c in (m.caps.resumed or ())}
            self._diag(now, DiagPhase.RESUME, "resume_accepted", channels=len(back))
            for ch in list(self._channels.values()):
                if ch.open_sent and ch.id in back:
                    self._resume_channel(ch, back[ch.id], now)
                elif ch.open_sent and not self._can_chan(ch, ChanEvent.LOCAL_CLOSE):  # closing
                    # Our close reached the server (it forgot the channel); its reply was lost.
                    self._chan(ch, ChanEvent.PEER_CLOSE)
                    self._forget(ch, "closed", None)
                elif ch.open_sent:
                    self._chan(ch, ChanEvent.LOST)
                    self._lose(ch)
        if m.resume is not None:
            self._resume.granted(m.resume.token, m.resume.ttl_ms / 1000, now, self._ack)
        else:
            self._resume.granted(None, 0.0, now, self._ack)
        self._save_resume(now)
        self._heartbeat.start(now)
        if self.options.ping_on_ready:
            self.ping(now)
        for ch in list(self._channels.values()):
            if not ch.open_sent and self._can_chan(ch, ChanEvent.LOCAL_CLOSE):  # opening, never sent
                self._send_open(ch)

    def _resume_channel(self, ch: ClientChannel, rx: int, now: float) -> None:
        if not ch.rewind_input(rx, self._ack):
            self._diag(now, DiagPhase.RESUME, "input_gap", channel=ch.id, rx=rx, kept=ch.tx.start)
            self._chan(ch, ChanEvent.LOST)
            self._lose(ch)
            return
        if ch.awaiting_open:
            if ch.resume_key is None:
                return  # open_ok still to come (the server repeats it after a resume)
            self._chan(ch, ChanEvent.OPEN_OK)  # restored from storage
        self._events.append(ChannelOpened(ch.id, resumed=True))
        ch.eof_sent = False  # an eof in flight at the drop may be lost: repeat it after the input
        self._flush_input(ch)
        if ch.size is not None and ch.running:
            ch.size_sent = None
            self._flush_resize(ch, now)
        if not self._can_chan(ch, ChanEvent.LOCAL_CLOSE):  # closing: repeat our close
            self._send_ctl(Close(ch.id))
        else:
            self._maybe_grant(ch, now)

    def _on_data(self, df: DataFrame, now: float) -> None:
        ch = self._channels.get(df.id)
        if ch is None or ch.awaiting_open:
            self.ignored_frames += 1  # before open_ok: nothing to deliver it to
            return
        n = len(df.payload)
        if not ch.credit.on_data(n, starvation=not self._pause.reasons):
            raise ProtocolError(
                CloseCode.FLOW_VIOLATION,
                f"channel {df.id}: {ch.credit.received} bytes received, {ch.credit.granted} granted",
            )
        if ch.can(ChanEvent.OUTPUT):
            self._events.append(ChannelData(df.id, df.stream, df.payload))
        else:
            ch.credit.on_consumed(n)  # nobody will read it

    def _on_ctl(self, m: Ctl, now: float) -> None:
        match m:
            case Ping():
                self._send_ctl(Pong(m.ts))
            case Pong():
                rtt = self._heartbeat.pong(m.ts, now)
                if rtt is not None:
                    self.rtt = rtt
            case OpenOk():
                ch = self._channels.get(m.id)
                if ch is None or not self._can_chan(ch, ChanEvent.OPEN_OK):
                    self.ignored_frames += 1  # a repeat after a resume, or a channel we closed
                    return
                ch.resume_key = m.resume_key
                self._save_resume(now)  # before any data of the channel is processed
                self._chan(ch, ChanEvent.OPEN_OK)
                if not ch.can(ChanEvent.LOCAL_CLOSE):  # closing: closed by the application meanwhile
                    self._send_ctl(Close(ch.id))
                else:
                    self._events.append(ChannelOpened(ch.id, size=m.size))
                    self._flush_input(ch)
                    self._flush_resize(ch, now)
                    self._maybe_grant(ch, now)
            case ShareOk():
                self._events.append(ShareAnswered(m.id, m.ref, m.grant, m.token, m.mode, m.expires))
            case ShareErr():
                self._events.append(ShareAnswered(m.id, m.ref, None, code=m.code, msg=m.msg))
            case Viewers():
                if m.id in self._channels:
                    self._events.append(ViewersChanged(m.id, m.viewers))
            case Resize():
                if self.view_mode is None:  # only a viewer session hears of its terminal's size
                    raise ProtocolError(CloseCode.UNSUPPORTED_MESSAGE, "resize is not a server message")
                if m.id in self._channels:
                    self._events.append(ChannelResized(m.id, m.cols, m.rows))
            case OpenErr():
                ch = self._channels.get(m.id)
                if ch is not None and self._can_chan(ch, ChanEvent.OPEN_ERR):
                    self._chan(ch, ChanEvent.OPEN_ERR)
                    refused = ChannelOpenError(m.code, m.msg)  # an unknown code: UNKNOWN, named in msg
                    self._events.append(ChannelOpenFailed(m.id, refused.code, refused.message, m.host_key))
                    self._forget(ch, "open failed", refused.code, emit=False)
            case Exit():
                ch = self._channels.get(m.id)
                if ch is None:
                    self.ignored_frames += 1
                    return
                if not self._can_chan(ch, ChanEvent.LOCAL_CLOSE):  # closing
                    self._chan(ch, ChanEvent.EXIT)
                    self._send_ctl(Close(m.id))  # repeat our acknowledgement after a resume
                    return
                ch.exit = (m.code, m.sig)
                self._chan(ch, ChanEvent.EXIT)  # a miss (exit before open_ok, twice) closes 4009
                self._events.append(ChannelExit(m.id, m.code, m.sig))
                self._chan(ch, ChanEvent.LOCAL_CLOSE)
                self._send_ctl(Close(m.id))
            case Close():
                ch = self._channels.get(m.id)
                if ch is None:
                    return
                if ch.awaiting_open:
                    # A server MAY close a channel before open_ok (PROTOCOL.md 6): the open failed.
                    if ch.open_sent:
                        self._chan(ch, ChanEvent.OPEN_ERR)
                        self._send_ctl(Close(m.id))
                        failed = ChannelOpenFailed(m.id, ErrorCode.CLOSED, m.reason or "closed by server")
                        self._events.append(failed)
                        self._forget(ch, "open failed", ErrorCode.CLOSED, emit=False)
                    return
                answer = self._can_chan(ch, ChanEvent.LOCAL_CLOSE)  # not closing: acknowledge
                self._chan(ch, ChanEvent.PEER_CLOSE)
                if answer:
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
            self._events.append(StateChanged(old, new, reason))

    def _can(self, event: ConnEvent) -> bool:
        """Whether the connection table has ``event`` in the current state."""
        return permits(CONNECTION_TRANSITIONS, self._state, event)

    def _can_chan(self, ch: ClientChannel, event: ChanEvent) -> bool:
        """Whether the channel table has ``event`` in ``ch``'s state."""
        return permits(CHANNEL_TRANSITIONS, ch.state, event)

    def _ready(self) -> bool:
        """The handshake is done and the transport usable (state ``ready``)."""
        return self._state is ConnState.READY

    def _close_transport(self, code: int, reason: str) -> None:
        """Tell the runtime to close the current socket (once)."""
        if self._transport:
            self._events.append(CloseTransport(code, truncate_reason(reason)))
            self._transport = False

    def _abandon(self, now: float, reason: str) -> None:
        """Give up on the current socket as if the network had dropped it (verify failure)."""
        if not self._transport:
            return
        sent, reported = abandon_close_codes()
        self._events.append(CloseTransport(sent, truncate_reason(reason)))
        self.transport_closed(now, reported, reason)

    def _chan(self, ch: ClientChannel, event: ChanEvent) -> ChannelState:
        new = transition(CHANNEL_TRANSITIONS, ch.state, event)
        assert isinstance(new, ChannelState)
        ch.state = new
        return new

    def _send_ctl(self, m: Ctl) -> None:
        self._frames.append(self.profile.encode_ctl(m))

    def _send_open(self, ch: ClientChannel) -> None:
        assert ch.open_msg is not None
        unsupported = None
        if ch.open_msg.command is not None and not self._server_command:
            unsupported = "the server does not run commands"
        elif ch.open_msg.file is not None and not self._server_files:
            unsupported = "the server does not transfer files"
        if unsupported is not None:
            self._chan(ch, ChanEvent.LOST)
            failed = ChannelOpenFailed(ch.id, ErrorCode.UNSUPPORTED, unsupported)
            self._events.append(failed)
            self._forget(ch, "unsupported", ErrorCode.UNSUPPORTED, emit=False)
            return
        ch.open_sent = True
        self._send_ctl(ch.open_msg)

    def _flush_input(self, ch: ClientChannel) -> None:
        if not self._ready() or not ch.running:
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
        if ch.size is None or ch.size == ch.size_sent or not ch.running or not self._ready():
            return
        due = ch.resize_at + self.options.resize_interval
        if now < due:
            self._resize_due = due if self._resize_due is None else min(self._resize_due, due)
            return
        ch.size_sent = ch.size
        ch.resize_at = now
        self._send_ctl(Resize(ch.id, ch.size[0], ch.size[1]))

    def _maybe_grant(self, ch: ClientChannel, now: float) -> None:
        if not self._ready() or not ch.can(ChanEvent.READ) or self._pause.reasons:
            return
        grant = ch.credit.take_grant(now, self.rtt)
        ack = ch.credit.received if self._ack else None
        if not grant and (ack is None or ack - ch.acked < ACK_EVERY):
            return
        # A grant carries the ack; with no grant due (a window wider than twice what the
        # server retains unacknowledged), an ack alone every ACK_EVERY bytes keeps it reading.
        if ack is not None:
            self._save_resume(None, now)  # the stored rx never falls below an ack sent
            ch.acked = ack
        self._send_ctl(Flow(ch.id, grant, ack))
        if grant:
            self._policy(PolicyKind.CREDIT_GRANT, ch.id, value=grant)

    def _on_pause_change(self, reason: str, paused: bool, now: float) -> None:
        self._policy(PolicyKind.FLOW_PAUSE if paused else PolicyKind.FLOW_RESUME, None, reason=reason)
        if not self._pause.paused:
            for ch in self._channels.values():
                self._maybe_grant(ch, now)

    def _policy(
        self, kind: PolicyKind, cid: int | None, reason: str | None = None, value: int | None = None
    ) -> None:
        self._events.append(PolicyEvent(kind, cid, reason, value))

    def _diag(self, now: float, phase: DiagPhase, code: str, **extras: Any) -> None:
        """A :class:`Diagnostic`; ``extras`` keys are snake_case (the JS bridge converts them)."""
        extras.setdefault("buffered_amount", self.buffered_amount)
        extras.setdefault("rtt_ms", None if self.rtt is None else round(self.rtt * 1000, 3))
        self._events.append(Diagnostic(round(now * 1000, 3), phase, code, extras))

    def _open_transport(self, now: float) -> None:
        self._transport = True
        self._handshake_deadline = now + self.options.handshake_timeout
        self._events.append(OpenTransport(self.profile.subprotocols, self._reconnect.attempt))

    def _drop_transport(self, now: float, code: int, reason: str) -> None:
        """We give up on the current socket ourselves (timeouts)."""
        if not self._transport:
            return
        self._close_transport(code, reason)
        self._heartbeat.stop()
        self._verify = None
        self._handshake_deadline = None
        if self.closed:
            return
        if self._was_ready and self._resume.active:  # (reconnecting implies this)
            self._lost(now, reason)
        else:
            self._fail(now, CloseError(code, code, close_code_name(code), reason), close_socket=False)

    def _lost(self, now: float, reason: str) -> None:
        delay = self._reconnect.lost(now, self._rand)
        attempt = self._reconnect.attempt
        if delay is None:
            err = CloseError(CloseCode.ABNORMAL, None, ErrorCode.RETRIES_EXHAUSTED, f"gave up after {attempt} attempts")
            self._fail(now, err, False)
            return
        self._move(ConnEvent.LOST, reason)
        self._diag(now, DiagPhase.RECONNECT, "reconnect_scheduled", attempt=attempt, delay_ms=round(delay * 1000))

    def _fail(self, now: float, err: CloseError, close_socket: bool) -> None:
        if close_socket:
            self._close_transport(err.ws_code, err.message)
        if err.ws_code == CloseCode.RESUME_FAILED or not (self._was_ready and err.ws_code in RETRYABLE_CLOSE_CODES):
            self._clear_resume(now)
        self._finish(now, err, err.code)

    def _finish(self, now: float, err: CloseError | None, reason: str) -> None:
        self.error = err
        self._reconnect.cancel()
        self._heartbeat.stop()
        self._verify = None
        self._handshake_deadline = self._resize_due = None
        for ch in list(self._channels.values()):
            if self._can_chan(ch, ChanEvent.LOST):
                self._chan(ch, ChanEvent.LOST)
            self._forget(ch, reason, None if err is None else err.code, persist=False)
        self._move(ConnEvent.FAILED if err is not None else ConnEvent.CLOSE, reason)
        self._events.append(ConnectionClosed(err))

    def _lose(self, ch: ClientChannel) -> None:
        if ch.resume_key is None and ch.open_sent:
            self._events.append(ChannelOpenFailed(ch.id, ErrorCode.LOST, "connection lost before open_ok"))
            self._forget(ch, "lost", ErrorCode.LOST, emit=False)
        else:
            self._forget(ch, "not resumed", ErrorCode.LOST)

    def _forget(
        self, ch: ClientChannel, reason: str, error: ErrorCode | None, *, emit: bool = True, persist: bool = True
    ) -> None:
        if self._can_chan(ch, ChanEvent.LOST):  # callers normally moved it to closed already
            self._chan(ch, ChanEvent.LOST)
        if self._channels.pop(ch.id, None) is not None and emit:
            self._events.append(ChannelClosed(ch.id, reason, error))
        if persist and ch.resume_key is not None and self._resume.active:
            self._save_resume(None)

    # -------------------------------------------------------------- resume

    def _load_resume(self, now: float) -> None:
        state, stale = self._resume.load(now)
        if stale:
            self._diag(now, DiagPhase.RESUME, "resume_store_clear", why="expired")
        if state is None:
            return
        self._was_ready = True
        for sc in state.channels:
            self._channels[sc.id] = ClientChannel.restored(sc, self.options.window, self.options.max_window)
            self._next_id = max(self._next_id, sc.id + 1)
        self._diag(now, DiagPhase.RESUME, "resume_store_load", channels=len(state.channels))

    def _save_resume(self, now: float | None, clock: float | None = None) -> None:
        """Persist the open channels' positions; ``now`` also reports it, ``clock`` only renews."""
        if not self._resume.active:
            return
        t = now if now is not None else clock
        kept = [
            StoredChannel(c.id, c.resume_key, c.credit.received)
            for c in self._channels.values()
            if c.resume_key is not None and self._can_chan(c, ChanEvent.LOST)  # not closed
        ]
        self._resume.save(kept, t if t is not None and self._ready() else None)
        if now is not None:
            self._diag(now, DiagPhase.RESUME, "resume_store_persist", channels=len(kept))

    def _clear_resume(self, now: float) -> None:
        if self._resume.clear():
            self._diag(now, DiagPhase.RESUME, "resume_store_clear")


def _kind(m: Ctl | DataFrame) -> str:
    return "data" if isinstance(m, DataFrame) else m.t
