"""The server's logical session: channels, credit, output logs, input acks.

A :class:`ServerSession` owns the channels (and, through the runtime, their
PTY/SSH backends).  It outlives its connection for the retention window and
is rebound by a valid resume.  It enforces credit: no payload byte leaves
beyond a channel's credit, and the backend is paused
(:class:`~.events.BackendPause`) while the output waiting to be sent covers
the credit.  Every channel move asks ``state.CHANNEL_TRANSITIONS``; every
removal of a channel goes through the table and is visible as
``PolicyEvent("channel_closed", channel=id, reason=...)``.

Memory bounds, per channel: output kept is at most the credit granted (at
most ``max_outstanding_credit``, 16 MiB, unspent) plus what the runtime reads
after the budget ran out (the reference PTY backend: at most two reads,
``2 * max_read``); input not yet written to the backend at most
``max_input_buffer`` (else 4007).  See :mod:`.server_config` for the products.

Input that arrives while a channel's backend starts (after ``open``, before
``open_ok``) is held, not dropped: data (inside the same ``max_input_buffer``
bound), ``resize`` (the latest only), ``signal`` and ``eof`` (at most
:data:`MAX_EARLY_CONTROLS`, else 4007) are handed to the backend, in the order
they arrived, right after ``open_ok``.  Input is acknowledged (``caps.ack``)
only once the backend reports it written (:meth:`ServerSession.input_written`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .errors import CloseCode, HostKey, ProtocolError
from .events import (
    BackendClose,
    BackendEof,
    BackendInput,
    BackendOpen,
    BackendPause,
    BackendResize,
    BackendSignal,
    PolicyEvent,
    PolicyKind,
    ServerEvent,
)
from .flow import ByteLog
from .messages import (
    MAX_VIEWERS_LISTED,
    Ctl,
    DataFrame,
    Eof,
    Exit,
    Flow,
    Open,
    OpenErr,
    OpenOk,
    Resize,
    ResumedChannel,
    ResumeRequest,
    Signal,
    Stream,
    ViewerInfo,
    Viewers,
)
from .resume import secrets_equal
from .server_config import ServerConfig
from .share import ShareGrant
from .state import CHANNEL_TRANSITIONS, ChanEvent, ChannelState, permits, transition

__all__ = ["MAX_EARLY_CONTROLS", "ServerChannel", "ServerSession", "SessionLink"]

#: ``signal`` / ``eof`` messages a channel holds while its backend starts
#: (``resize`` is coalesced to the latest and counts once); one more is 4007.
MAX_EARLY_CONTROLS = 64

#: What a channel holds for its backend until ``open_ok``, in arrival order.
EarlyInput = BackendInput | BackendResize | BackendSignal | BackendEof


class SessionLink(Protocol):
    """What a session needs of the connection it is attached to."""

    @property
    def ready(self) -> bool:
        """True between ``hello_ok`` and the close."""
        ...

    @property
    def write_paused(self) -> bool:
        """True while the socket's unsent bytes are above the high-water mark."""
        ...

    def send_ctl(self, m: Ctl) -> None:
        """Queue one control message."""
        ...

    def send_data(self, df: DataFrame) -> None:
        """Queue one data frame."""
        ...

    def wake(self) -> None:
        """Tell the runtime there is something to flush."""
        ...

    def superseded(self, now: float) -> None:
        """A resume of the session arrived on another connection: close (4000)."""
        ...

    def close(self, code: int, reason: str, now: float) -> None:
        """Close the connection with ``code`` (a revoked share link: 4016)."""
        ...


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
    #: ``open_ok.size`` of a ``get`` file channel (repeated on a resume).
    file_size: int | None = None
    #: Opened with ``open.file``: carries a file, not a terminal (never shared).
    file_channel: bool = False
    #: The last ``viewers`` list (an owner's channel) and ``resize`` (a viewer's), sent again
    #: after a resume: the ones sent while detached are lost with the connection.
    viewers: tuple[ViewerInfo, ...] | None = None
    view_size: tuple[int, int] | None = None
    #: Input and controls that arrived while the backend started (state
    #: ``OPENING``), delivered in order right after ``open_ok``.
    early: list[EarlyInput] = field(default_factory=list, repr=False)

    @property
    def pending(self) -> int:
        """Output bytes waiting for credit."""
        return self.log.end - self.sent

    def allows(self, event: ChanEvent) -> bool:
        """True when the channel table has a move for ``event`` now."""
        return permits(CHANNEL_TRANSITIONS, self.state, event)


