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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .errors import CloseError
from .messages import Stream, Target, Term, User

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
    "ClientEvent",
    "CloseTransport",
    "ConnectionClosed",
    "Diagnostic",
    "Event",
    "OpenTransport",
    "PolicyEvent",
    "ServerEvent",
    "StateChanged",
]


# ----------------------------------------------------------------- observations


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The connection moved from ``old`` to ``new`` (``protocol.md`` section 7)."""

    old: str
    new: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A breadcrumb: ``timestamp`` (ms, injected clock), ``phase``, stable ``code``, extras."""

    timestamp: float
    phase: str
    code: str
    extras: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped view."""
        return {"timestamp": self.timestamp, "phase": self.phase, "code": self.code, **self.extras}


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    """Flow and policy decisions: ``flow_pause``, ``flow_resume``, ``credit_grant``,
    ``resize_coalesced``, ``rate_limited``...; ``reason`` is a pause reason when relevant."""

    kind: str
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


@dataclass(frozen=True, slots=True)
class ChannelOpenFailed:
    """``open_err`` (or the channel was lost before ``open_ok``)."""

    id: int
    code: str
    msg: str


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
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is closed for good; ``error`` is ``None`` after a clean close."""

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


ClientEvent: TypeAlias = (
    StateChanged
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
