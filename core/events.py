"""Typed events the session machines hand to their runtime.

Three families, all frozen dataclasses:

* **observations** for the application: :class:`StateChanged`,
  :class:`Diagnostic`, :class:`PolicyEvent` and the channel events;
* **requests** for the server runtime's backends (:class:`AuthRequested`,
  :class:`BackendOpen`, :class:`BackendInput`...), which the runtime answers
  by calling back into the machine;
* **transport actions** (:class:`OpenTransport`, :class:`CloseTransport`)
  telling a runtime to open or close its WebSocket.

Runtimes translate them into their idiom (JS callbacks, Python async
iterators, asyncio tasks); none of them decides a protocol rule.

Fields are typed with the core's enums: states are
:class:`~.state.ConnState`, error codes :class:`~.errors.ErrorCode`, policy
kinds :class:`PolicyKind` and diagnostic phases :class:`DiagPhase` (all
``str`` enums, so ``ev.kind == "credit_grant"`` holds and JSON output is the
plain value).  Keys of :attr:`Diagnostic.extras` and of every ``to_dict`` are
snake_case in Python; the JavaScript facade's bridge
(``web_runtime/bridge.py:js_keys``) is the one place they become camelCase.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .errors import CloseError, ErrorCode, HostKey
from .messages import FileSpec, Stream, Target, Term, User, ViewerInfo
from .state import ConnState

__all__ = [
    "AuthRequested",
    "BackendClose",
    "BackendEof",
    "BackendInput",
    "BackendOpen",
    "BackendPause",
    "BackendResize",
    "BackendSignal",
    "ChannelClosed",
    "ChannelData",
    "ChannelExit",
    "ChannelOpenFailed",
    "ChannelOpened",
    "ChannelResized",
    "ClientEvent",
    "ShareAnswered",
    "ViewersChanged",
    "CloseTransport",
    "ConnectionClosed",
    "DiagPhase",
    "Diagnostic",
    "Event",
    "OpenTransport",
    "PolicyEvent",
    "PolicyKind",
    "ServerEvent",
    "StateChanged",
    "describe_state_change",
    "reached_ready",
]


class PolicyKind(enum.StrEnum):
    """Every :attr:`PolicyEvent.kind` the machines emit (the value is the public name)."""

    #: Client: credit granted to the server (``value`` bytes on ``channel``).
    CREDIT_GRANT = "credit_grant"
    #: Credit withheld (client) or backends paused (server) for ``reason``.
    FLOW_PAUSE = "flow_pause"
    #: The pause for ``reason`` ended.
    FLOW_RESUME = "flow_resume"
    #: Client: a resize replaced one not yet sent (one message per ``resize_interval``).
    RESIZE_COALESCED = "resize_coalesced"
    #: Server: a connection or resume attempt refused by a rate limit (``reason``).
    RATE_LIMITED = "rate_limited"
    #: Server: an ``open.command`` the config does not honour was refused.
    COMMAND_REFUSED = "command_refused"
    #: Server: an ``open.file`` the config does not honour was refused.
    FILES_REFUSED = "files_refused"
    #: Server: a viewer's input, resize, signal or eof refused (``reason``), or a ``share`` refused.
    VIEW_REFUSED = "view_refused"
    #: Server: a share link was made (``grant``, ``mode``) or revoked (``grant``, ``reason``).
    SHARE_CREATED = "share_created"
    SHARE_REVOKED = "share_revoked"
    #: Server: ``channel`` left the session (``reason``).
    CHANNEL_CLOSED = "channel_closed"


class DiagPhase(enum.StrEnum):
    """Every :attr:`Diagnostic.phase` the machines and runtimes emit."""

    HANDSHAKE = "handshake"
    AUTH = "auth"
    TRANSPORT = "transport"
    CONNECTION = "connection"
    HEARTBEAT = "heartbeat"
    RECONNECT = "reconnect"
    RESUME = "resume"
    FLOW = "flow"
    PROTOCOL = "protocol"


# ----------------------------------------------------------------- observations


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The connection moved from ``old`` to ``new`` (``protocol.md`` section 7)."""

    old: ConnState
    new: ConnState
    reason: str = ""


def reached_ready(ev: StateChanged) -> bool:
    """Whether the state change ``ev`` is the connection becoming ``ready``."""
    return ev.new == ConnState.READY