class ServerSession:
    """A logical session: principal, channels, resume token; survives reconnects.

    The runtime calls ``channel_opened`` / ``channel_open_failed`` /
    ``backend_output`` / ``backend_exit`` / ``input_written`` and drains
    :meth:`events`; the connection it is attached to calls the rest.
    """

    def __init__(
        self,
        config: ServerConfig,
        sid: str,
        secret: str,
        principal: str,
        ack: bool,
        *,
        on_destroy: Callable[[ServerSession], None] | None = None,
        view: ShareGrant | None = None,
        on_channel_removed: Callable[[ServerSession, int], None] | None = None,
    ) -> None:
        self.config = config
        self.sid = sid
        self._secret = secret
        #: The secret the client resumed with last, accepted again until the
        #: client shows it received its replacement (a lost ``hello_ok``).
        self._prev_secret: str | None = None
        self.principal = principal
        self.ack = ack
        self.channels: dict[int, ServerChannel] = {}
        self.conn: SessionLink | None = None
        self.expires_at: float | None = None
        self.failures = 0
        self.destroyed = False
        self._on_destroy = on_destroy
        self._on_channel_removed = on_channel_removed
        #: The share grant this viewer session came in with (``None``: an owner session).
        self.view = view
        self._events: list[ServerEvent] = []

    # ------------------------------------------------------------ runtime API

    def events(self) -> list[ServerEvent]:
        """Backend requests since the last call (drains the queue)."""
        out, self._events = self._events, []
        return out

    def has_events(self) -> bool:
        """True when :meth:`events` would return something."""
        return bool(self._events)

    def read_budget(self, cid: int) -> int:
        """Bytes the runtime may read from channel ``cid``'s backend now.

        The runtime need not ask before every read: it follows the
        :class:`~.events.BackendPause` events, which flip exactly when this
        budget reaches 0 or leaves it.
        """
        ch = self.channels.get(cid)
        if ch is None:
            return 0
        return self._budget(ch)

    def channel_opened(self, cid: int, file_size: int | None = None) -> None:
        """The backend of channel ``cid`` is up: ``open_ok`` goes out, then the
        input held while it started is handed to it, in order.

        ``file_size``: the length of a ``get`` file channel's file (``open_ok.size``).

        Ignored if the channel is gone (the client closed it meanwhile);
        raises :class:`~.errors.IllegalTransition` if it is already open.
        """
        ch = self.channels.get(cid)
        if ch is None:
            return
        self._chan(ch, ChanEvent.OPEN_OK)
        ch.file_size = file_size
        self._send(OpenOk(cid, ch.resume_key, file_size))
        # Paused unless the client granted credit while the backend started.
        ch.paused = self._budget(ch) <= 0
        self._events.append(BackendPause(cid, ch.paused))
        early, ch.early = ch.early, []
        self._events.extend(early)
        self._wake()

    def channel_open_failed(self, cid: int, code: str, msg: str, host_key: HostKey | None = None) -> None:
        """The backend of channel ``cid`` could not start: ``open_err`` goes out.

        ``host_key``: the SSH host key the target offered, for a host-key refusal.
        """
        ch = self.channels.get(cid)
        if ch is None:
            return
        self._remove(ch, ChanEvent.OPEN_ERR, "open failed", backend=False)
        self._send(OpenErr(cid, code, msg[:1024], host_key))
        self._wake()

    def backend_output(self, cid: int, stream: Stream, data: bytes) -> None:
        """Output read from channel ``cid``'s backend; sent as credit allows.

        Ignored when the channel takes no output (gone, or not open yet).
        """
        ch = self.channels.get(cid)
        if ch is None or not data or not ch.allows(ChanEvent.OUTPUT):
            return
        ch.log.append(stream, data)
        self.flush(ch)

    def backend_exit(self, cid: int, code: int | None, sig: str | None) -> None:
        """Channel ``cid``'s process ended; ``exit`` follows the remaining output."""
        ch = self.channels.get(cid)
        if ch is None or not ch.allows(ChanEvent.EXIT):
            return
        ch.exit = (code, sig)
        self._chan(ch, ChanEvent.EXIT)
        self.flush(ch)

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
            self._wake()  # the ack is a frame to send now, whatever else is quiet
        elif ch.written > ch.acked and ch.ack_due is None:
            ch.ack_due = now + self.config.input_ack_delay
            self._wake()  # a deadline moved

    def destroy(self, reason: str = "session ended") -> None:
        """End the session: every channel's backend is closed."""
        if self.destroyed:
            return
        self.destroyed = True
        for ch in list(self.channels.values()):
            self._remove(ch, ChanEvent.LOST, reason)
        if self._on_destroy is not None:
            self._on_destroy(self)

    # ------------------------------------------------------------ tokens

    def set_secret(self, secret: str, previous: str | None) -> None:
        """Make ``secret`` the current one; ``previous`` stays valid until confirmed."""
        self._secret = secret
        self._prev_secret = previous

    def secret_matches(self, secret: str) -> bool:
        """True for the current secret or the unconfirmed previous one (constant time)."""
        current = secrets_equal(secret, self._secret)
        previous = self._prev_secret is not None and secrets_equal(secret, self._prev_secret)
        return current or previous

    def confirm_token(self) -> None:
        """The client got ``hello_ok`` (it sent something after it): the previous token is spent."""
        self._prev_secret = None

    # ------------------------------------------------------------ connection API

    def attach(self, conn: SessionLink) -> None:
        """Bind the session to ``conn`` (a new session, or a resume)."""
        self.conn = conn
        self.expires_at = None

    def detach(self, now: float) -> None:
        """The connection is gone: keep the session ``retention`` seconds (``empty_retention``
        if it has no channel: nothing to come back to but the id); backends pause."""
        self.conn = None
        keep = self.config.retention if self.channels else min(self.config.retention, self.config.empty_retention)
        self.expires_at = now + keep
        for ch in self.channels.values():
            ch.credit = 0
            ch.ack_due = None
            if not self.ack:
                ch.log.trim(ch.sent)
            if ch.allows(ChanEvent.READ) and not ch.paused:
                ch.paused = True
                self._events.append(BackendPause(ch.id, True))

    def restart_output(self) -> None:
        """After ``hello_ok``: per channel, send what credit allows and, with
        ``caps.ack``, acknowledge all input written so far.

        Acks sent on the old connection may be lost, and input written while
        detached (or whose ack timer the drop cancelled) is not acknowledged
        yet; the client may be blocked on a full input buffer.
        """
        for ch in list(self.channels.values()):
            if ch.view_size is not None:  # before any output: the screen that follows is drawn at it
                self._send(Resize(ch.id, *ch.view_size))
            if ch.viewers is not None:
                self._send(Viewers(ch.id, ch.viewers))
            self.flush(ch)
            if self.ack:
                ch.acked = 0
                self._ack_input(ch)

    def flush_all(self) -> None:
        """Send what every channel's credit allows (after ``hello_ok`` or a write-pause change)."""
        for ch in list(self.channels.values()):
            self.flush(ch)

    def due_acks(self, now: float) -> None:
        """Send the input acks whose delay ran out."""
        for ch in self.channels.values():
            if ch.ack_due is not None and now >= ch.ack_due:
                self._ack_input(ch)

    def next_ack(self) -> float | None:
        """When :meth:`due_acks` next has something to do."""
        due: float | None = None
        for ch in self.channels.values():
            t = ch.ack_due
            if t is not None and (due is None or t < due):
                due = t
        return due

    def check_resume(self, req: ResumeRequest) -> None:
        """Validate a resume of this session; raises ``ProtocolError`` 4011, changes nothing."""
        if self.ack and req.channels is None:
            raise ProtocolError(CloseCode.RESUME_FAILED, "resume.channels is required with caps.ack")
        for want in req.channels or ():
            known = self.channels.get(want.id)
            if known is None:
                continue
            if not secrets_equal(want.resume_key, known.resume_key):
                raise ProtocolError(CloseCode.RESUME_FAILED, f"wrong resumeKey for channel {want.id}")
            if self.ack and not known.log.start <= want.rx <= known.sent:
                raise ProtocolError(
                    CloseCode.RESUME_FAILED, f"channel {want.id}: rx {want.rx} outside the replay window"
                )

    def rebind(self, req: ResumeRequest) -> tuple[tuple[ResumedChannel, ...], list[ServerChannel]]:
        """Apply a resume :meth:`check_resume` accepted.

        Returns the ``resumed`` list for ``hello_ok`` and the channels whose
        ``open_ok`` must be repeated after it (without ``caps.ack`` the client
        may have missed it).  With ``caps.ack`` a channel the client did not
        list is closed (``LOST``).  Credit restarts at 0; output is
        retransmitted from the client's ``rx``.
        """
        wanted = {c.id: c for c in (req.channels or ())}
        out: list[ResumedChannel] = []
        repeat: list[ServerChannel] = []
        for cid, ch in list(self.channels.items()):
            want = wanted.get(cid)
            if self.ack and want is None:
                self._remove(ch, ChanEvent.LOST, "not resumed")
                continue
            ch.credit = 0
            if self.ack and want is not None:
                ch.log.trim(want.rx)
                ch.sent = want.rx
            ch.exit_sent = False
            ch.acked = min(ch.acked, ch.written)
            out.append(ResumedChannel(cid, ch.rx))
            if want is None and not ch.allows(ChanEvent.OPEN_OK):  # open_ok was sent
                repeat.append(ch)
        return tuple(out), repeat

    # ------------------------------------------------------------ peer input

    def open(self, m: Open, new_key: Callable[[], str]) -> bool:
        """The client's ``open``: a new channel (4013 duplicate id, 4006 too many).

        ``new_key`` makes the channel's ``resumeKey``.  An ``open.command``
        or ``open.file`` the config does not honour is refused with ``open_err`` (False).
        """
        if m.id in self.channels:
            raise ProtocolError(CloseCode.DUPLICATE_CHANNEL_ID, f"channel id {m.id} in use")
        if len(self.channels) >= self.config.max_channels:
            raise ProtocolError(CloseCode.CHANNEL_LIMIT, f"more than {self.config.max_channels} channels")
        key = new_key()
        if m.command is not None and not self.config.allow_command:
            self._events.append(PolicyEvent(PolicyKind.COMMAND_REFUSED, channel=m.id))
            self._send(OpenErr(m.id, "POLICY_DENIED", "this server does not run client commands"))
            return False
        if self.view is not None and (m.command is not None or m.file is not None or self.channels):
            self._events.append(PolicyEvent(PolicyKind.VIEW_REFUSED, channel=m.id, reason="open"))
            self._send(OpenErr(m.id, "POLICY_DENIED", "a share link opens its one shared terminal, nothing else"))
            return False
        if m.file is not None and not self.config.allow_files:
            self._events.append(PolicyEvent(PolicyKind.FILES_REFUSED, channel=m.id))
            self._send(OpenErr(m.id, "POLICY_DENIED", "this server does not transfer files"))
            return False
        self.channels[m.id] = ServerChannel(m.id, key, file_channel=m.file is not None)
        self._events.append(BackendOpen(m.id, m.target, m.user, m.term, m.command, m.file))
        return True

    def receive_data(self, df: DataFrame) -> bool:
        """Client input for a channel; False when ignored (no such channel, or exited).

        Input for a channel whose backend is still starting is held and
        delivered after ``open_ok`` (:meth:`channel_opened`); held or not, it
        counts against ``max_input_buffer`` (4007) and is acknowledged only
        once written.  Input after ``exit`` has no process to read it: it is
        discarded and counted as consumed (a resend could not be read either).
        """
        ch = self.channels.get(df.id)
        if ch is None:
            return False
        ch.rx += len(df.payload)
        opening = ch.allows(ChanEvent.OPEN_OK)  # the backend is starting
        if not opening and not ch.allows(ChanEvent.INPUT):
            ch.written += len(df.payload)  # exited: no process will read it
            return False
        if ch.rx - ch.written > self.config.max_input_buffer:
            raise ProtocolError(CloseCode.FLOW_VIOLATION, f"channel {df.id}: input floods the backend")
        if not df.payload:
            return True
        if self.view is not None and self.view.mode != "write":  # read-only: refused, not a disconnect
            self._events.append(PolicyEvent(PolicyKind.VIEW_REFUSED, channel=df.id, reason="input"))
            self.input_written(df.id, len(df.payload), 0.0)  # consumed (acked): a resend would be refused too
            return True
        ev = BackendInput(df.id, df.payload)
        if opening:
            ch.early.append(ev)
        else:
            self._events.append(ev)
        return True

    def receive_flow(self, m: Flow) -> bool:
        """Credit (and, with ``caps.ack``, an output ack); False when the channel is unknown."""
        ch = self.channels.get(m.id)
        if ch is None:
            return False
        ch.credit += m.credit
        if ch.credit > self.config.max_outstanding_credit:
            raise ProtocolError(CloseCode.FLOW_VIOLATION, f"channel {m.id}: credit above 16 MiB")
        if m.ack is not None and self.ack:
            if m.ack > ch.sent:
                raise ProtocolError(CloseCode.FLOW_VIOLATION, f"channel {m.id}: ack beyond bytes sent")
            ch.log.trim(m.ack)
        self.flush(ch)
        return True

    def receive_control(self, m: Resize | Signal | Eof) -> bool:
        """``resize``, ``signal`` or ``eof`` for a running process; False when ignored.

        While the backend starts they are held with the channel's early input
        (a ``resize`` replaces a held one; more than :data:`MAX_EARLY_CONTROLS`
        others: 4007) and delivered in order after ``open_ok``.
        """
        ch = self.channels.get(m.id)
        if ch is None:
            return False
        opening = ch.allows(ChanEvent.OPEN_OK)  # the backend is starting
        if not opening and not ch.allows(ChanEvent.INPUT):
            return False
        if self.view is not None and (isinstance(m, Resize) or self.view.mode != "write"):
            # The owner's size rules; a read-only viewer sends no signal or eof either.
            self._events.append(PolicyEvent(PolicyKind.VIEW_REFUSED, channel=m.id, reason=m.t))
            return True
        ev: EarlyInput
        match m:
            case Resize():
                ev = BackendResize(m.id, m.cols, m.rows)
            case Signal():
                ev = BackendSignal(m.id, m.sig)
            case Eof():
                ev = BackendEof(m.id)
        if not opening:
            self._events.append(ev)
            return True
        if isinstance(ev, BackendResize):
            ch.early = [e for e in ch.early if not isinstance(e, BackendResize)]
        elif sum(isinstance(e, (BackendSignal, BackendEof)) for e in ch.early) >= MAX_EARLY_CONTROLS:
            raise ProtocolError(
                CloseCode.FLOW_VIOLATION, f"channel {m.id}: more than {MAX_EARLY_CONTROLS} signals before open_ok"
            )
        ch.early.append(ev)
        return True

    def receive_close(self, cid: int) -> bool:
        """The client closed channel ``cid``: the backend closes; False when unknown."""
        ch = self.channels.get(cid)
        if ch is None:
            return False
        self._remove(ch, ChanEvent.PEER_CLOSE, "closed by client")
        return True

    # ------------------------------------------------------------ internals

    def _send(self, m: Ctl) -> None:
        if self.conn is not None:
            self.conn.send_ctl(m)

    def _wake(self) -> None:
        if self.conn is not None:
            self.conn.wake()

    def _chan(self, ch: ServerChannel, event: ChanEvent) -> None:
        ch.state = transition(CHANNEL_TRANSITIONS, ch.state, event)

    def _remove(self, ch: ServerChannel, event: ChanEvent, reason: str, *, backend: bool = True) -> None:
        """The one way a channel leaves: through the table, with an event (and its share links go)."""
        self._chan(ch, event)
        del self.channels[ch.id]
        if backend:
            self._events.append(BackendClose(ch.id))
        self._events.append(PolicyEvent(PolicyKind.CHANNEL_CLOSED, channel=ch.id, reason=reason))
        if self._on_channel_removed is not None:
            self._on_channel_removed(self, ch.id)

    # ------------------------------------------------------------ sharing

    def viewers_changed(self, cid: int, viewers: tuple[ViewerInfo, ...]) -> None:
        """Tell the owner who watches channel ``cid`` now (``viewers``; sent again after a resume)."""
        ch = self.channels.get(cid)
        if ch is None:
            return
        ch.viewers = viewers[:MAX_VIEWERS_LISTED]
        if self.conn is not None and self.conn.ready:
            self._send(Viewers(cid, ch.viewers))
            self._wake()

    def view_resized(self, cid: int, cols: int, rows: int) -> None:
        """A viewer session: the shared terminal is now ``cols`` x ``rows`` (``resize`` s->c;
        sent again after a resume)."""
        ch = self.channels.get(cid)
        if self.view is None or ch is None:
            return
        ch.view_size = (cols, rows)
        if self.conn is not None and self.conn.ready:
            self._send(Resize(cid, cols, rows))
            self._wake()

    def _budget(self, ch: ServerChannel) -> int:
        conn = self.conn
        if conn is None or conn.write_paused or not ch.allows(ChanEvent.READ):
            return 0
        retained_room = self.config.max_retained_output - ch.log.size
        max_read = self.config.file_max_read if ch.file_channel else self.config.max_read
        return max(0, min(max_read, ch.credit - ch.pending, retained_room))

    def flush(self, ch: ServerChannel) -> None:
        """Send what ``ch``'s credit allows, then ``exit`` when all output is out; pause or
        resume its backend when its read budget reaches 0 or leaves it."""
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
        if ch.allows(ChanEvent.READ):
            want_pause = self._budget(ch) <= 0
            if want_pause != ch.paused:
                ch.paused = want_pause
                self._events.append(BackendPause(ch.id, want_pause))
                self._wake()

    def _ack_input(self, ch: ServerChannel) -> None:
        ch.ack_due = None
        if ch.written > ch.acked and self.conn is not None and self.conn.ready:
            ch.acked = ch.written
            self.conn.send_ctl(Flow(ch.id, 0, ch.written))