def describe_state_change(ev: StateChanged) -> str | None:
    """A one-line notice for a user watching the connection (CLI status line), or ``None``.

    ``"connection lost (...); reconnecting..."`` when a ready connection
    drops, ``"reconnected"`` when a resume brought it back, ``"connection
    closed: ..."`` when it ended other than by the application's own close.
    """
    if ev.new == ConnState.RECONNECTING and ev.old == ConnState.READY:
        return f"connection lost ({ev.reason}); reconnecting..."
    if ev.new == ConnState.READY and ev.old == ConnState.AUTHENTICATING and ev.reason == "resumed":
        return "reconnected"
    if ev.new == ConnState.CLOSED and ev.reason != "closed by application":
        return f"connection closed: {ev.reason}"
    return None


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A breadcrumb: ``timestamp`` (ms, injected clock), ``phase``, stable ``code``, extras.

    ``extras`` keys are snake_case (``buffered_amount``, ``rtt_ms``,
    ``ws_code``...); the client's carry ``buffered_amount`` and ``rtt_ms``.
    """

    timestamp: float
    phase: DiagPhase
    code: str
    extras: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped view (snake_case keys; the extras beside the fixed fields)."""
        return {"timestamp": self.timestamp, "phase": self.phase, "code": self.code, **self.extras}


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    """Flow and policy decisions (:class:`PolicyKind`); ``reason`` is a pause reason when relevant."""

    kind: PolicyKind
    channel: int | None = None
    reason: str | None = None
    value: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped view."""
        return {"kind": self.kind, "channel": self.channel, "reason": self.reason, "value": self.value}


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """Channel ``id`` is open (``resumed`` when it came back through a resume)."""

    id: int
    resumed: bool = False
    #: ``open_ok.size`` [ext]: the length of a ``get`` file channel's file.
    size: int | None = None


@dataclass(frozen=True, slots=True)
class ChannelOpenFailed:
    """``open_err`` (or the channel was lost before ``open_ok``).

    An ``open_err`` code this version does not know is :attr:`ErrorCode.UNKNOWN`
    and its text leads ``msg`` (``"SOME_CODE: ..."``), as in
    :class:`~.errors.ChannelError`.  ``host_key``: the SSH host key the target
    offered, with ``HOST_KEY_UNKNOWN`` / ``HOST_KEY_CHANGED`` (``open_err.hostKey``).
    """

    id: int
    code: ErrorCode
    msg: str
    host_key: HostKey | None = None


@dataclass(frozen=True, slots=True)
class ChannelData:
    """Bytes of ``stream`` arrived on channel ``id``; report consumption to earn credit."""

    id: int
    stream: Stream
    data: bytes


@dataclass(frozen=True, slots=True)
class ChannelExit:
    """The channel's process exited with ``code`` or died of signal ``sig``."""

    id: int
    code: int | None
    sig: str | None


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """Channel ``id`` is closed and forgotten; ``error`` is set when it ended abnormally."""

    id: int
    reason: str = ""
    error: ErrorCode | None = None


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is closed for good; ``error`` is ``None`` after a clean close.

    ``error.code`` is an :class:`~.errors.ErrorCode`, ``error.ws_code`` the close code seen.
    """

    error: CloseError | None


# ------------------------------------------------------------ transport actions


@dataclass(frozen=True, slots=True)
class OpenTransport:
    """Open a WebSocket offering ``subprotocols`` (attempt number ``attempt``)."""

    subprotocols: tuple[str, ...]
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class CloseTransport:
    """Close the current WebSocket with ``code`` and ``reason``."""

    code: int
    reason: str = ""


# --------------------------------------------------------------- server requests


@dataclass(frozen=True, slots=True)
class AuthRequested:
    """Verify ``scheme``/``token``; answer with ``ServerConnection.auth_result``."""

    scheme: str
    token: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class BackendOpen:
    """Start a terminal for channel ``id``; answer ``channel_opened``/``channel_open_failed``.

    ``term`` is ``None`` when ``open`` carried none: run without a PTY (pipes).
    """

    id: int
    target: Target
    user: User
    term: Term | None
    #: ``open.command`` [ext]: what to run instead of the login shell.
    command: str | None = None
    #: ``open.file`` [ext]: transfer this file instead of starting a terminal.
    file: FileSpec | None = None


@dataclass(frozen=True, slots=True)
class BackendInput:
    """Write ``data`` to the terminal of channel ``id``."""

    id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class BackendEof:
    """No more input for channel ``id``: close the process's stdin (PTY: send ^D)."""

    id: int


@dataclass(frozen=True, slots=True)
class BackendResize:
    """Change the terminal size of channel ``id``."""

    id: int
    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class BackendSignal:
    """Deliver ``sig`` to the foreground process group of channel ``id``."""

    id: int
    sig: str


@dataclass(frozen=True, slots=True)
class BackendClose:
    """Tear down the terminal of channel ``id`` (hang up, release the PTY/SSH channel)."""

    id: int


@dataclass(frozen=True, slots=True)
class BackendPause:
    """Stop (``paused``) or restart reading output from channel ``id``'s terminal."""

    id: int
    paused: bool


@dataclass(frozen=True, slots=True)
class ShareAnswered:
    """The server's answer to ``share`` request ``ref`` on channel ``id``: a link (``token``) or a refusal."""

    id: int
    ref: int
    grant: str | None
    token: str | None = field(default=None, repr=False)
    mode: str | None = None
    #: Milliseconds since the epoch when the link stops working.
    expires: int | None = None
    code: str | None = None
    msg: str | None = None


@dataclass(frozen=True, slots=True)
class ViewersChanged:
    """Who watches channel ``id`` now (``viewers``: ``ViewerInfo`` tuples)."""

    id: int
    viewers: tuple[ViewerInfo, ...]


@dataclass(frozen=True, slots=True)
class ChannelResized:
    """A viewer session: the shared terminal of channel ``id`` is now ``cols`` x ``rows``."""

    id: int
    cols: int
    rows: int


ClientEvent: TypeAlias = (
    StateChanged
    | ShareAnswered
    | ViewersChanged
    | ChannelResized
    | Diagnostic
    | PolicyEvent
    | ChannelOpened
    | ChannelOpenFailed
    | ChannelData
    | ChannelExit
    | ChannelClosed
    | ConnectionClosed
    | OpenTransport
    | CloseTransport
)
ServerEvent: TypeAlias = (
    Diagnostic
    | PolicyEvent
    | AuthRequested
    | BackendOpen
    | BackendInput
    | BackendEof
    | BackendResize
    | BackendSignal
    | BackendClose
    | BackendPause
    | CloseTransport
)
Event: TypeAlias = ClientEvent | ServerEvent
